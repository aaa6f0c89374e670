"""Sliders to play with: plain ipywidgets 8, no custom JavaScript.

They work in JupyterLab, Notebook 7 and VS Code. Each explorer returns a ``VBox`` whose
``controls`` dict holds the sliders, ``readout`` an HTML line of numbers and ``plot`` an
``Image`` holding the rendered PNG; moving a slider redraws both at once. The noise is drawn
once per explorer so that moving a slider changes only what the slider controls.
"""
from __future__ import annotations

import ipywidgets as w
import torch
from matplotlib.figure import Figure

from . import schedules
from ._checks import check_int
from .data import sample_image
from .forward import q_sample
from .plots import figure_png, to_image

__all__ = ["schedule_explorer", "timestep_slider"]


def _noised_row(s, image, noise, ts, axes):
    x0 = image[None].expand(len(ts), *image.shape)
    xt = q_sample(s, x0, torch.as_tensor(ts, dtype=torch.long), noise.expand_as(x0))
    for a, t, img in zip(axes, ts, xt):
        a.imshow(to_image(img), cmap="gray", vmin=0, vmax=1)
        a.set_title(f"t={t}", fontsize=8)
        a.axis("off")


def schedule_figure(s, image, noise, n_images: int = 6) -> Figure:
    """alpha_bar and SNR curves over a row of the image noised at evenly spaced t."""
    n_images = check_int("n_images", n_images, low=2)
    fig = Figure(figsize=(9, 4.2))
    grid = fig.add_gridspec(2, n_images, height_ratios=[1.4, 1])
    a1 = fig.add_subplot(grid[0, : n_images // 2])
    a2 = fig.add_subplot(grid[0, n_images // 2:])
    u = torch.arange(1, s.T + 1) / s.T
    a1.plot(u, s.alpha_bars)
    a1.set(title=r"$\bar\alpha_t$ (signal kept)", xlabel="t / T", ylim=(-0.02, 1.02))
    snr = s.snr.clamp_min(1e-12)
    a2.semilogy(u, snr)
    a2.set(title="SNR", xlabel="t / T")
    ts = torch.linspace(0, s.T - 1, n_images).round().long().tolist()
    _noised_row(s, image, noise, ts, [fig.add_subplot(grid[1, k]) for k in range(n_images)])
    fig.tight_layout()
    return fig


def schedule_explorer(image: torch.Tensor | None = None, seed: int = 0) -> w.VBox:
    """Pick a schedule kind, T and the beta range; see alpha_bar, SNR and noised images."""
    seed = check_int("seed", seed, low=0)
    image = sample_image(32) if image is None else image
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(seed))[None]
    controls = {
        "kind": w.Dropdown(options=list(schedules.KINDS), value="linear", description="schedule"),
        "T": w.IntSlider(value=1000, min=10, max=2000, step=10, description="T", continuous_update=False),
        "beta_start": w.FloatLogSlider(value=1e-4, base=10, min=-5, max=-1, step=0.1,
                                       description="beta_start", readout_format=".1e",
                                       continuous_update=False),
        "beta_end": w.FloatLogSlider(value=0.02, base=10, min=-3, max=0, step=0.05,
                                     description="beta_end", readout_format=".3f",
                                     continuous_update=False),
    }
    readout = w.HTML()
    plot = w.Image(format="png")

    def update(_=None):
        c = {k: v.value for k, v in controls.items()}
        beta_range = c["kind"] != "cosine"
        controls["beta_start"].disabled = controls["beta_end"].disabled = not beta_range
        kw = {"beta_start": c["beta_start"], "beta_end": c["beta_end"]} if beta_range else {}
        s = schedules.make(c["kind"], T=c["T"], **kw)
        half = s.T // 2
        readout.value = (f"<code>{c['kind']} T={s.T}: alpha_bar[T/2]={s.alpha_bars[half]:.4f}, "
                         f"alpha_bar[T-1]={s.alpha_bars[-1]:.2e}, SNR[T-1]={s.snr[-1]:.2e}</code>")
        plot.value = figure_png(schedule_figure(s, image, noise))

    for c in controls.values():
        c.observe(update, names="value")
    update()
    box = w.VBox([w.HBox([controls["kind"], controls["T"]]),
                  w.HBox([controls["beta_start"], controls["beta_end"]]), readout, plot])
    box.controls, box.readout, box.plot = controls, readout, plot
    return box


def timestep_slider(image: torch.Tensor | None = None, s=None, seed: int = 0) -> w.VBox:
    """Drag t and watch one image dissolve: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
    seed = check_int("seed", seed, low=0)
    image = sample_image(32) if image is None else image
    s = schedules.linear() if s is None else s
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(seed))[None]
    t_slider = w.IntSlider(value=0, min=0, max=s.T - 1, step=1, description="t", continuous_update=False)
    readout = w.HTML()
    plot = w.Image(format="png")

    def update(_=None):
        t = t_slider.value
        xt = q_sample(s, image[None], torch.tensor([t]), noise)[0]
        readout.value = (f"<code>t={t}: sqrt(alpha_bar)={s.sqrt_alpha_bars[t]:.4f}, "
                         f"sqrt(1-alpha_bar)={s.sqrt_one_minus_alpha_bars[t]:.4f}, "
                         f"SNR={s.snr[t]:.3g}</code>")
        fig = Figure(figsize=(5, 2.6))
        a1, a2 = fig.subplots(1, 2)
        a1.imshow(to_image(image), vmin=0, vmax=1)
        a1.set_title("x_0", fontsize=9)
        a2.imshow(to_image(xt), vmin=0, vmax=1)
        a2.set_title(f"x_t, t={t}", fontsize=9)
        for a in (a1, a2):
            a.axis("off")
        fig.tight_layout()
        plot.value = figure_png(fig)

    t_slider.observe(update, names="value")
    update()
    box = w.VBox([t_slider, readout, plot])
    box.controls, box.readout, box.plot = {"t": t_slider}, readout, plot
    return box
