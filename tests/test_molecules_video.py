"""Lesson 12's sets and clips: the molecule data and its validity check, the atom denoiser's
symmetries, the moving-shape clips and their motion score, the space-time denoiser's shapes."""
import itertools
import math

import pytest
import torch

from minidiff import molecules, recipes, samplers, schedules, video


def _rotation(seed: int) -> torch.Tensor:
    return molecules._random_rotations(1, torch.Generator().manual_seed(seed))[0].float()


def test_made_molecules_have_the_stated_geometry_and_pass_validity():
    coords, types = molecules.make_molecules(400, torch.Generator().manual_seed(0))
    assert coords.shape == (400, 6, 3) and types.shape == (400, 6)
    assert coords.mean(1).abs().max() < 1e-5                             # centred
    checks = molecules.molecule_checks(coords, types)
    assert molecules.validity(coords, types).all()
    assert 0.4 < checks["ring"].float().mean() < 0.6 and not (checks["ring"] & checks["chain"]).any()
    # bond lengths straight from the coordinates, by the graph's kind
    d = torch.cdist(coords.double(), coords.double())
    bonds = (d > 0) & (d < molecules.BOND_CUTOFF)
    ring = checks["ring"][:, None, None].expand_as(d)
    assert torch.allclose(d[bonds & ring], torch.tensor(molecules.RING_BOND, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(d[bonds & ~ring], torch.tensor(molecules.CHAIN_BOND, dtype=torch.float64), atol=1e-4)
    assert (d[~bonds & (d > 0)] > 2.4).all()                            # no clash: 1-3 pairs and beyond
    assert (types[checks["ring"]] != 2).all() and (types[checks["chain"]] != 1).all()


def test_a_chains_bond_angle_by_the_law_of_cosines():
    coords, _ = molecules.make_molecules(50, torch.Generator().manual_seed(1), ring_fraction=0.0)
    d = torch.cdist(coords.double(), coords.double())
    b = molecules.CHAIN_BOND
    # 1-3 pairs of a chain lie at 2 b sin(theta / 2); the smallest non-bonded distance is one
    expected = 2 * b * math.sin(math.radians(molecules.CHAIN_ANGLE) / 2)
    assert torch.allclose(d[d > 1.8].min(), torch.tensor(expected, dtype=torch.float64), atol=1e-4)


def test_validity_rejects_what_breaks_each_rule():
    coords, types = molecules.make_molecules(64, torch.Generator().manual_seed(2))
    assert molecules.validity(coords, types).all()
    stretched = coords * 1.1                                              # every bond 10% too long
    assert not molecules.validity(stretched, types).any()
    assert molecules.molecule_checks(stretched, types)["ring"].any()     # the graph survives, the lengths do not
    moved = coords.clone()
    moved[:, 0] += 5.0                                                    # one atom pulled away: graph broken
    assert not molecules.validity(moved, types).any()
    wrong = types.clone()
    ring = molecules.molecule_checks(coords, types)["ring"]
    wrong[ring, 0] = 2                                                    # oxygen inside a ring
    assert not molecules.validity(coords, wrong)[ring].any()
    with pytest.raises(ValueError, match="coords must be"):
        molecules.validity(coords[0], types[0])
    with pytest.raises(ValueError, match="too small"):
        video.moving_shapes(2, frames=8, size=12)


def test_features_round_trip_and_the_noise_is_centred():
    coords, types = molecules.make_molecules(8, torch.Generator().manual_seed(3))
    x = molecules.to_features(coords, types, 0.25)
    assert x.shape == (8, 6, 6) and torch.allclose(x[..., 3:].sum(-1), torch.tensor(0.25))
    c, t = molecules.from_features(x)
    assert torch.allclose(c, coords, atol=1e-6) and torch.equal(t, types)
    noise = molecules.centred_noise((4000, 6, 6), torch.Generator().manual_seed(0))
    assert noise[..., :3].sum(1).abs().max() < 1e-5
    # an isotropic Gaussian in the zero-mean subspace: each coordinate has variance (atoms - 1) / atoms
    assert abs(noise[..., :3].var().item() - 5 / 6) < 0.02 and abs(noise[..., 3:].var().item() - 1) < 0.02
    with pytest.raises(ValueError, match="type_scale"):
        molecules.to_features(coords, types, 0.0)


def test_the_atom_transformer_is_permutation_and_rotation_equivariant():
    torch.manual_seed(0)
    model = molecules.AtomTransformer(width=32, layers=2).eval()
    x, t = torch.randn(3, 6, 6), torch.tensor([0, 300, 999])
    out = model(x, t)
    for seed in range(3):
        perm = torch.randperm(6, generator=torch.Generator().manual_seed(seed))
        assert torch.allclose(model(x[:, perm], t), out[:, perm], atol=1e-5)       # permuting atoms permutes the output
    r = _rotation(4)
    rotated = torch.cat([x[..., :3] @ r.T + torch.tensor([1.0, -2.0, 0.5]), x[..., 3:]], dim=-1)
    out_r = model(rotated, t)
    assert torch.allclose(out_r[..., :3], out[..., :3] @ r.T, atol=1e-5)          # coordinates' eps rotates
    assert torch.allclose(out_r[..., 3:], out[..., 3:], atol=1e-5)                # the types' does not move
    assert out[..., :3].sum(1).abs().max() < 1e-5
    with pytest.raises(ValueError, match="divisible by heads"):
        molecules.AtomTransformer(width=30, heads=4)


def test_sampled_molecules_stay_centred():
    torch.manual_seed(0)
    model = molecules.AtomTransformer(width=16, layers=1)
    s = schedules.linear(T=50)
    coords, types = molecules.sample_molecules(model, s, 5, generator=torch.Generator().manual_seed(0))
    assert coords.shape == (5, 6, 3) and types.shape == (5, 6) and types.max() < 3
    assert coords.mean(1).abs().max() < 1e-5


def test_moving_shapes_move_in_a_straight_line_inside_the_frame():
    clips = video.moving_shapes(300, generator=torch.Generator().manual_seed(0))
    assert clips.shape == (300, 1, 8, 16, 16) and clips.min() == -1 and clips.max() == 1
    assert (clips[..., 0, :] == -1).all() and (clips[..., -1] == -1).all()        # never touches the border
    p = video.centroids(clips)
    speed = (p[:, -1] - p[:, 0]).norm(dim=-1) / 7                # 0.5-1 pixel per frame, read off the pixels
    assert ((speed > 0.48) & (speed < 1.02)).all()
    assert video.motion_error(clips).max() < 0.1                                   # real clips: about 0
    # frames from different clips move nowhere in particular
    shuffled = video.shuffle_frames(clips, torch.Generator().manual_seed(0))
    assert shuffled.shape == clips.shape
    for i, f in [(0, 0), (5, 3), (299, 7)]:                   # every frame is some clip's frame f
        assert any(torch.equal(shuffled[i, :, f], clips[j, :, f]) for j in range(300))
    assert video.motion_error(shuffled).mean() > 1.0


def test_motion_error_is_the_distance_from_a_fitted_line():
    clips = torch.full((1, 1, 4, 16, 16), -1.0)
    positions = [(3, 3), (5, 3), (7, 3), (9, 7)]            # x, y: three steps on a line, then a jump
    for f, (x, y) in enumerate(positions):
        clips[0, 0, f, y, x] = 1.0
    assert torch.allclose(video.centroids(clips)[0], torch.tensor(positions, dtype=torch.float32))
    f = torch.arange(4, dtype=torch.float64)
    p = torch.tensor(positions, dtype=torch.float64)
    a = torch.stack([torch.ones(4, dtype=torch.float64), f], 1)
    fit = a @ torch.linalg.solve(a.T @ a, a.T @ p)                 # the normal equations
    expected = ((p - fit) ** 2).sum(1).mean().sqrt()
    assert torch.allclose(video.motion_error(clips)[0].double(), expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(N, C, F, H, W\)"):
        video.motion_error(clips[0])


@pytest.mark.parametrize("time_attention", [True, False])
def test_the_space_time_transformer_keeps_the_clip_shape(time_attention):
    torch.manual_seed(0)
    model = video.SpaceTimeTransformer(frames=4, size=8, patch=2, width=16, layers=1, heads=2,
                                       time_attention=time_attention).eval()
    x, t = torch.randn(3, 1, 4, 8, 8), torch.tensor([0, 10, 999])
    out = model(x, t)
    assert out.shape == x.shape
    changed = x.clone()
    changed[:, :, 0] += 1.0                                   # change frame 0 only
    moved = (model(changed, t) - out).abs().amax(dim=(0, 1, 3, 4))
    assert moved[0] > 0
    # without time attention the other frames cannot see frame 0
    assert (moved[1:] > 0).all() if time_attention else (moved[1:] == 0).all()
    s = schedules.linear(T=20)
    sample = samplers.sample(model, s, (2, 1, 4, 8, 8), sampler="ddim", steps=5, progress=False,
                             generator=torch.Generator().manual_seed(0))
    assert sample.shape == (2, 1, 4, 8, 8) and torch.isfinite(sample).all()
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, 4, 8, 8\)"):
        model(torch.randn(1, 1, 5, 8, 8), t[:1])
    with pytest.raises(ValueError, match="divisible by patch"):
        video.SpaceTimeTransformer(size=10, patch=4)
    with pytest.raises(TypeError, match="time_attention must be a bool"):
        video.SpaceTimeTransformer(time_attention=1)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDIFF_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


@pytest.mark.parametrize("name,override", [("molecules-ddpm", {"type_scale": 1.0}),
                                           ("video-ddpm", {"time_attention": False})])
def test_the_lesson_12_recipes_train_and_resume_exactly(cache, tmp_path, name, override):
    whole = recipes.load_or_train(name, "tiny", device="cpu", steps=4, progress=False, checkpoint=tmp_path / "w.pt",
                                  **override)
    recipes.load_or_train(name, "tiny", device="cpu", steps=2, progress=False, checkpoint=tmp_path / "p.pt", **override)
    resumed = recipes.load_or_train(name, "tiny", device="cpu", steps=4, progress=False, checkpoint=tmp_path / "p.pt",
                                    **override)
    assert resumed.history == whole.history and len(whole.history) == 4
    for a, b in itertools.zip_longest(whole.ema.model.state_dict().values(), resumed.ema.model.state_dict().values()):
        assert torch.equal(a, b)
    assert all(whole.config[k] == v for k, v in override.items())


def test_show_molecules_draws_one_3d_panel_per_molecule_with_its_bonds():
    import matplotlib
    matplotlib.use("Agg")
    from minidiff import plots

    coords, types = molecules.make_molecules(3, torch.Generator().manual_seed(0))
    fig = plots.show_molecules(coords, types, titles=["a", "b", "c"])
    assert len(fig.axes) == 3 and [a.get_title() for a in fig.axes] == ["a", "b", "c"]
    bonds = [len(a.get_lines()) for a in fig.axes]
    ring = molecules.molecule_checks(coords, types)["ring"]
    assert bonds == [6 if r else 5 for r in ring.tolist()]         # a 6-ring has 6 bonds, a 6-chain 5
