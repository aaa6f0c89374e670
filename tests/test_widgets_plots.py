import matplotlib
import torch

from minidiff import plots, schedules, widgets

matplotlib.use("Agg")


def test_schedule_explorer_redraws_on_every_control():
    box = widgets.schedule_explorer()
    c = box.controls
    assert set(c) == {"kind", "T", "beta_start", "beta_end"}
    moves = [("T", 500), ("beta_end", 0.05), ("beta_start", 1e-3), ("kind", "sigmoid"), ("kind", "cosine")]
    for name, value in moves:
        before_text, before_png = box.readout.value, box.plot.value
        c[name].value = value
        assert box.readout.value != before_text, name
        assert box.plot.value != before_png, name
        assert box.plot.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert "cosine T=500" in box.readout.value
    assert c["beta_start"].disabled and c["beta_end"].disabled      # cosine has no beta range


def test_explorer_readout_reports_the_schedule():
    box = widgets.schedule_explorer()
    s = schedules.linear(T=1000)
    assert f"alpha_bar[T/2]={s.alpha_bars[500]:.4f}" in box.readout.value


def test_timestep_slider():
    box = widgets.timestep_slider()
    t = box.controls["t"]
    assert t.max == 999
    before = box.plot.value
    t.value = 300
    assert box.plot.value != before
    s = schedules.linear()
    assert f"sqrt(alpha_bar)={s.sqrt_alpha_bars[300]:.4f}" in box.readout.value


def test_plots_return_figures():
    import matplotlib.pyplot as plt
    fig = plots.plot_schedules({"linear": schedules.linear(T=100), "cosine": schedules.cosine(T=100)})
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2
    grid = plots.image_grid(torch.zeros(5, 1, 4, 4), nrow=3, pad=1)
    assert grid.shape == (1, 2 * 5 + 1, 3 * 5 + 1)
    assert plots.to_image(torch.ones(3, 4, 4)).shape == (4, 4, 3)
    fig2 = plots.snapshots_2d(torch.randn(5, 10, 2), [0, 2, 4])
    assert len(fig2.axes) == 3
    assert plots.figure_png(fig2)[:4] == b"\x89PNG"
    plt.close("all")
