"""Diffusion on a set instead of a grid: molecule-like point clouds (lesson 12).

A molecule here is 6 atoms, each a point in 3-D with a type (C, N or O): no pixels, no order.
The data are made on the spot (``make_molecules``), two kinds at chemistry's textbook geometry:

* **rings**: a planar regular hexagon, every bond ``RING_BOND`` = 1.40 Å (the aromatic C–C bond
  of benzene), every bond angle 120°; carbon, with one atom made nitrogen half of the time
  (pyridine);
* **chains**: a zig-zag of ``CHAIN_BOND`` = 1.54 Å bonds (the C–C single bond of alkanes) at the
  tetrahedral angle 109.47°, every torsion 180° (the extended, all-anti conformer of hexane);
  carbon, with each end made oxygen half of the time (an alcohol's O–H end, hydrogens left out).
  Chains with every staggered torsion (60°, 180°, 300°: 25 conformers) are harder: the same small
  model and budget made 45% valid molecules from them, against 97% here (one run each, measured
  while choosing the data), so the lesson keeps the rigid chain.

Each molecule is rotated at random, centred and its atoms shuffled. A molecule is the tensor
(6, 3 + 3): coordinates in Å and the type's one-hot times ``type_scale``. Diffusion runs on that
tensor with the package's own loss and samplers, with two changes that make it a diffusion on
*sets of points* (Hoogeboom, Satorras, Vignac & Welling 2022, "Equivariant diffusion for molecule
generation in 3D", EDM):

* translation: coordinates live in the zero centre-of-mass subspace. The noise's coordinates are
  centred (``centred_noise``), the denoiser centres what it reads and what it returns, and the
  sampler's hook centres x after every step;
* permutation: the denoiser (``AtomTransformer``) is a Transformer over atoms with no positional
  encoding, so permuting the atoms permutes its output (the tests check it). It reads the
  geometry only through the pairs' distances and moves the atoms along the pairs' difference
  vectors (its output, with the recipes' x0 prediction, is the refined positions), so it is also
  rotation-equivariant, as EDM's EGNN is (the tests check that too).

EDM scales the one-hot types against the coordinates (0.25 in its QM9 model; its Table 10 reports
the ablation): features of a small scale are decided late in the reverse process, after the
geometry, which they then follow. Lesson 12 measures the same ablation.

``validity`` reads a generated molecule back as chemistry: atoms closer than ``BOND_CUTOFF`` are
bonded; the bond graph must be a 6-ring or a 6-chain; every bond within ``LENGTH_TOL`` of its
kind's length and every bond angle within ``ANGLE_TOL`` of its kind's angle; nitrogen only in a
ring (several N in one ring pass: the rule is chemistry's, not the data's at-most-one), oxygen
only at a chain's end.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_float, check_int, check_tensor
from .nets import timestep_embedding
from .samplers import sample
from .schedules import NoiseSchedule

__all__ = ["ATOM_TYPES", "ATOMS", "RING_BOND", "CHAIN_BOND", "RING_ANGLE", "CHAIN_ANGLE", "BOND_CUTOFF",
           "LENGTH_TOL", "ANGLE_TOL", "make_molecules", "to_features", "from_features", "centre", "centred_noise",
           "molecule_checks", "validity", "AtomTransformer", "sample_molecules"]

ATOM_TYPES = ("C", "N", "O")
ATOMS = 6
RING_BOND, CHAIN_BOND = 1.40, 1.54                    # Å
RING_ANGLE, CHAIN_ANGLE = 120.0, 109.47               # degrees
CHAIN_TORSION = 180.0                                 # degrees: all-anti
BOND_CUTOFF = 1.8      # Å: bonds are 1.40-1.54, the nearest non-bonded pairs (1-3) 2.42-2.51
LENGTH_TOL, ANGLE_TOL = 0.1, 10.0                     # Å, degrees


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


def _next_atom(a, b, c, length: float, angle: float, torsion: torch.Tensor) -> torch.Tensor:
    """The atom d bonded to c with |cd| = length, angle bcd = angle and torsion abcd = torsion
    (degrees; the natural extension of reference frame, "NeRF", Parsons et al. 2005)."""
    bc = _unit(c - b)
    n = _unit(torch.linalg.cross(b - a, bc))
    m = torch.linalg.cross(n, bc)
    theta, phi = math.radians(angle), torch.deg2rad(torsion)[:, None]
    return c + length * (-math.cos(theta) * bc + math.sin(theta) * (torch.cos(phi) * m + torch.sin(phi) * n))


def _random_rotations(n: int, generator) -> torch.Tensor:
    """n rotation matrices, uniform on SO(3): QR of a Gaussian matrix with the signs fixed."""
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    det = torch.linalg.det(q)
    q[:, :, 0] *= det[:, None]                         # a reflection becomes a rotation
    return q


def make_molecules(n: int, generator: torch.Generator | None = None, ring_fraction: float = 0.5):
    """``n`` molecules (see the module docstring): coordinates (n, 6, 3) in Å, centred, and type
    indices (n, 6) into ``ATOM_TYPES``; a share ``ring_fraction`` of them rings, the rest chains."""
    n = check_int("n", n, low=1)
    ring_fraction = check_float("ring_fraction", ring_fraction, low=0.0, high=1.0)
    is_ring = torch.rand(n, generator=generator) < ring_fraction
    # rings: a hexagon's circumradius equals its side
    k = torch.arange(ATOMS, dtype=torch.float64) * (2 * math.pi / ATOMS)
    ring = RING_BOND * torch.stack([torch.cos(k), torch.sin(k), torch.zeros_like(k)], dim=1).expand(n, -1, -1)
    ring_types = torch.zeros(n, ATOMS, dtype=torch.long)
    nitrogen = torch.rand(n, generator=generator) < 0.5
    ring_types[nitrogen, 0] = 1
    # chains: three atoms in a plane, then one more per torsion
    half = math.radians(CHAIN_ANGLE) / 2
    atoms = [torch.tensor([-CHAIN_BOND * math.sin(half), 0.0, 0.0], dtype=torch.float64).expand(n, 3),
             torch.tensor([0.0, CHAIN_BOND * math.cos(half), 0.0], dtype=torch.float64).expand(n, 3),
             torch.tensor([CHAIN_BOND * math.sin(half), 0.0, 0.0], dtype=torch.float64).expand(n, 3)]
    torsion = torch.full((n,), CHAIN_TORSION, dtype=torch.float64)
    for _ in range(ATOMS - 3):
        atoms.append(_next_atom(*atoms[-3:], CHAIN_BOND, CHAIN_ANGLE, torsion))
    chain = torch.stack(atoms, dim=1)
    chain_types = torch.zeros(n, ATOMS, dtype=torch.long)
    ends = torch.rand(n, 2, generator=generator) < 0.5
    chain_types[:, 0] = torch.where(ends[:, 0], 2, 0)
    chain_types[:, -1] = torch.where(ends[:, 1], 2, 0)
    coords = torch.where(is_ring[:, None, None], ring, chain)
    types = torch.where(is_ring[:, None], ring_types, chain_types)
    coords = centre(coords) @ _random_rotations(n, generator).transpose(1, 2)
    order = torch.rand(n, ATOMS, generator=generator).argsort(dim=1)        # no atom order
    coords = coords.gather(1, order[..., None].expand(-1, -1, 3))
    return coords.float(), types.gather(1, order)


def centre(coords: torch.Tensor) -> torch.Tensor:
    """Coordinates (..., atoms, 3) moved to zero centre of mass (all atoms weigh the same here)."""
    return coords - coords.mean(dim=-2, keepdim=True)


def _check_molecules(coords: torch.Tensor, types: torch.Tensor) -> None:
    check_tensor("coords", coords)
    if coords.dim() != 3 or coords.shape[-1] != 3 or tuple(types.shape) != tuple(coords.shape[:2]):
        raise ValueError(f"coords must be (n, atoms, 3) and types (n, atoms), got {tuple(coords.shape)} and "
                         f"{tuple(types.shape)}")


def to_features(coords: torch.Tensor, types: torch.Tensor, type_scale: float) -> torch.Tensor:
    """The tensor diffusion runs on: (n, atoms, 3 + len(ATOM_TYPES)), coordinates then
    ``type_scale`` times the one-hot type."""
    type_scale = check_float("type_scale", type_scale, low=0, low_open=True)
    _check_molecules(coords, types)
    return torch.cat([coords, type_scale * F.one_hot(types, len(ATOM_TYPES)).to(coords.dtype)], dim=-1)


def from_features(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Back from features: centred coordinates and the types (argmax of the type features)."""
    return centre(x[..., :3]), x[..., 3:].argmax(dim=-1)


def centred_noise(shape, generator=None, device=None) -> torch.Tensor:
    """Gaussian noise of ``shape`` (n, atoms, 3 + types) with the coordinates projected to zero
    centre of mass: an isotropic Gaussian in that subspace (EDM's zero centre-of-gravity noise),
    each coordinate of variance (atoms - 1) / atoms."""
    noise = torch.randn(shape, generator=generator, device=generator.device if generator is not None else device)
    noise = noise.to(device) if device is not None else noise
    return torch.cat([centre(noise[..., :3]), noise[..., 3:]], dim=-1)


def molecule_checks(coords: torch.Tensor, types: torch.Tensor) -> dict:
    """Each test ``validity`` makes, per molecule (bool tensors (n,)): "ring" and "chain" (the bond
    graph's shape), "lengths", "angles" (every bond and angle of that kind within tolerance) and
    "types" (N only in rings, O only at chain ends)."""
    _check_molecules(coords, types)
    coords = coords.double()
    n, a = coords.shape[:2]
    eye = torch.eye(a, dtype=torch.bool, device=coords.device)
    dist = torch.cdist(coords, coords)
    bonded = (dist < BOND_CUTOFF) & ~eye
    degree = bonded.sum(-1)
    reach = torch.linalg.matrix_power((bonded | eye).double(), a - 1) > 0        # paths of up to a-1 bonds
    connected = reach.all(dim=(1, 2))
    ring = connected & (degree == 2).all(1)
    chain = connected & ((degree == 1).sum(1) == 2) & ((degree == 2).sum(1) == a - 2)
    bond_length = torch.where(ring, RING_BOND, CHAIN_BOND)[:, None, None]
    lengths = ((dist - bond_length).abs() <= LENGTH_TOL).logical_or(~bonded).all(dim=(1, 2))
    u = F.normalize(coords[:, None, :, :] - coords[:, :, None, :], dim=-1)    # u[j, i]: from j towards i
    cos = torch.einsum("njid,njkd->njik", u, u).clamp(-1, 1)
    pair = bonded[:, :, :, None] & bonded[:, :, None, :] & ~eye[None, None]  # i, k both bonded to j
    angle = torch.rad2deg(torch.acos(cos))
    target = torch.where(ring, RING_ANGLE, CHAIN_ANGLE)[:, None, None, None]
    angles = ((angle - target).abs() <= ANGLE_TOL).logical_or(~pair).all(dim=(1, 2, 3))
    nitrogen_ok = ((types == 1).sum(1) == 0) | ring
    oxygen_ok = ((types == 2) & (degree != 1)).sum(1) == 0
    return {"ring": ring, "chain": chain, "lengths": lengths, "angles": angles, "types": nitrogen_ok & oxygen_ok}


def validity(coords: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
    """True where a molecule passes every check of ``molecule_checks`` (bool (n,))."""
    c = molecule_checks(coords, types)
    return (c["ring"] | c["chain"]) & c["lengths"] & c["angles"] & c["types"]


def _pair_features(coords: torch.Tensor, centres: torch.Tensor, gamma: float):
    """Difference vectors x_i - x_j (n, a, a, 3), and invariant pair features: radial basis
    functions of |x_i - x_j| and the distance itself (n, a, a, rbf + 1)."""
    diff = coords[:, :, None, :] - coords[:, None, :, :]
    dist = diff.norm(dim=-1, keepdim=True)
    return diff, dist, torch.cat([torch.exp(-gamma * (dist - centres) ** 2), dist], dim=-1)


class _AtomBlock(nn.Module):
    """Pre-norm self-attention over atoms, then an MLP, both residual; the pair features enter as a
    learned bias on each head's logits and a learned term on the values,
    out_i = sum_j a_ij (v_j + e_ij), a_ij = softmax_j(q_i . k_j / sqrt(d) + b_ij).
    Then the atoms move: x_i <- x_i + sum_j phi(z_i + z_j + pair_ij) (x_i - x_j) / (|x_i - x_j| + 1),
    z = a projection of the tokens: the coordinate update of Satorras, Hoogeboom & Welling 2021,
    "E(n) equivariant graph neural networks", eq. 4, with EDM's (|x_i - x_j| + 1) normalisation in
    place of eq. 4's 1 / (atoms - 1), and phi read from the tokens and pair features instead of
    an edge message."""

    def __init__(self, width: int, heads: int, pair: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.bias, self.pair_value = nn.Linear(pair, heads), nn.Linear(pair, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.SiLU(), nn.Linear(4 * width, width))
        self.hidden, self.pair_in = nn.Linear(width, width), nn.Linear(pair, width)
        self.phi = nn.Sequential(nn.SiLU(), nn.Linear(width, 1))

    def forward(self, h, x, diff, dist, pair):
        b, a, w = h.shape
        d = w // self.heads
        q, k, v = (z.reshape(b, a, self.heads, d).transpose(1, 2) for z in self.qkv(self.norm1(h)).chunk(3, dim=-1))
        logits = q @ k.transpose(-1, -2) / math.sqrt(d) + self.bias(pair).permute(0, 3, 1, 2)   # (b, heads, a, a)
        weights = logits.softmax(dim=-1)
        e = self.pair_value(pair).reshape(b, a, a, self.heads, d).permute(0, 3, 1, 2, 4)     # (b, heads, a, a, d)
        out = weights @ v + (weights[..., None] * e).sum(-2)
        h = h + self.proj(out.transpose(1, 2).reshape(b, a, w))
        h = h + self.mlp(self.norm2(h))
        z = self.hidden(self.norm3(h))
        phi = self.phi(z[:, :, None] + z[:, None, :] + self.pair_in(pair))                    # symmetric in i, j
        return h, x + (phi * diff / (dist + 1)).sum(dim=2)


class AtomTransformer(nn.Module):
    """The denoiser: ``model(x_t, t) -> prediction`` for x_t of shape (n, atoms, 3 + types).

    A Transformer over atoms with no positional encoding (atoms are a set, so permuting them
    permutes the output). Its tokens start from the type features and the time alone, and it sees
    the geometry only through the pairs' distances (radial basis functions of |x_i - x_j|, and the
    raw distance, whose precision the last, finest steps need), so the tokens are invariant to
    rotations and translations. After every block the atoms move along the pairs' difference
    vectors by invariant amounts (``_AtomBlock``), and the next block reads the moved atoms'
    distances: the geometry is refined layer by layer, and the moves rotate with the molecule.

    With ``skip`` (for ``prediction="x0"``) the coordinates returned are the moved atoms, x0_hat
    refined from x_t; without it, the total move, for a prediction that is not a position (eps
    or v). Either is centred."""

    def __init__(self, types: int = len(ATOM_TYPES), width: int = 64, layers: int = 4, heads: int = 4,
                 rbf: int = 32, max_distance: float = 6.0, skip: bool = True):
        super().__init__()
        if not isinstance(skip, bool):
            raise TypeError(f"skip must be a bool, got {type(skip).__name__}")
        self.skip = skip
        self.types = check_int("types", types, low=1)
        width = check_int("width", width, low=1)
        layers = check_int("layers", layers, low=1)
        heads = check_int("heads", heads, low=1)
        rbf = check_int("rbf", rbf, low=2)
        max_distance = check_float("max_distance", max_distance, low=0, low_open=True)
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        self.width = width
        self.register_buffer("centres", torch.linspace(0.0, max_distance, rbf))
        self.gamma = ((rbf - 1) / max_distance) ** 2        # one basis function per centre spacing
        self.embed = nn.Linear(types, width)
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(_AtomBlock(width, heads, rbf + 1) for _ in range(layers))
        self.type_out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, types))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        start = coords = centre(x[..., :3])
        h = self.embed(x[..., 3:]) + self.time(timestep_embedding(t, self.width, dtype=x.dtype))[:, None]
        for block in self.blocks:
            h, coords = block(h, coords, *_pair_features(coords, self.centres, self.gamma))
        out = coords if self.skip else coords - start
        return torch.cat([centre(out), self.type_out(h)], dim=-1)


@torch.no_grad()
def sample_molecules(model, s: NoiseSchedule, n: int, *, sampler: str = "ddpm", steps: int | None = None,
                     generator=None, device=None, progress: bool = False, prediction: str | None = None):
    """Draw ``n`` molecules with ``samplers.sample``: x_T is ``centred_noise`` and the hook keeps
    every x in the zero centre-of-mass subspace. ``prediction``: what the model predicts (default
    "x0" for an ``AtomTransformer`` with ``skip``, else "eps"). Returns (coords (n, atoms, 3),
    types (n, atoms)) on the CPU."""
    n = check_int("n", n, low=1)
    if prediction is None:
        prediction = "x0" if getattr(model, "skip", False) else "eps"
    device = torch.device(device) if device is not None else next(model.parameters()).device
    x_T = centred_noise((n, ATOMS, 3 + model.types), generator, device)

    def keep_centred(x, t, x0_hat):
        return torch.cat([centre(x[..., :3]), x[..., 3:]], dim=-1)

    x = sample(model, s, x_T.shape, sampler=sampler, steps=steps, x_T=x_T, generator=generator,
               prediction=prediction, hook=keep_centred, progress=progress)
    return tuple(v.cpu() for v in from_features(x))
