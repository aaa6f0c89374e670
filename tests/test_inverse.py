import math

import pytest
import torch
from torch import nn

from minidiff import inverse, samplers, schedules


def test_kspace_is_orthonormal_and_inverts():
    x = torch.randn(2, 1, 12, 12, dtype=torch.float64)
    k = inverse.kspace(x)
    assert torch.allclose(k.abs().pow(2).sum(), x.pow(2).sum())                 # Parseval: F^H F = I
    assert torch.allclose(inverse.image_from_kspace(k).real, x) and inverse.image_from_kspace(k).imag.abs().max() < 1e-12


def test_the_adjoint_satisfies_the_inner_product_identity():
    g = torch.Generator().manual_seed(0)
    mask = inverse.cartesian_mask(16, 4, generator=g)
    x = torch.complex(torch.randn(3, 1, 16, 16, generator=g, dtype=torch.float64),
                      torch.randn(3, 1, 16, 16, generator=g, dtype=torch.float64))
    y = torch.complex(torch.randn(3, 1, 16, 16, generator=g, dtype=torch.float64),
                      torch.randn(3, 1, 16, 16, generator=g, dtype=torch.float64))
    lhs = torch.vdot(y.flatten(), inverse.forward_operator(x, mask).flatten())      # <Ax, y>
    rhs = torch.vdot(inverse.adjoint_operator(y, mask).flatten(), x.flatten())      # <x, A^H y>
    assert torch.allclose(lhs, rhs)


@pytest.mark.parametrize("size,acceleration", [(28, 4), (28, 8), (32, 4), (64, 8)])
def test_the_mask_keeps_the_centre_band_and_its_share_of_lines(size, acceleration):
    m = inverse.cartesian_mask(size, acceleration, center_fraction=0.08, generator=torch.Generator().manual_seed(1))
    lines = m[0]
    assert (m == lines).all()                                    # whole columns
    assert abs(int(lines.sum()) - size / acceleration) <= 1.5    # about size / R lines (kept in +-f pairs)
    f = torch.arange(size)
    freq = torch.minimum(f, size - f)
    assert lines[freq <= math.ceil(size * 0.08) // 2].all()       # the lowest frequencies, always
    assert torch.equal(lines, lines[(-f) % size])                # Hermitian pairs: f and -f together
    again = inverse.cartesian_mask(size, acceleration, center_fraction=0.08, generator=torch.Generator().manual_seed(1))
    assert torch.equal(m, again)


def test_measurement_noise_and_zero_filling():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 16, 16, generator=g, dtype=torch.float64) * 2 - 1
    mask = inverse.cartesian_mask(16, 1)                         # everything measured
    assert torch.allclose(inverse.zero_filled(inverse.measure(x, mask), mask), x)
    y = inverse.measure(x, mask, sigma=0.1, generator=g)
    noise = y - inverse.kspace(x)
    assert abs(noise.abs().pow(2).mean().sqrt().item() - 0.1) < 0.005   # complex variance sigma^2 per coefficient
    half = inverse.cartesian_mask(16, 4, generator=g)
    assert (inverse.measure(x, half, 0.1, generator=g)[..., ~half[0]] == 0).all()   # nothing on unmeasured lines


def test_projection_is_consistent_with_the_measurement():
    g = torch.Generator().manual_seed(2)
    truth = torch.rand(2, 1, 16, 16, generator=g, dtype=torch.float64)
    mask = inverse.cartesian_mask(16, 4, generator=g)
    y = inverse.measure(truth, mask, sigma=0.05, generator=g)
    guess = torch.rand(2, 1, 16, 16, generator=g, dtype=torch.float64)
    out = inverse.project_kspace(guess, y, mask)
    assert out.dtype == torch.float64 and not out.is_complex()
    assert (inverse.kspace(out) - y)[..., mask[0]].abs().max() < 1e-12     # measured lines agree exactly
    assert torch.allclose(inverse.kspace(out)[..., ~mask[0]], inverse.kspace(guess)[..., ~mask[0]])


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x, t):
        return self.net(x) * 0.1


def test_both_solvers_run_in_the_sampler_loop():
    s, model = schedules.linear(1000), Tiny()
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(2, 1, 16, 16, generator=g) * 2 - 1
    mask = inverse.cartesian_mask(16, 4, generator=g)
    y = inverse.measure(truth, mask)
    out = inverse.reconstruct(model, s, y.to(torch.complex64), mask, truth.shape, method="projection", steps=10,
                              generator=torch.Generator().manual_seed(0))
    assert (inverse.kspace(out) - y)[..., mask[0]].abs().max() < 1e-4    # consistent after the final projection
    plain = samplers.sample(model, s, truth.shape, "ddim", 10, eta=1.0, generator=torch.Generator().manual_seed(0),
                            clip_x0=1.0, progress=False)
    no_step = inverse.reconstruct(model, s, y, mask, truth.shape, method="dps", steps=10, zeta=0.0,
                                  generator=torch.Generator().manual_seed(0))
    assert torch.allclose(no_step, plain, atol=1e-6)                   # zeta = 0: the sampler alone
    stepped = inverse.reconstruct(model, s, y, mask, truth.shape, method="dps", steps=10, zeta=0.5,
                                  generator=torch.Generator().manual_seed(0))
    residual = {k: (inverse.forward_operator(v, mask) - y).abs().pow(2).sum().sqrt().item()
                for k, v in (("none", no_step), ("dps", stepped))}
    assert residual["dps"] < residual["none"]                          # the guidance pulls towards y


def test_psnr_and_ssim_against_references():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    x = torch.zeros(1, 1, 8, 8)
    assert inverse.psnr(x + 0.1, x, data_range=2.0).item() == pytest.approx(10 * math.log10(4 / 0.01))
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 1, 28, 28, generator=g) * 2 - 1
    b = (a + 0.3 * torch.randn(3, 1, 28, 28, generator=g)).clamp(-1, 1)
    ours = inverse.ssim(b, a, data_range=2.0)
    ref = [skimage_metrics.structural_similarity(a[i, 0].numpy(), b[i, 0].numpy(), data_range=2.0) for i in range(3)]
    assert torch.allclose(ours, torch.tensor(ref, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(inverse.ssim(a, a, 2.0), torch.ones(3, dtype=torch.float64))
    ref_psnr = [skimage_metrics.peak_signal_noise_ratio(a[i].numpy(), b[i].numpy(), data_range=2.0) for i in range(3)]
    assert torch.allclose(inverse.psnr(b, a, 2.0), torch.tensor(ref_psnr, dtype=torch.float64), atol=1e-4)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="acceleration"):
        inverse.cartesian_mask(16, 0.5)
    with pytest.raises(ValueError, match="center_fraction"):
        inverse.cartesian_mask(16, 4, center_fraction=0.0)
    x = torch.zeros(1, 1, 16, 16)
    with pytest.raises(ValueError, match="mask of shape"):
        inverse.forward_operator(x, inverse.cartesian_mask(8, 2))
    with pytest.raises(ValueError, match="sigma"):
        inverse.measure(x, inverse.cartesian_mask(16, 2), sigma=-0.1)
    with pytest.raises(ValueError, match="data_range"):
        inverse.psnr(x, x, data_range=0)
    with pytest.raises(ValueError, match="method"):
        inverse.reconstruct(Tiny(), schedules.linear(1000), inverse.kspace(x), inverse.cartesian_mask(16, 2), x.shape,
                            method="magic")


def test_the_super_resolution_projection_keeps_the_block_means():
    g = torch.Generator().manual_seed(3)
    truth = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    y = inverse.downsample(truth, 2)
    assert torch.allclose(y[0, 0, 0, 0], truth[0, 0, :2, :2].mean())
    guess = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    out = inverse.project_downsample(guess, y, 2)
    assert torch.allclose(inverse.downsample(out, 2), y)
    # the smallest change that does it: the correction is constant on each block
    change = (out - guess).unfold(2, 2, 2).unfold(3, 2, 2)
    assert torch.allclose(change, change[..., :1, :1].expand_as(change))


def test_dps_takes_any_operator():
    s, model = schedules.linear(1000), Tiny()
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(2, 1, 16, 16, generator=g) * 2 - 1
    y = inverse.downsample(truth, 2)
    runs = {z: inverse.dps(model, s, y, lambda x: inverse.downsample(x, 2), truth.shape, zeta=z, steps=10,
                           generator=torch.Generator().manual_seed(0)) for z in (0.0, 0.5)}
    err = {z: (inverse.downsample(x, 2) - y).pow(2).sum().sqrt().item() for z, x in runs.items()}
    assert err[0.5] < err[0.0]
    with pytest.raises(TypeError, match="operator"):
        inverse.dps(model, s, y, "downsample", truth.shape, zeta=0.5)


def test_projection_takes_any_linear_operator():
    s, model = schedules.linear(1000), Tiny()
    truth = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1
    y = inverse.downsample(truth, 2)
    out = inverse.projection(model, s, y, lambda x: inverse.downsample(x, 2),
                             lambda x, v: inverse.project_downsample(x, v, 2), truth.shape, steps=10,
                             generator=torch.Generator().manual_seed(0))
    assert torch.allclose(inverse.downsample(out, 2), y, atol=1e-6)        # the block means are the measured ones
    with pytest.raises(TypeError, match="project"):
        inverse.projection(model, s, y, lambda x: x, None, truth.shape)
