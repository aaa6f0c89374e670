"""Pictures: image grids, point clouds, trajectories and schedule curves.

Every function draws on a matplotlib Axes (made if not given) and returns the Figure, so a
lesson can show it and a script can save it. ``figure_png`` renders a Figure to PNG bytes
(the widgets use it).
"""
from __future__ import annotations

import io

import numpy as np
import torch
from matplotlib.figure import Figure

from ._checks import check_float, check_int

__all__ = ["to_image", "image_grid", "show_images", "scatter", "snapshots_2d", "plot_schedules",
           "figure_png", "show_source", "animation_gif", "show_molecules"]


def _axes(ax, figsize=(4, 4)):
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax


def to_image(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W, C) or (H, W) in [0, 1] for imshow."""
    img = ((x.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    return img[..., 0] if img.shape[-1] == 1 else img


def image_grid(x: torch.Tensor, nrow: int = 8, pad: int = 1) -> torch.Tensor:
    """Tile a batch (N, C, H, W) into one image (C, H', W') with ``nrow`` images per row."""
    nrow = check_int("nrow", nrow, low=1)
    pad = check_int("pad", pad, low=0)
    n, c, h, w = x.shape
    ncol = min(nrow, n)
    rows = -(-n // ncol)
    grid = torch.ones(c, rows * (h + pad) + pad, ncol * (w + pad) + pad, dtype=x.dtype)
    for k in range(n):  # one copy per image, not per pixel
        r, q = divmod(k, ncol)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = x[k].cpu()
    return grid


def show_images(x: torch.Tensor, nrow: int = 8, titles=None, ax=None, title: str | None = None, row_labels=None):
    """Show a batch (N, C, H, W) in [-1, 1] as a grid (or a row with ``titles``). ``row_labels``:
    one name per row of the grid, written at its left."""
    if titles is not None:
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, len(x), figsize=(1.6 * len(x), 1.9))
        for a, img, name in zip(np.atleast_1d(axes), x, titles):
            a.imshow(to_image(img), cmap="gray", vmin=0, vmax=1)
            a.set_title(name, fontsize=8)
            a.axis("off")
        return fig
    nrow = check_int("nrow", nrow, low=1)
    rows = -(-len(x) // min(nrow, len(x)))
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"row_labels must name each of the grid's {rows} rows, got {len(row_labels)}")
    fig, ax = _axes(ax, figsize=(6, 6))
    ax.imshow(to_image(image_grid(x, nrow)), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    if row_labels is not None:                  # the grid has a 1-pixel border between images
        h = x.shape[-2]
        ax.set_yticks([1 + r * (h + 1) + h / 2 for r in range(rows)], [str(s) for s in row_labels])
        ax.tick_params(left=False)
    if title:
        ax.set_title(title)
    return fig


def scatter(points: torch.Tensor, ax=None, title: str | None = None, lim: float = 3.0, **kw):
    """Scatter a 2-D point cloud (N, 2) on square axes [-lim, lim]^2."""
    lim = check_float("lim", lim, low=0, low_open=True)
    fig, ax = _axes(ax)
    p = points.detach().float().cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=kw.pop("s", 2), alpha=kw.pop("alpha", 0.5), **kw)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def snapshots_2d(traj: torch.Tensor, indices, labels=None, lim: float = 3.0, color="C0"):
    """A row of scatter plots of a trajectory (K, N, 2) at the given indices."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(indices), figsize=(2.2 * len(indices), 2.4))
    for j, (a, k) in enumerate(zip(np.atleast_1d(axes), indices)):
        scatter(traj[k], ax=a, lim=lim, color=color,
                title=labels[j] if labels is not None else f"step {k}")
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    return fig


def plot_schedules(schedules: dict, axes=None):
    """alpha_bar and log10 SNR against t / T for each named schedule, side by side."""
    if axes is None:
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    fig = axes[0].figure
    for name, s in schedules.items():
        u = (np.arange(s.T) + 1) / s.T
        axes[0].plot(u, s.alpha_bars.numpy(), label=name)
        snr = s.snr.numpy()
        axes[1].plot(u[snr > 0], np.log10(snr[snr > 0]), label=name)
    axes[0].set(xlabel="t / T", ylabel=r"$\bar\alpha_t$", title="signal kept", ylim=(-0.02, 1.02))
    axes[1].set(xlabel="t / T", ylabel=r"$\log_{10}$ SNR", title="signal-to-noise ratio")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """Render a Figure to PNG bytes with the Agg backend (no display needed)."""
    dpi = check_int("dpi", dpi, low=1)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()





def show_source(obj):
    """The source of a minidiff function or class as highlighted Markdown, so a lesson shows
    the package's code itself rather than a second copy of it."""
    import inspect

    from IPython.display import Markdown
    return Markdown(f"```python\n{inspect.getsource(obj).rstrip()}\n```")


def animation_gif(frames: torch.Tensor, nrow: int = 8, ms_per_frame: int = 120, scale: int = 3,
                  labels=None) -> bytes:
    """An animated GIF (bytes) of a trajectory of image batches (K, N, C, H, W) in [-1, 1];
    show it with ``IPython.display.Image(data=..., format="gif")``. ``labels``: one caption per
    frame (e.g. "t = 999"), written in a strip above it."""
    ms_per_frame = check_int("ms_per_frame", ms_per_frame, low=1)
    scale = check_int("scale", scale, low=1)
    if labels is not None and len(labels) != len(frames):
        raise ValueError(f"labels must have one caption per frame ({len(frames)}), got {len(labels)}")
    from PIL import Image, ImageDraw

    pictures = []
    for k, batch in enumerate(frames):
        img = (to_image(image_grid(batch, nrow)) * 255).round().astype(np.uint8)
        pil = Image.fromarray(img)
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
        if labels is not None:
            framed = Image.new(pil.mode, (pil.width, pil.height + 14), (255,) * len(pil.getbands())
                               if len(pil.getbands()) > 1 else 255)
            framed.paste(pil, (0, 14))
            ImageDraw.Draw(framed).text((3, 1), str(labels[k]), fill=(0,) * len(pil.getbands())
                                        if len(pil.getbands()) > 1 else 0)
            pil = framed
        pictures.append(pil)
    buf = io.BytesIO()
    pictures[0].save(buf, format="GIF", save_all=True, append_images=pictures[1:], duration=ms_per_frame,
                     loop=0)
    return buf.getvalue()


ATOM_COLOURS = ("0.3", "C0", "C3")          # C grey, N blue, O red


def show_molecules(coords: torch.Tensor, types: torch.Tensor, titles=None, ncol: int = 6, bond_cutoff: float = 1.8,
                   lim: float = 3.0):
    """3-D pictures of molecules: atoms (coords (n, atoms, 3) in Å) coloured by type index (C, N, O),
    and a bond drawn between atoms closer than ``bond_cutoff``."""
    import matplotlib.pyplot as plt
    ncol = check_int("ncol", ncol, low=1)
    n = len(coords)
    rows = -(-n // ncol)
    fig = plt.figure(figsize=(2.0 * min(n, ncol), 2.1 * rows))
    for k in range(n):
        ax = fig.add_subplot(rows, min(n, ncol), k + 1, projection="3d")
        c, t = coords[k].detach().double().cpu(), types[k].cpu()
        d = torch.cdist(c, c)
        for i, j in zip(*torch.nonzero(torch.triu(d < bond_cutoff, diagonal=1), as_tuple=True)):
            ax.plot(*c[[int(i), int(j)]].T.numpy(), color="0.5", lw=1.5)
        ax.scatter(*c.T.numpy(), c=[ATOM_COLOURS[int(v)] for v in t], s=40, depthshade=False)
        ax.set_xlim(-lim, lim), ax.set_ylim(-lim, lim), ax.set_zlim(-lim, lim)
        ax.set_axis_off()
        if titles is not None:
            ax.set_title(titles[k], fontsize=8)
    fig.tight_layout()
    return fig
