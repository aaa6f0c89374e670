"""Data: small sets you can see, made on the spot, and Fashion-MNIST.

Toy 2-D sets (swiss roll, two moons, a Gaussian mixture with known parameters) are the
playground of lessons 01–04: every point is visible, and for the mixture the ideal denoiser is
known exactly (see ``analytic``). Each is scaled to roughly zero mean and unit spread, like
the N(0, I) it is noised toward. ``sample_image`` draws a small picture for the widgets;
``shapes`` draws coloured shapes with captions and attributes for the conditioning lessons.

Fashion-MNIST (Xiao et al. 2017) is the real image set. ``fashion_mnist`` looks for the four
official IDX files in $MINIDIFF_DATA/fashion-mnist, then the user cache, then
/usr/share/datasets/fashion-mnist (Debian/Ubuntu package ``dataset-fashion-mnist``), and
otherwise downloads them into the cache. Every file is checked against the SHA-256 of its
decompressed content (so a re-compressed copy is accepted and a corrupt one is not).
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import pathlib
import shutil
import urllib.error
import urllib.request

import numpy as np
import torch

from ._checks import check_choice, check_float, check_int, check_tensor
from ._files import atomic_write

__all__ = ["swiss_roll", "two_moons", "GaussianMixture", "default_mixture", "toy_2d", "TOY_SETS",
           "sample_image", "fashion_mnist", "FASHION_MNIST_CLASSES", "shapes", "SHAPE_ATTRIBUTES", "shape_caption",
           "shape_captions", "shape_label", "shape_attributes", "shape_one_hot"]


def swiss_roll(n: int, noise: float = 0.03, generator=None) -> torch.Tensor:
    """A 2-D spiral: angle u ~ U(1.5 pi, 4.5 pi), point (u cos u, u sin u) / 10 plus noise. (n, 2)."""
    n = check_int("n", n, low=1)
    noise = check_float("noise", noise, low=0)
    u = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator))
    x = torch.stack([u * torch.cos(u), u * torch.sin(u)], dim=1) / 10.0
    return (x + noise * torch.randn(n, 2, generator=generator)).float()


def two_moons(n: int, noise: float = 0.05, generator=None) -> torch.Tensor:
    """Two interleaved half circles, centred and scaled to unit-ish spread. (n, 2)."""
    n = check_int("n", n, low=1)
    noise = check_float("noise", noise, low=0)
    angle = math.pi * torch.rand(n, generator=generator)
    upper = torch.rand(n, generator=generator) < 0.5
    x = torch.where(upper[:, None],
                    torch.stack([torch.cos(angle), torch.sin(angle)], 1),
                    torch.stack([1 - torch.cos(angle), 0.5 - torch.sin(angle)], 1))
    x = (x - torch.tensor([0.5, 0.25])) / torch.tensor([0.87, 0.5])
    return (x + noise * torch.randn(n, 2, generator=generator)).float()


class GaussianMixture:
    """p(x) = sum_k w_k N(x; mu_k, sigma_k^2 I): a data set whose density we know exactly.

    :param means: (K, d) component means.
    :param stds: (K,) isotropic standard deviations.
    :param weights: (K,) mixing weights (normalised here).
    """

    def __init__(self, means, stds, weights):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.stds = torch.as_tensor(stds, dtype=torch.float64)
        w = torch.as_tensor(weights, dtype=torch.float64)
        if self.means.dim() != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(self.means.shape)}")
        K = self.means.shape[0]
        if self.stds.shape != (K,) or w.shape != (K,):
            raise ValueError(f"stds and weights must have shape ({K},), got {tuple(self.stds.shape)} "
                             f"and {tuple(w.shape)}")
        if (self.stds <= 0).any() or not torch.isfinite(self.stds).all():
            raise ValueError("stds must be positive and finite")
        if (w < 0).any() or w.sum() <= 0 or not torch.isfinite(w).all():
            raise ValueError("weights must be non-negative, finite and not all zero")
        self.weights = w / w.sum()

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def __repr__(self) -> str:
        return f"GaussianMixture(K={len(self.weights)}, dim={self.dim})"

    def sample(self, n: int, generator=None, return_labels: bool = False):
        """Draw n points (float32, (n, d)); optionally also their component labels."""
        n = check_int("n", n, low=1)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = (self.means[k] + self.stds[k, None] * z).float()
        return (x, k) if return_labels else x

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) for x of shape (N, d)."""
        check_tensor("x", x)
        x = x.to(torch.float64)
        d = self.dim
        sq = ((x[:, None, :] - self.means[None]) ** 2).sum(-1)           # (N, K)
        var = self.stds ** 2
        log_comp = -0.5 * sq / var - 0.5 * d * torch.log(2 * math.pi * var)
        return torch.logsumexp(torch.log(self.weights) + log_comp, dim=1)


def default_mixture() -> GaussianMixture:
    """Three well-separated blobs with unequal weights (0.5, 0.3, 0.2): easy to check by eye."""
    return GaussianMixture(means=[[-1.5, -0.8], [1.5, -0.8], [0.0, 1.4]],
                           stds=[0.25, 0.25, 0.25], weights=[0.5, 0.3, 0.2])


TOY_SETS = ("swiss_roll", "moons", "mixture")


def toy_2d(name: str, n: int, generator=None) -> torch.Tensor:
    """A toy 2-D set by name: "swiss_roll", "moons" or "mixture" (``default_mixture``)."""
    check_choice("name", name, TOY_SETS)
    if name == "swiss_roll":
        return swiss_roll(n, generator=generator)
    if name == "moons":
        return two_moons(n, generator=generator)
    return default_mixture().sample(n, generator=generator)


def sample_image(size: int = 32) -> torch.Tensor:
    """A small procedural picture (3, size, size) in [-1, 1]: a red disc, a blue square and a
    yellow triangle on a light background. Deterministic; drawn with masks, no loops over pixels."""
    size = check_int("size", size, low=8)
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y, x = torch.meshgrid(c, c, indexing="ij")
    img = torch.full((3, size, size), 0.9)
    shapes = [
        (((x - 0.32) ** 2 + (y - 0.32) ** 2) < 0.2 ** 2, (0.85, 0.15, 0.15)),
        (((x - 0.7).abs() < 0.17) & ((y - 0.35).abs() < 0.17), (0.15, 0.3, 0.85)),
        ((y > 0.58) & (y < 0.92) & ((x - 0.5).abs() < (y - 0.58) * 0.75), (0.95, 0.8, 0.1)),
    ]
    for mask, colour in shapes:
        for ch in range(3):
            img[ch][mask] = colour[ch]
    return img * 2 - 1


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                       "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
# SHA-256 of each file's decompressed IDX bytes.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
SYSTEM_DATA_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")


def cache_dir() -> pathlib.Path:
    """Where downloads go: $MINIDIFF_CACHE, else $XDG_CACHE_HOME/minidiff, else ~/.cache/minidiff."""
    if os.environ.get("MINIDIFF_CACHE"):
        return pathlib.Path(os.environ["MINIDIFF_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "minidiff"


def fashion_mnist_dirs() -> list[pathlib.Path]:
    """The folders searched, in order."""
    dirs = []
    if os.environ.get("MINIDIFF_DATA"):
        dirs.append(pathlib.Path(os.environ["MINIDIFF_DATA"]) / "fashion-mnist")
    return dirs + [cache_dir() / "fashion-mnist", SYSTEM_DATA_DIR]


def _read_idx(path: pathlib.Path, name: str | None = None) -> np.ndarray:
    """Decompress, verify and parse one IDX file; any fault is an error that names the file."""
    name = name or path.name
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"Fashion-MNIST file {path} is corrupt or truncated ({e}); delete it and "
                         f"fetch it again") from e
    digest = hashlib.sha256(raw).hexdigest()
    if digest != FASHION_MNIST_SHA256[name]:
        raise ValueError(f"Fashion-MNIST file {path} has the wrong content (SHA-256 {digest[:12]}..., "
                         f"expected {FASHION_MNIST_SHA256[name][:12]}...); delete it and fetch it again")
    magic, count = int.from_bytes(raw[0:4], "big"), int.from_bytes(raw[4:8], "big")
    if magic == 2051:                                             # images: count x rows x cols
        rows, cols = int.from_bytes(raw[8:12], "big"), int.from_bytes(raw[12:16], "big")
        return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows, cols)
    return np.frombuffer(raw, dtype=np.uint8, offset=8)          # labels (magic 2049)


_PARSED: dict = {}       # (path, size, mtime) -> the verified array: a file is decompressed and hashed once per process


def _read_idx_once(path: pathlib.Path) -> np.ndarray:
    """``_read_idx``, remembered for as long as the file keeps its size and modification time."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _PARSED:
        _PARSED[key] = _read_idx(path)
    return _PARSED[key]


def _download(name: str, folder: pathlib.Path) -> pathlib.Path:
    """Fetch one official file into ``folder``; it takes its real name only once its SHA-256 is right."""
    base = os.environ.get("MINIDIFF_FASHION_MNIST_URL", FASHION_MNIST_URL)
    final = folder / name
    with atomic_write(final) as f:
        with urllib.request.urlopen(base + name, timeout=60) as r:
            shutil.copyfileobj(r, f)
        f.flush()
        try:
            _read_idx(pathlib.Path(f.name), name)       # verify before it takes the real name
        except ValueError as e:
            raise ValueError(f"downloaded {base + name}: {e}") from e
    return final


def _offline_message(split: str, error: Exception) -> str:
    dirs = "\n".join(f"    {d}" for d in fashion_mnist_dirs())
    return (f"Fashion-MNIST ({split}) was not found and could not be downloaded ({error}).\n"
            f"Looked in:\n{dirs}\nAny one of these gets it:\n"
            f"  1. put the four official files (train-/t10k-images-idx3-ubyte.gz, "
            f"train-/t10k-labels-idx1-ubyte.gz) in a folder DIR/fashion-mnist and set MINIDIFF_DATA=DIR;\n"
            f"  2. on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist "
            f"(installs them in {SYSTEM_DATA_DIR});\n"
            f"  3. connect to the internet once: they are downloaded from {FASHION_MNIST_URL} "
            f"into {cache_dir() / 'fashion-mnist'}.")


def fashion_mnist(split: str = "train", download: bool = True):
    """Fashion-MNIST images in [-1, 1], shape (N, 1, 28, 28) float32, and labels (N,) long.

    :param split: "train" (60,000 images) or "test" (10,000).
    :param download: fetch the files into the cache when no folder has them.
    """
    check_choice("split", split, FASHION_MNIST_FILES)
    names = FASHION_MNIST_FILES[split]
    folder = next((d for d in fashion_mnist_dirs() if all((d / n).is_file() for n in names)), None)
    if folder is None:
        if not download:
            raise FileNotFoundError(_offline_message(split, RuntimeError("download=False")))
        target = cache_dir() / "fashion-mnist"
        try:
            for n in names:
                if not (target / n).is_file():
                    _download(n, target)
        except (urllib.error.URLError, OSError) as e:   # offline, refused, timed out
            raise FileNotFoundError(_offline_message(split, e)) from e
        folder = target
    images, labels = (_read_idx_once(folder / n) for n in names)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"Fashion-MNIST files in {folder} disagree: {images.shape[0]} images, "
                         f"{labels.shape[0]} labels")
    x = torch.from_numpy(images.copy()).float().div_(127.5).sub_(1.0)[:, None]
    return x, torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------------------------------------
# Coloured shapes with captions

SHAPE_ATTRIBUTES = {
    "colour": {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.75, 0.2), "blue": (0.15, 0.3, 0.95),
               "yellow": (0.95, 0.85, 0.1), "purple": (0.6, 0.2, 0.8)},
    "shape": ("circle", "square", "triangle"),
    "size": {"small": 0.14, "large": 0.24},
    "position": {"top left": (0.3, 0.3), "top right": (0.3, 0.7), "bottom left": (0.7, 0.3),
                 "bottom right": (0.7, 0.7), "centre": (0.5, 0.5)},
}


def _pairs(name: str, pairs) -> list[tuple[int, int]]:
    """(colour, shape) word pairs -> index pairs, each word checked against ``SHAPE_ATTRIBUTES``."""
    colours, kinds = list(SHAPE_ATTRIBUTES["colour"]), list(SHAPE_ATTRIBUTES["shape"])
    out = []
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and pair[0] in colours and pair[1] in kinds):
            raise ValueError(f"{name} must hold (colour, shape) pairs with colour in {colours} and shape in "
                             f"{kinds}, got {pair!r}")
        out.append((colours.index(pair[0]), kinds.index(pair[1])))
    return out


def shape_caption(size: str, colour: str, shape: str, position: str) -> str:
    """The caption of one picture: "a small red circle at the top left" ("in the centre")."""
    return f"a {size} {colour} {shape} {'in the' if position == 'centre' else 'at the'} {position}"


def shape_captions() -> list[str]:
    """Every caption ``shapes`` can write (5 colours x 3 shapes x 2 sizes x 5 positions = 150)."""
    A = SHAPE_ATTRIBUTES
    return [shape_caption(sz, col, sh, pos) for col in A["colour"] for sh in A["shape"] for sz in A["size"]
            for pos in A["position"]]


def shape_label(attributes: dict) -> torch.Tensor:
    """One id per (colour, shape, size, position): the index of the caption in ``shape_captions``."""
    A, k = SHAPE_ATTRIBUTES, attributes
    return ((k["colour"] * len(A["shape"]) + k["shape"]) * len(A["size"]) + k["size"]) * len(A["position"]) + k["position"]


def shape_attributes(labels: torch.Tensor) -> dict:
    """The inverse of ``shape_label``: attribute indices from combination ids."""
    A, out, rest = SHAPE_ATTRIBUTES, {}, labels.long()
    for key in ("position", "size", "shape", "colour"):
        out[key], rest = rest % len(A[key]), rest // len(A[key])
    return {k: out[k] for k in A}


def shape_one_hot(attributes: dict) -> torch.Tensor:
    """The attributes as 4 one-hot tokens (N, 4, 15): token k is one-hot in attribute k's slot of
    the 5 + 3 + 2 + 5 values (the "one-hot labels" a conditional model can take instead of text)."""
    A = SHAPE_ATTRIBUTES
    widths = [len(v) for v in A.values()]
    n = len(attributes["colour"])
    out = torch.zeros(n, len(A), sum(widths))
    for k, (key, offset) in enumerate(zip(A, np.cumsum([0] + widths[:-1]).tolist())):
        out[torch.arange(n), k, offset + attributes[key]] = 1.0
    return out


def shapes(n: int, size: int = 32, generator=None, exclude=None, only=None):
    """``n`` pictures (n, 3, size, size) in [-1, 1] of one coloured shape on a light background,
    with captions such as "a small red circle at the top left" and the attribute indices.

    :param exclude: (colour, shape) pairs never drawn, e.g. ``[("red", "triangle")]``: a training
        set without them tests whether a model generalises to combinations it never saw.
    :param only: (colour, shape) pairs to draw from (uniformly), e.g. the held-out ones.
    Returns ``(images, captions, attributes)`` where ``attributes`` maps "colour", "shape",
    "size" and "position" to LongTensors (n,) indexing ``SHAPE_ATTRIBUTES``.
    """
    n = check_int("n", n, low=1)
    size = check_int("size", size, low=8)
    A = SHAPE_ATTRIBUTES
    keys = {k: list(v) for k, v in A.items()}
    attrs = {k: torch.randint(0, len(v), (n,), generator=generator) for k, v in keys.items()}
    if exclude is not None or only is not None:     # colour and shape drawn as one allowed pair
        every = [(c, s) for c in range(len(keys["colour"])) for s in range(len(keys["shape"]))]
        allowed = _pairs("only", only) if only is not None else every
        banned = set(_pairs("exclude", exclude or []))
        allowed = [p for p in allowed if p not in banned]
        if not allowed:
            raise ValueError("exclude and only leave no (colour, shape) pair to draw")
        pick = torch.tensor(allowed)[torch.randint(0, len(allowed), (n,), generator=generator)]
        attrs["colour"], attrs["shape"] = pick[:, 0], pick[:, 1]
    centres = torch.tensor([A["position"][p] for p in keys["position"]])[attrs["position"]]   # (n, 2) y, x
    radius = torch.tensor([A["size"][s] for s in keys["size"]])[attrs["size"]]
    colour = torch.tensor([A["colour"][c] for c in keys["colour"]])[attrs["colour"]]          # (n, 3)
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    dy = yy[None] - centres[:, 0, None, None]
    dx = xx[None] - centres[:, 1, None, None]
    r = radius[:, None, None]
    masks = torch.stack([dy ** 2 + dx ** 2 < r ** 2,                                    # circle
                         (dy.abs() < 0.85 * r) & (dx.abs() < 0.85 * r),                 # square
                         (dy > -r) & (dy < 0.8 * r) & (dx.abs() < (dy + r) * 0.6)])       # triangle
    mask = masks[attrs["shape"], torch.arange(n)]                                        # (n, H, W)
    img = torch.where(mask[:, None], colour[:, :, None, None], torch.full((1, 3, 1, 1), 0.92))
    captions = [shape_caption(keys["size"][s], keys["colour"][col], keys["shape"][sh], keys["position"][p])
                for s, col, sh, p in zip(attrs["size"].tolist(), attrs["colour"].tolist(),
                                         attrs["shape"].tolist(), attrs["position"].tolist())]
    return img * 2 - 1, captions, attrs
