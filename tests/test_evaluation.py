"""The evaluation helpers: the feature classifier, the evaluator, the sampler race."""
import pytest
import torch

from minidiff import costs, evaluation, recipes, schedules
from minidiff.experiments import editing_images, gans_vs_diffusion


def test_classifier_learns_shapes_quickly(g):
    """The classifier architecture can separate simple classes: a sanity check of the pipeline."""
    from minidiff import data
    imgs, _, attrs = data.shapes(600, size=28, generator=g)
    x = imgs.mean(1, keepdim=True)
    y = attrs["shape"]
    torch.manual_seed(0)
    model = evaluation.train_classifier(x[:500], y[:500], steps=150, batch_size=64, generator=g, progress=False)
    assert evaluation.accuracy(model, x[500:], y[500:]) > 0.9
    assert evaluation.features(model, x[:10]).shape == (10, 128)



class PixelFeatures(torch.nn.Module):
    """A stand-in classifier whose features are the 7x7-pooled pixels: far apart for different
    images, equal for equal ones (an untrained CNN maps everything to nearly the same point)."""

    def features(self, x):
        return torch.nn.functional.avg_pool2d(x, 4).flatten(1)

    def forward(self, x):
        return self.features(x)[:, :10]


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_compare_samplers_runs_every_sampler_and_scores_it(g, prediction):
    """With a 'model' that knows the answer (a constant x0), every sampler lands on it, so its FID
    against copies of that image is near 0; a model that always predicts zero does not, and
    scores far worse. Each run calls the model once per step per batch."""
    target = torch.rand(1, 1, 28, 28, generator=g) * 2 - 1
    s = schedules.linear(T=1000)
    calls = []

    class Oracle(torch.nn.Module):        # eps (or v) that points exactly at `target`
        def __init__(self, know=True):
            super().__init__()
            self.p, self.know = torch.nn.Parameter(torch.zeros(1)), know

        def forward(self, x, t):
            calls.append(len(x))
            ab = s.alpha_bars[t].float()[:, None, None, None]
            eps = (x - ab.sqrt() * target) / (1 - ab).sqrt()
            v = ab.sqrt() * eps - (1 - ab).sqrt() * target                 # Salimans & Ho 2022, §4
            out = eps if prediction == "eps" else v
            return out if self.know else torch.zeros_like(out)

    clf = PixelFeatures()
    real = evaluation.features(clf, target.expand(20, 1, 28, 28) + 0.05 * torch.randn(20, 1, 28, 28, generator=g))
    evaluator = {"classifier": clf, "real": real, "floor": 0.0, "n_real": 20, "image_shape": (1, 28, 28),
                 "num_classes": 10}
    runs = [("ddpm", 10), ("ddim", 5), ("dpm++2m", 5), ("ddim", 5, 1.0), ("sde-dpm++2m", 5)]
    rows = evaluation.compare_samplers(Oracle(), s, evaluator, runs, n=20, batch_size=8, prediction=prediction,
                                       progress=False, keep_images=True)
    assert [(r["sampler"], r["steps"], r["eta"]) for r in rows] == [(*run, 0.0)[:3] for run in runs]
    assert [r["name"] for r in rows][2:4] == ["dpm++2m 5", "ddim 5, eta=1"]
    assert calls == [m for run in runs for m in (8, 8, 4) for _ in range(run[1])]
    bad = evaluation.compare_samplers(Oracle(know=False), s, evaluator, [("ddim", 5)], n=20, batch_size=8,
                                      prediction=prediction, progress=False)[0]
    for r in rows:
        assert r["samples"] == 20 and r["fid"] < 0.05 and r["precision"] == 1.0
        assert r["images"].shape == (20, 1, 28, 28)
        torch.testing.assert_close(r["images"], target.expand(20, 1, 28, 28).clamp(-1, 1), atol=2e-3, rtol=0)
        assert r["fid"] < bad["fid"] / 100, (r["name"], r["fid"], bad["fid"])


def test_image_evaluator_takes_its_shape_from_the_data(g):
    """No 1x28x28 is assumed: a 3-channel 16x16 set gives a 3x16x16 evaluator with a floor."""
    from minidiff import data
    imgs, _, attrs = data.shapes(300, size=16, generator=g)
    clf = evaluation.train_classifier(imgs[:200], attrs["shape"][:200], steps=20, generator=g, progress=False)
    ev = evaluation.image_evaluator(clf, imgs[:200], imgs[200:], attrs["shape"][200:], n_real=50)
    assert ev["image_shape"] == (3, 16, 16) and ev["num_classes"] == 3 and ev["real"].shape == (50, 128)
    assert ev["floor"] >= 0
    scored = evaluation.evaluate_samples(ev, imgs[:50])
    assert scored["samples"] == 50 and len(scored["shares"]) == 3
    # KID: the evaluator's floor is real against real (unbiased: near 0, unlike FID's floor); KID of a
    # set far from the real images is far above it
    assert abs(ev["kid_floor"]) < 0.05 * evaluation.evaluate_samples(ev, -imgs[:50])["kid"]
    assert scored["kid_floor"] == ev["kid_floor"] and scored["kid_std"] >= 0


def test_activation_bytes_counts_every_leaf_output():
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(5, 2)))
    x = torch.zeros(4, 3)
    assert costs.activation_bytes(net, x) == 4 * (5 + 5 + 2) * 4        # float32: 4 bytes per number
    assert costs.activation_bytes(net.double(), x.double()) == 4 * (5 + 5 + 2) * 8
    assert not net._forward_hooks and not net[0]._forward_hooks                  # the hooks are gone


def test_training_speed_trains_and_counts_examples():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    before = net.weight.detach().clone()
    calls = []

    def loss_fn(m, x):
        calls.append(len(x))
        return m(x).pow(2).mean()

    per_s, peak = costs.training_speed(net, loss_fn, torch.ones(8, 3), steps=2, tries=3)
    assert per_s > 0 and peak is None and calls == [8] * (1 + 2 * 3)            # a warm-up, then 3 x 2 steps
    assert not torch.equal(net.weight, before)
    with pytest.raises(ValueError, match="steps"):
        costs.training_speed(net, loss_fn, torch.ones(8, 3), steps=0)


def test_settings_tuned_counts_what_the_defaults_could_not_do():
    def rows(setting, lr, fids, failed=()):
        return [{"setting": setting, "lr": lr, "fid": f, "failed": i in failed} for i, f in enumerate(fids)]

    gan, ddpm, defaults = recipes.config("fashion-gan", "small"), recipes.config("fashion-ddpm", "small"), gans_vs_diffusion.LIBRARY_DEFAULTS
    recipe = rows("recipe", 2e-4, [100.0, 110.0, 90.0]) + rows("recipe", 8e-4, [500.0, 500.0, 500.0])
    out = gans_vs_diffusion.settings_tuned(gan, defaults, recipe + rows("default lr", 1e-3, [150.0, 160.0, 170.0])
                                           + rows("default beta1", 2e-4, [105.0, 95.0, 108.0]), noise=0.1)
    assert out["moved"] == {"lr": (2e-4, 1e-3), "beta1": (0.5, 0.9)}
    assert out["recipe"] == {"failed": 0, "runs": 3, "median_fid": 100.0}        # only the recipe's own lr
    assert out["defaults"]["lr"]["needed"] and not out["defaults"]["beta1"]["needed"]   # 105 is within 10%
    assert out["needed"] == 1
    failing = gans_vs_diffusion.settings_tuned(gan, defaults, recipe + rows("default lr", 1e-3, [80.0] * 3, failed=(0, 1, 2))
                                               + rows("default beta1", 2e-4, [80.0] * 3, failed=(1,)))
    assert failing["defaults"]["lr"]["median_fid"] is None and failing["needed"] == 2    # a failed run counts
    nothing_moved = gans_vs_diffusion.settings_tuned(ddpm, defaults, rows("recipe", 1e-3, [50.0] * 3))
    assert nothing_moved["moved"] == {} and nothing_moved["needed"] == 0 and nothing_moved["defaults"] == {}
    with pytest.raises(ValueError, match="no 'default beta1' runs"):
        gans_vs_diffusion.settings_tuned(gan, defaults, recipe + rows("default lr", 1e-3, [1.0]))
    with pytest.raises(ValueError, match="noise"):
        gans_vs_diffusion.settings_tuned(gan, defaults, recipe, noise=-0.1)
    with pytest.raises(TypeError, match="config"):
        gans_vs_diffusion.settings_tuned("fashion-gan", defaults, recipe)


def test_edit_scores_against_hand_computations(g):
    truth = torch.rand(3, 1, 4, 4, generator=g) * 2 - 1
    images = truth.clone()
    images[..., :2] += 0.5                                  # change only the left half, by 0.5
    keep = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    keep[..., :2] = False                                   # ...which is the repainted part
    assert torch.allclose(editing_images.masked_error(images, truth, keep), torch.full((3,), 0.25))
    keep_right_unknown = ~keep
    assert torch.allclose(editing_images.masked_error(images, truth, keep_right_unknown), torch.zeros(3))
    with pytest.raises(ValueError, match="repaints no pixel"):
        editing_images.masked_error(images, truth, torch.ones(1, 1, 4, 4, dtype=torch.bool))
    # coarse structure: 2x2 block means; a shift inside every block is invisible, a block-wide shift is not
    a = torch.zeros(1, 1, 4, 4)
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(2, 2)[None, None]
    assert editing_images.low_frequency_distance(a + checker, a, factor=2).item() == pytest.approx(0.0, abs=1e-7)
    assert editing_images.low_frequency_distance(a + 0.3, a, factor=2).item() == pytest.approx(0.3)
    clf = evaluation.FashionClassifier(in_channels=1, num_classes=10, size=8).eval()
    x = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    assert torch.allclose(editing_images.feature_distance(clf, x, x), torch.zeros(3))
    by_hand = (evaluation.features(clf, x.flip(0)) - evaluation.features(clf, x)).norm(dim=1).float()
    assert torch.allclose(editing_images.feature_distance(clf, x.flip(0), x), by_hand) and (by_hand[[0, 2]] > 0).all()


def test_held_out_loss_scores_every_model_on_the_same_draws():
    s = schedules.make("linear", T=50)
    images = torch.randn(37, 1, 6, 6, generator=torch.Generator().manual_seed(1))

    class Affine(torch.nn.Module):      # a fixed function of x_t and t, to check the loss by hand
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(0.5))

        def forward(self, x, t):
            return self.w * x + t[:, None, None, None] / 50

    g = torch.Generator().manual_seed(3)      # the draws it makes: t (DDPM Algorithm 1, line 3), then eps
    t = torch.randint(0, s.T, (37,), generator=g)
    eps = torch.randn(images.shape, generator=g)
    ab = torch.cumprod(1 - s.betas.double(), 0).float()[t][:, None, None, None]   # alpha_bar, DDPM eq. 4
    xt = ab.sqrt() * images + (1 - ab).sqrt() * eps                 # q(x_t | x_0), DDPM eq. 4
    by_hand = (0.5 * xt + t[:, None, None, None] / 50 - eps).pow(2).mean().item()
    model = Affine()
    assert evaluation.held_out_loss(model, s, images, seed=3) == pytest.approx(by_hand, rel=1e-5)
    assert evaluation.held_out_loss(model, s, images, seed=3, batch_size=5) == pytest.approx(by_hand, rel=1e-5)
    assert evaluation.held_out_loss(model, s, images, seed=4) != pytest.approx(by_hand, rel=1e-3)
    with pytest.raises(ValueError, match="batch_size"):
        evaluation.held_out_loss(model, s, images, batch_size=0)


def test_gradient_noise_scale_matches_least_squares_in_closed_form():
    """y = w* . x + n with x ~ N(0, I_d), n ~ N(0, s^2), loss (w . x - y)^2 at w = w* + delta: the
    per-example gradient is 2 (delta . x - n) x, so |G|^2 = 4 |delta|^2 and
    tr(Sigma) = 4 (|delta|^2 (d + 1) + s^2 d) (Gaussian fourth moments): B_simple = d + 1 + s^2 d / |delta|^2."""
    d, s2 = 4, 1.0
    g = torch.Generator().manual_seed(0)
    w_star = torch.randn(d, generator=g, dtype=torch.float64)
    delta = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    model = torch.nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_((w_star + delta)[None])
    batches = []
    for _ in range(300):
        x = torch.randn(64, d, generator=g, dtype=torch.float64)
        batches.append((x, x @ w_star + s2 ** 0.5 * torch.randn(64, generator=g, dtype=torch.float64)))

    def loss_fn(m, batch):
        x, y = batch
        return (m(x)[:, 0] - y).pow(2).mean()

    out = costs.gradient_noise_scale(model, loss_fn, batches, small=8)
    assert out["grad_norm_sq"] == pytest.approx(4 * delta.pow(2).sum().item(), rel=0.1)
    assert out["trace_sigma"] == pytest.approx(4 * ((d + 1) + s2 * d), rel=0.1)
    assert out["b_simple"] == pytest.approx(d + 1 + s2 * d, rel=0.15)
    with pytest.raises(ValueError, match="multiple of small"):
        costs.gradient_noise_scale(model, loss_fn, batches[:1], small=48)
