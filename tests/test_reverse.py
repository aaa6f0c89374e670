import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from minidiff import analytic, data, reverse, samplers, schedules
from minidiff.forward import q_sample
from minidiff.forward import eps_from_x0


def gaussian_product_posterior(s, x0, xt, t):
    """q(x_{t-1} | x_t, x0) by Bayes as a product of two Gaussians in x_{t-1}, written from scratch:
    q(x_t | x_{t-1}) = N(sqrt(a_t) x_{t-1}, b_t)  and  q(x_{t-1} | x0) = N(sqrt(abar_{t-1}) x0, 1 - abar_{t-1})."""
    a = s.alphas[t].item()
    b = 1 - a
    abar_prev = s.alpha_bars_prev[t].item()
    prec1, mean1 = a / b, xt / math.sqrt(a)              # likelihood as a density in x_{t-1}
    prec2, mean2 = 1 / (1 - abar_prev), math.sqrt(abar_prev) * x0
    var = 1 / (prec1 + prec2)
    return var * (prec1 * mean1 + prec2 * mean2), var


@pytest.mark.parametrize("t", [1, 7, 50, 99])
def test_posterior_is_a_product_of_gaussians(t):
    s = schedules.cosine(T=100)
    x0 = torch.randn(3, 4, dtype=torch.float64)
    xt = torch.randn(3, 4, dtype=torch.float64)
    mean, var = reverse.q_posterior(s, x0, xt, torch.full((3,), t))
    want_mean, want_var = gaussian_product_posterior(s, x0, xt, t)
    torch.testing.assert_close(mean, want_mean)
    assert var[0, 0].item() == pytest.approx(want_var, rel=1e-10)


def test_posterior_mean_is_ddpm_eq_11_for_eps():
    """With x0 written through eps, mu~ = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t)."""
    s = schedules.linear(T=50)
    xt, eps = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([1, 10, 30, 49])
    out = reverse.p_mean_variance(s, eps, xt, t, prediction="eps")
    b = s.betas[t][:, None]
    want = (xt - b / (1 - s.alpha_bars[t][:, None]).sqrt() * eps) / s.alphas[t][:, None].sqrt()
    torch.testing.assert_close(out["mean"], want)
    large = reverse.p_mean_variance(s, eps, xt, t, variance="large")
    torch.testing.assert_close(large["var"][:, 0], s.betas[t])


def test_ddim_eta_one_has_the_ddpm_posterior_variance():
    s = schedules.linear(T=1000)
    for steps in (1000, 50, 10):
        sub = s.respace(reverse.timesteps(1000, steps))
        for i in range(1, sub.T):
            assert samplers.ddim_sigma(sub, i, 1.0) ** 2 == pytest.approx(sub.posterior_variance[i].item(), rel=1e-9)
            assert samplers.ddim_sigma(sub, i, 0.0) == 0


def test_ddim_eta_one_step_mean_is_the_ddpm_posterior_mean():
    s = schedules.linear(T=1000).respace(reverse.timesteps(1000, 20))
    x0 = torch.randn(4, 2, dtype=torch.float64)
    eps = torch.randn(4, 2, dtype=torch.float64)
    i = 12
    t = torch.full((4,), i)
    xt = q_sample(s, x0, t, eps)
    sigma = samplers.ddim_sigma(s, i, 1.0)
    abar_prev = s.alpha_bars_prev[i].item()
    ddim_mean = math.sqrt(abar_prev) * x0 + math.sqrt(1 - abar_prev - sigma ** 2) * eps
    ddpm_mean, _ = reverse.q_posterior(s, x0, xt, t)
    torch.testing.assert_close(ddim_mean, ddpm_mean)


def test_timesteps_spacings():
    T = 1000
    for n in (1, 2, 7, 10, 50, 333, 999, 1000):
        for sp in reverse.SPACINGS:
            ts = reverse.timesteps(T, n, sp)
            assert ts.dtype == torch.long and ts.shape == (n,)
            assert ts.min() >= 0 and ts.max() <= T - 1
            assert (ts[1:] < ts[:-1]).all(), (sp, n)
        assert reverse.timesteps(T, n, "trailing")[0] == T - 1
        if n > 1:
            assert reverse.timesteps(T, n, "linspace")[0] == T - 1
            assert reverse.timesteps(T, n, "linspace")[-1] == 0
    assert reverse.timesteps(1000, 10, "leading").tolist() == list(range(900, -1, -100))
    assert reverse.timesteps(1000, 10, "trailing").tolist() == list(range(999, 0, -100))
    assert reverse.timesteps(10, 3, "trailing").tolist() == [9, 6, 2]


@pytest.mark.parametrize("T", [7, 10, 100, 1000])
def test_trailing_is_its_exact_definition(T):
    """trailing: t_k = round(T (n - k) / n) - 1, halves rounded up, in exact rational arithmetic."""
    for n in range(1, T + 1):
        want = [math.floor(Fraction(T * (n - k), n) + Fraction(1, 2)) - 1 for k in range(n)]
        got = reverse.timesteps(T, n, "trailing").tolist()
        assert got == want, n
        assert len(set(got)) == n and got[0] == T - 1


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_timesteps_match_diffusers_where_the_definitions_agree(spacing):
    """Every step count that divides T (the usual 10, 20, 50, 100, ...) for trailing, all of
    them for leading and linspace. The trailing counts where diffusers' float arange departs
    from the exact definition are listed in ``reverse.timesteps``' docstring."""
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
    counts = [n for n in range(1, 1001) if 1000 % n == 0] if spacing == "trailing" else [1, 3, 10, 50, 333, 999]
    for n in counts:
        sched.set_timesteps(n)
        assert reverse.timesteps(1000, n, spacing).tolist() == sched.timesteps.tolist(), n


def mixture_model(T=100):
    s = schedules.linear(T=T, beta_end=0.2) if T < 500 else schedules.linear(T=T)
    return s, analytic.MixtureDenoiser(s, data.default_mixture())


@pytest.mark.parametrize("steps", [None, 20])
def test_ddpm_sampling_matches_diffusers(steps):
    diffusers = pytest.importorskip("diffusers")
    s, model = mixture_model(T=100)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(3))
    ours = samplers.sample(model, s, (64, 2), "ddpm", steps=steps, x_T=x_T, spacing="leading",
                          generator=torch.Generator().manual_seed(5), progress=False)
    ref = diffusers.DDPMScheduler(num_train_timesteps=100, trained_betas=s.betas.numpy(), clip_sample=False,
                                  variance_type="fixed_small", timestep_spacing="leading")
    ref.set_timesteps(steps or 100)
    x, gen = x_T.clone(), torch.Generator().manual_seed(5)
    for t in ref.timesteps:
        x = ref.step(model(x, t.expand(64)), t, x, generator=gen).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-3, atol=1e-3)  # diffusers keeps float32 alphas


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_sampling_matches_diffusers(eta):
    diffusers = pytest.importorskip("diffusers")
    s, model = mixture_model(T=1000)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(3))
    ours = samplers.sample(model, s, (64, 2), "ddim", steps=50, eta=eta, x_T=x_T, spacing="trailing",
                          generator=torch.Generator().manual_seed(5), progress=False)
    ref = diffusers.DDIMScheduler(num_train_timesteps=1000, trained_betas=s.betas.numpy(), clip_sample=False,
                                  timestep_spacing="trailing", set_alpha_to_one=True)
    ref.set_timesteps(50)
    x, gen = x_T.clone(), torch.Generator().manual_seed(5)
    for t in ref.timesteps:
        x = ref.step(model(x, t.expand(64)), t, x, eta=eta, generator=gen).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-3, atol=1e-3)  # diffusers keeps float32 alphas


def test_analytic_denoiser_recovers_the_mixture():
    mix = data.default_mixture()
    s = schedules.linear(T=1000)
    model = analytic.MixtureDenoiser(s, mix)
    g = torch.Generator().manual_seed(0)
    n = 4000
    for sampler, steps in (("ddpm", None), ("ddim", 50)):
        x = samplers.sample(model, s, (n, 2), sampler, steps=steps, generator=g, progress=False)
        d = torch.cdist(x.double(), mix.means)
        k = d.argmin(1)
        weights = torch.bincount(k, minlength=3).double() / n
        assert torch.allclose(weights, mix.weights, atol=0.03), (sampler, weights)
        for j in range(3):
            pts = x[k == j].double()
            assert torch.allclose(pts.mean(0), mix.means[j], atol=0.05), (sampler, j)
            assert pts.std(0).mean().item() == pytest.approx(0.25, abs=0.03)


def test_analytic_eps_is_tweedie_of_the_true_score():
    """E[eps | x_t] is -sqrt(1 - abar) * grad log p_t: check against autograd of log p_t."""
    s = schedules.linear(T=100, beta_end=0.2)
    mix = data.default_mixture()
    model = analytic.MixtureDenoiser(s, mix)
    t = torch.tensor([0, 10, 50, 99])
    x = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    abar = s.alpha_bars[t][:, None]
    logp = []
    for k in range(4):   # p_t is itself a mixture; build it and differentiate its log density
        a = abar[k, 0]
        noised = data.GaussianMixture(mix.means * a.sqrt(), (a * mix.stds ** 2 + 1 - a).sqrt(), mix.weights)
        logp.append(noised.log_prob(x[k:k + 1]))
    score = torch.autograd.grad(torch.cat(logp).sum(), x)[0]
    torch.testing.assert_close(model(x.detach(), t), -(1 - abar).sqrt() * score)


def test_trajectory_and_reproducibility():
    s, model = mixture_model(T=100)
    x, path = samplers.sample(model, s, (8, 2), "ddpm", steps=10, trajectory=True,
                             generator=torch.Generator().manual_seed(0), progress=False)
    assert path.shape == (11, 8, 2)
    assert torch.equal(path[-1], x)
    again = samplers.sample(model, s, (8, 2), "ddpm", steps=10, generator=torch.Generator().manual_seed(0),
                           progress=False)
    assert torch.equal(again, x)


def test_zero_terminal_snr_sampling_stays_finite():
    """With alpha_bar[-1] = 0 the first step starts from pure noise; v-prediction keeps it finite."""
    s = schedules.linear(T=100, beta_end=0.2).rescale_zero_terminal_snr()
    mix = data.default_mixture()
    eps_model = analytic.MixtureDenoiser(s, mix)

    def v_model(x, t):       # v = sqrt(abar) eps - sqrt(1 - abar) x0, from the analytic eps
        ab = s.alpha_bars[t][:, None].float()
        eps = eps_model(x, t)
        score = -eps / (1 - ab).sqrt()
        x0 = torch.where(ab > 0, (x + (1 - ab) * score) / ab.clamp_min(1e-30).sqrt(),
                         mix.means.float().T @ mix.weights.float() * torch.ones_like(x))
        return ab.sqrt() * eps - (1 - ab).sqrt() * x0

    for sampler in ("ddpm", "ddim"):
        x = samplers.sample(v_model, s, (500, 2), sampler, prediction="v",
                           generator=torch.Generator().manual_seed(0), progress=False)
        assert torch.isfinite(x).all()
        assert x.std().item() < 2
    with pytest.raises(ValueError, match="zero terminal"):
        samplers.sample(eps_model, s, (5, 2), "ddpm", progress=False)


def test_clip_x0_keeps_predictions_in_range():
    s = schedules.linear(T=10)
    wild = lambda x, t: torch.full_like(x, -50.0)  # noqa: E731  (an eps that implies a huge x0)
    x = samplers.sample(wild, s, (4, 3), "ddim", clip_x0=1.0, generator=torch.Generator().manual_seed(0),
                       progress=False)
    assert x.abs().max() <= 1.0 + 1e-6


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(sampler="euler"), ValueError, "unknown sampler 'euler'"),
    (dict(steps=11), ValueError, r"steps must be in \[1, 10\]"),
    (dict(steps=0), ValueError, r"steps must be in \[1, 10\]"),
    (dict(spacing="random"), ValueError, "unknown spacing 'random'"),
    (dict(x_T=torch.zeros(3, 2)), ValueError, r"x_T must have shape \(4, 2\)"),
    (dict(eta=0.5), ValueError, "eta applies only to sampler='ddim'"),
    (dict(sampler="ddim", eta=-1.0), ValueError, "eta must be in"),
    (dict(prediction="score"), ValueError, "unknown prediction"),
    (dict(shape=(4, 0)), ValueError, "shape must be"),
])
def test_bad_sample_arguments(kwargs, err, match):
    s = schedules.linear(T=10)
    model = lambda x, t: torch.zeros_like(x)  # noqa: E731
    args = dict(shape=(4, 2))
    args.update(kwargs)
    shape = args.pop("shape")
    with pytest.raises(err, match=match):
        samplers.sample(model, s, shape, progress=False, **args)


def test_bad_model_output_and_timesteps_args():
    s = schedules.linear(T=10)
    with pytest.raises(ValueError, match="model output must have shape"):
        samplers.sample(lambda x, t: x[:, :1], s, (2, 2), progress=False)
    with pytest.raises(ValueError, match=r"n must be in \[1, 10\]"):
        reverse.timesteps(10, 11)
    with pytest.raises(TypeError, match="T must be an int"):
        reverse.timesteps(10.0, 5)
    with pytest.raises(TypeError, match="model must be callable"):
        samplers.sample(None, s, (2, 2))


def test_predict_eps_used_after_clipping_is_consistent():
    s = schedules.linear(T=10)
    x0 = torch.rand(2, 3) * 2 - 1
    xt = torch.randn(2, 3)
    t = torch.tensor([3, 9])
    eps = eps_from_x0(s, xt, t, x0)
    out = reverse.p_mean_variance(s, eps, xt, t, clip_x0=1.0)
    torch.testing.assert_close(out["x0_hat"], x0, rtol=1e-5, atol=1e-5)
    assert np.isfinite(out["var"].numpy()).all()


@pytest.mark.parametrize("sampler, algorithm", [("dpm++2m", "dpmsolver++"), ("sde-dpm++2m", "sde-dpmsolver++")])
@pytest.mark.parametrize("steps", [10, 20, 50])
def test_dpm_solver_pp_2m_matches_diffusers(sampler, algorithm, steps):
    diffusers = pytest.importorskip("diffusers")
    s, model = mixture_model(T=1000)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(3))
    ours = samplers.sample(model, s, (64, 2), sampler, steps=steps, x_T=x_T, spacing="trailing",
                          generator=torch.Generator().manual_seed(5), progress=False)
    ref = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, trained_betas=s.betas.numpy(),
                                                algorithm_type=algorithm, solver_order=2,
                                                timestep_spacing="trailing")
    ref.set_timesteps(steps)
    x, gen = x_T.clone(), torch.Generator().manual_seed(5)
    for t in ref.timesteps:
        x = ref.step(model(x, t.expand(64)), t, x, generator=gen).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-3, atol=1e-3)


def test_sde_dpm_solver_adds_noise():
    s, model = mixture_model(T=1000)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(3))
    ode, sde = (samplers.sample(model, s, (64, 2), name, steps=20, x_T=x_T, progress=False,
                               generator=torch.Generator().manual_seed(5)) for name in ("dpm++2m", "sde-dpm++2m"))
    assert (sde - ode).abs().max() > 0.1


@pytest.mark.parametrize("stochastic, eta", [(False, 0.0), (True, 1.0)])
def test_dpm_solver_first_order_step_is_ddim(stochastic, eta):
    """With no history DPM-Solver++ is exactly DDIM(eta=0) (Lu et al. 2022, §3), and its SDE form
    is DDIM(eta=1): a draw from DDPM's posterior q(x_{t-1} | x_t, x0_hat) with the same noise."""
    s = schedules.linear(T=1000).respace(reverse.timesteps(1000, 20))
    x = torch.randn(4, 2, dtype=torch.float64)
    x0_hat = torch.randn(4, 2, dtype=torch.float64)
    i = 15
    eps_hat = eps_from_x0(s, x, torch.full((4,), i), x0_hat)
    dpm, _ = samplers.dpm_solver_pp_2m_step(s, i, x, x0_hat, stochastic=stochastic,
                                            generator=torch.Generator().manual_seed(1))
    ddim = samplers.ddim_step(s, i, x, x0_hat, eps_hat, eta=eta, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(dpm, ddim)


def test_dpm_solver_recovers_the_mixture_in_20_steps():
    mix = data.default_mixture()
    s = schedules.linear(T=1000)
    x = samplers.sample(analytic.MixtureDenoiser(s, mix), s, (4000, 2), "dpm++2m", steps=20,
                       generator=torch.Generator().manual_seed(0), progress=False)
    k = torch.cdist(x.double(), mix.means).argmin(1)
    assert torch.allclose(torch.bincount(k, minlength=3).double() / 4000, mix.weights, atol=0.03)


def test_ddpm_step_large_variance_uses_beta():
    s = schedules.linear(T=100)
    x, x0_hat = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    i = 40
    mean, _ = reverse.q_posterior(s, x0_hat, x, torch.full((4,), i))
    z = torch.randn(4, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for variance, var in (("small", s.posterior_variance[i]), ("large", s.betas[i])):
        got = reverse.ddpm_step(s, i, x, x0_hat, generator=torch.Generator().manual_seed(7), variance=variance)
        torch.testing.assert_close(got, mean + var.sqrt() * z)
    assert s.betas[i] > 1.01 * s.posterior_variance[i]       # the two really differ at this step


@pytest.mark.parametrize("variance", ["small", "large"])
def test_ddpm_step_returns_the_mean_at_the_last_step(variance):
    """DDPM Algorithm 2 adds no noise when t = 1 (here index 0): x_0 = mu, and no draw is made."""
    s = schedules.linear(T=100)
    x, x0_hat = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    before = g.get_state()
    got = reverse.ddpm_step(s, 0, x, x0_hat, generator=g, variance=variance)
    mean, _ = reverse.q_posterior(s, x0_hat, x, torch.zeros(4, dtype=torch.long))
    assert torch.equal(got, mean)
    torch.testing.assert_close(got, x0_hat)                  # at index 0 the posterior mean is x0_hat itself
    assert torch.equal(g.get_state(), before)


def test_ddim_rejects_eta_above_one_and_bools():
    s = schedules.linear(T=100)
    x = torch.randn(2, 2)
    for bad in (1.5, -0.1):
        with pytest.raises(ValueError, match=r"eta must be in \[0.0, 1.0\]"):
            samplers.ddim_step(s, 10, x, x, x, eta=bad)
        with pytest.raises(ValueError, match=r"eta must be in \[0.0, 1.0\]"):
            samplers.sample(lambda x, t: x, s, (2, 2), "ddim", eta=bad, progress=False)
    with pytest.raises(TypeError, match="eta must be a number"):
        samplers.ddim_sigma(s, 10, True)


@pytest.mark.parametrize("clip", [False, True])
def test_clip_x0_takes_no_bool(clip):
    """clip_x0=False once meant "clamp every x0_hat to [0, 0]"; a bool is now an error."""
    s = schedules.linear(T=10)
    with pytest.raises(TypeError, match="clip_x0 must be a number"):
        samplers.sample(lambda x, t: x, s, (2, 2), "ddim", clip_x0=clip, progress=False)
    with pytest.raises(TypeError, match="clip_x0 must be a number"):
        reverse.p_mean_variance(s, torch.zeros(2, 2), torch.zeros(2, 2), 3, clip_x0=clip)


class Counting:
    """The analytic denoiser, counting its calls and recording the timesteps it is asked about."""

    def __init__(self, model):
        self.model, self.ts = model, []

    def __call__(self, x, t):
        self.ts.append(int(t[0]))
        return self.model(x, t)


@pytest.mark.parametrize("sampler", ["ddim", "dpm++2m", "ddpm"])
def test_the_loop_calls_the_model_at_the_chosen_timesteps(sampler):
    s, model = mixture_model(T=1000)
    counting = Counting(model)
    samplers.sample(counting, s, (8, 2), sampler, steps=20, generator=torch.Generator().manual_seed(0),
                    progress=False)
    assert counting.ts == reverse.timesteps(1000, 20).tolist()


def test_start_continues_a_trajectory_exactly():
    """Starting at step k from the x a full run had there ends where the full run ends (DDIM is
    deterministic), with steps - k model calls: what SDEdit needs."""
    s, model = mixture_model(T=1000)
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(1))
    full, path = samplers.sample(model, s, (16, 2), "ddim", steps=20, x_T=x_T, trajectory=True, progress=False)
    counting = Counting(model)
    part = samplers.sample(counting, s, (16, 2), "ddim", steps=20, x_T=path[7], start=7, progress=False)
    torch.testing.assert_close(part, full)
    assert counting.ts == reverse.timesteps(1000, 20)[7:].tolist()
    with pytest.raises(ValueError, match="start=3 needs x_T"):
        samplers.sample(model, s, (16, 2), "ddim", steps=20, start=3, progress=False)
    with pytest.raises(ValueError, match=r"start must be in \[0, 19\]"):
        samplers.sample(model, s, (16, 2), "ddim", steps=20, x_T=x_T, start=20, progress=False)


def test_hook_sees_every_new_x_and_may_replace_it():
    s, model = mixture_model(T=1000)
    seen = []

    def hook(x, t, x0_hat):
        seen.append(t)
        assert x0_hat.shape == x.shape
        return torch.full_like(x, 0.5) if t == -1 else None      # replace only the final sample

    out = samplers.sample(model, s, (8, 2), "dpm++2m", steps=10, hook=hook, progress=False,
                          generator=torch.Generator().manual_seed(0))
    assert seen == reverse.timesteps(1000, 10).tolist()[1:] + [-1]
    assert torch.equal(out, torch.full((8, 2), 0.5))


def test_dpm_solver_keeps_no_state_between_trajectories():
    """Its memory lives in the loop: two calls with the same start give the same samples, and a
    step with no memory is first order whatever came before."""
    s, model = mixture_model(T=1000)
    x_T = torch.randn(32, 2, generator=torch.Generator().manual_seed(2))
    a = samplers.sample(model, s, (32, 2), "dpm++2m", steps=10, x_T=x_T, progress=False)
    b = samplers.sample(model, s, (32, 2), "dpm++2m", steps=10, x_T=x_T, progress=False)
    assert torch.equal(a, b)
