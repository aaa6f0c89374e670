"""The package's shape: chapters import only earlier chapters, no module imports in a cycle, and
no bool is taken where a number is meant."""
import ast
import pathlib

import pytest
import torch

import minidiff
from minidiff import (autoencoder, clip, editing, evaluation, gan, guidance, forward, inverse, loss, metrics, molecules, nets, physics, plots, reverse, samplers, schedules,
                      training, unet, video, widgets)

PACKAGE = pathlib.Path(minidiff.__file__).parent
# DESIGN.md, "Concept -> module": the chapters in reading order
CHAPTERS = ["physics", "schedules", "forward", "reverse", "loss", "samplers", "unet", "autoencoder", "clip",
            "guidance", "gan", "editing", "inverse", "molecules", "video"]


def minidiff_imports(module: str) -> set[str]:
    """Every minidiff module ``module`` imports, at the top or inside a function."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:                     # from .x import y
                found.add(node.module.split(".")[0])
            elif node.level == 1:                                    # from . import x, y
                found.update(a.name for a in node.names)
            elif node.module and node.module.startswith("minidiff."):
                found.add(node.module.split(".")[1])
            elif node.module == "minidiff":
                found.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("minidiff."))
    return found - {module}


def all_modules() -> list[str]:
    return sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))


def test_the_import_graph_is_read_correctly():
    assert minidiff_imports("samplers") >= {"forward", "reverse", "schedules", "_checks"}
    assert "data" in minidiff_imports("analytic")


def test_chapters_import_only_earlier_chapters():
    present = [c for c in CHAPTERS if (PACKAGE / f"{c}.py").exists()]
    assert present[:7] == CHAPTERS[:7]
    for k, chapter in enumerate(present):
        later = set(present[k + 1:])
        wrong = minidiff_imports(chapter) & later
        assert not wrong, f"chapter {chapter} imports later chapter(s) {sorted(wrong)}"
        # a non-chapter module it leans on must not itself lean on a later chapter
        for helper in minidiff_imports(chapter) - set(present):
            assert not (minidiff_imports(helper) & later), (chapter, helper)


def test_no_import_cycles():
    graph = {m: minidiff_imports(m) & set(all_modules()) for m in all_modules()}
    state = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", "import cycle: " + " -> ".join(path + [m])
        state[m] = "open"
        for n in sorted(graph[m]):
            visit(n, path + [m])
        state[m] = "done"

    for m in graph:
        visit(m, [])


s10 = schedules.linear(T=10)
x2 = torch.zeros(2, 2)


@pytest.mark.parametrize("name, call", [
    ("T", lambda b: schedules.linear(T=b)),
    ("beta_end", lambda b: schedules.linear(T=10, beta_end=b)),
    ("s", lambda b: schedules.cosine(T=10, s=b)),
    ("t", lambda b: forward.q_sample(s10, x2, b)),
    ("eta", lambda b: samplers.sample(lambda x, t: x, s10, (2, 2), "ddim", eta=b, progress=False)),
    ("clip_x0", lambda b: samplers.sample(lambda x, t: x, s10, (2, 2), clip_x0=b, progress=False)),
    ("steps", lambda b: samplers.sample(lambda x, t: x, s10, (2, 2), steps=b, progress=False)),
    ("start", lambda b: samplers.sample(lambda x, t: x, s10, (2, 2), start=b, x_T=x2, progress=False)),
    ("eta", lambda b: samplers.ddim_step(s10, 3, x2, x2, x2, eta=b)),
    ("clip_x0", lambda b: reverse.p_mean_variance(s10, x2, x2, 3, clip_x0=b)),
    ("n", lambda b: reverse.timesteps(10, b)),
    ("min_snr_gamma", lambda b: loss.diffusion_loss(lambda x, t: x, s10, x2, min_snr_gamma=b)),
    ("gamma", lambda b: loss.snr_weight(s10, torch.tensor([1]), "eps", b)),
    ("decay", lambda b: training.EMA(torch.nn.Linear(1, 1), decay=b)),
    ("warmup", lambda b: training.EMA(torch.nn.Linear(1, 1), warmup=b)),
    ("lr", lambda b: training.train(torch.nn.Linear(1, 1), lambda m, x: m(x).sum(), lambda k: torch.zeros(1, 1),
                                    1, lr=b, progress=False)),
    ("grad_clip", lambda b: training.train(torch.nn.Linear(1, 1), lambda m, x: m(x).sum(),
                                           lambda k: torch.zeros(1, 1), 1, grad_clip=b, progress=False)),
    ("log_every", lambda b: training.train(torch.nn.Linear(1, 1), lambda m, x: m(x).sum(),
                                           lambda k: torch.zeros(1, 1), 1, log_every=b, progress=False)),
    ("n_projections", lambda b: metrics.sliced_wasserstein(x2, x2, n_projections=b)),
    ("k", lambda b: metrics.precision_recall(x2, x2, k=b)),
    ("dim", lambda b: nets.timestep_embedding(torch.tensor([1]), b)),
    ("base_channels", lambda b: unet.UNet(base_channels=b)),
    ("steps", lambda b: evaluation.train_classifier(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]), b)),
    ("dt", lambda b: physics.brownian_motion(4, 3, dt=b)),
    ("dx", lambda b: physics.grid_variance(torch.ones(4, 4), dx=b)),
    ("dim", lambda b: physics.gaussian_entropy(1.0, dim=b)),
    ("theta", lambda b: physics.ou_marginal(0.0, 1.0, 1.0, theta=b)),
    ("dropout", lambda b: unet.UNet(dropout=b)),
    ("heads", lambda b: unet.UNet(heads=b)),
    ("max_period", lambda b: nets.timestep_embedding(torch.tensor([1]), 8, max_period=b)),
    ("s", lambda b: schedules.cosine_alpha_bar(torch.zeros(3), s=b)),
    ("num_classes", lambda b: metrics.class_coverage(torch.tensor([0, 1]), num_classes=b)),
    ("batch_size", lambda b: evaluation.train_classifier(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]), 1,
                                                         batch_size=b)),
    ("width", lambda b: evaluation.FashionClassifier(width=b)),
    ("nrow", lambda b: plots.image_grid(torch.zeros(2, 1, 4, 4), nrow=b)),
    ("dpi", lambda b: plots.figure_png(None, dpi=b)),
    ("seed", lambda b: widgets.timestep_slider(seed=b)),
    ("theta", lambda b: physics.ou_process(x2, 3, theta=b)),
    ("latent_channels", lambda b: autoencoder.AutoEncoder(latent_channels=b)),
    ("kl_weight", lambda b: autoencoder.vae_loss(autoencoder.AutoEncoder(base_channels=8), torch.zeros(1, 1, 8, 8),
                                                 kl_weight=b)),
    ("scale", lambda b: autoencoder.LatentSpace(None, b)),
    ("n", lambda b: evaluation.draw_samples(lambda x, t: x, s10, (1, 2, 2), b, progress=False)),
    ("context_length", lambda b: clip.Tokenizer(["a"], context_length=b)),
    ("width", lambda b: clip.TextEncoder(10, width=b)),
    ("k", lambda b: clip.retrieval_recall(x2, x2, k=b)),
    ("scale", lambda b: guidance.cfg(lambda x, t: x, b, {"y": x2})),
    ("p", lambda b: guidance.drop_condition(x2, b)),
    ("w", lambda b: guidance.scale_from_w(b)),
    ("z_dim", lambda b: gan.GAN(z_dim=b)),
    ("width", lambda b: gan.GAN(width=b)),
    ("num_classes", lambda b: gan.collapse_stats(torch.zeros(4, 1, 28, 28), None, b)),
    ("jump_length", lambda b: editing.repaint_schedule(5, b)),
    ("resample", lambda b: editing.repaint_schedule(5, 1, b)),
    ("strength", lambda b: editing.sdedit_start(10, b)),
    ("border", lambda b: editing.border_mask((8, 8), b)),
    ("size", lambda b: editing.make_mask("half", b)),
    ("block", lambda b: editing.rough_sketch(torch.zeros(1, 1, 8, 8), b)),
    ("noise", lambda b: evaluation.settings_tuned({}, {}, [], noise=b)),
    ("acceleration", lambda b: inverse.cartesian_mask(16, b)),
    ("size", lambda b: inverse.cartesian_mask(b, 4)),
    ("sigma", lambda b: inverse.measure(torch.zeros(1, 1, 8, 8), torch.ones(8, 8, dtype=torch.bool), sigma=b)),
    ("data_range", lambda b: inverse.psnr(torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8), b)),
    ("window", lambda b: inverse.ssim(torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8), 2.0, b)),
    ("factor", lambda b: evaluation.low_frequency_distance(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), b)),
    ("sigma", lambda b: inverse.make_problem("denoise", torch.zeros(1, 1, 8, 8), sigma=b)),
    ("n", lambda b: molecules.make_molecules(b)),
    ("type_scale", lambda b: molecules.to_features(torch.zeros(1, 6, 3), torch.zeros(1, 6, dtype=torch.long), b)),
    ("width", lambda b: molecules.AtomTransformer(width=b)),
    ("frames", lambda b: video.moving_shapes(2, frames=b)),
    ("patch", lambda b: video.SpaceTimeTransformer(patch=b)),
    ("per_class", lambda b: evaluation.class_balanced(torch.tensor([0, 1]), b)),
])
@pytest.mark.parametrize("flag", [True, False])
def test_no_bool_where_a_number_is_meant(name, call, flag):
    with pytest.raises(TypeError, match=name):
        call(flag)
