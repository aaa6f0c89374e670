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


def test_image_grid_rows_are_labelled_at_their_centres():
    import matplotlib.pyplot as plt
    import pytest
    fig = plots.show_images(torch.zeros(6, 1, 4, 4), nrow=3, row_labels=["DDPM", "DDIM 10"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["DDPM", "DDIM 10"]
    assert list(ax.get_yticks()) == [3.0, 8.0]                # 1 px border, 4 px images: centres at 1+2, 6+2
    with pytest.raises(ValueError, match="row_labels must name each of the grid's 2 rows, got 1"):
        plots.show_images(torch.zeros(6, 1, 4, 4), nrow=3, row_labels=["one"])
    plt.close("all")


def test_animation_gif_frames_and_labels():
    import io

    import pytest
    from PIL import Image
    frames = torch.rand(3, 2, 1, 8, 8) * 2 - 1
    plain = Image.open(io.BytesIO(plots.animation_gif(frames, nrow=2, scale=2)))
    labelled = Image.open(io.BytesIO(plots.animation_gif(frames, nrow=2, scale=2, labels=["t=9", "t=5", "x_0"])))
    assert plain.n_frames == labelled.n_frames == 3
    assert labelled.height == plain.height + 14 and labelled.width == plain.width     # a caption strip on top
    with pytest.raises(ValueError, match="one caption per frame"):
        plots.animation_gif(frames, labels=["only one"])


def test_stored_lessons_drop_progress_bars_only():
    import sys
    import pathlib
    import nbformat
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
    from lesson_times import without_progress_bars
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    bar = nbformat.v4.new_output("display_data", data={"text/plain": "training:  42%|####  | 420/1000 [00:03<00:04]"})
    slider = nbformat.v4.new_output("display_data", data={"text/plain": "VBox(children=(IntSlider(value=0),))"})
    text = nbformat.v4.new_output("stream", text="3000 steps; loss 0.044\n")
    cell.outputs = [bar, slider, text]
    nb.cells = [cell]
    without_progress_bars(nb)
    assert cell.outputs == [slider, text]
