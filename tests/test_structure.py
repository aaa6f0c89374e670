"""The package's shape: chapters import only earlier chapters, no module imports in a cycle, each
lesson chapter's recipes and measurements sit in its experiments module (which nothing below the
table imports, and which takes only recipes from another chapter), no module is longer than a
sitting, and no bool is taken where a number is meant."""
import ast
import importlib
import pathlib

import pytest
import torch

import minidiff
from minidiff import cache as model_cache
from minidiff import recipes
from minidiff import (autoencoder, clip, editing, evaluation, gan, guidance, forward, inverse, loss, metrics, molecules, nets, physics, plots, reverse, samplers, schedules,
                      training, unet, video, widgets)
from minidiff.experiments import beyond_images, editing_images, gans_vs_diffusion

PACKAGE = pathlib.Path(minidiff.__file__).parent
# DESIGN.md, "Concept -> module": the chapters in reading order
CHAPTERS = ["physics", "schedules", "forward", "reverse", "loss", "samplers", "unet", "autoencoder", "clip",
            "guidance", "gan", "editing", "inverse", "molecules", "video"]


MAX_LINES = 400            # a module reads in one sitting
TOP = {"recipes", "__main__"}                 # the top of the house: may name every experiments module


def module_path(module: str) -> pathlib.Path:
    return PACKAGE.joinpath(*module.split(".")).with_suffix(".py")


def is_module(module: str) -> bool:
    return module_path(module).exists() or (PACKAGE.joinpath(*module.split(".")) / "__init__.py").exists()


def imported_names(module: str) -> dict[str, set[str]]:
    """Every minidiff module ``module`` imports, at the top or inside a function, with the names it
    takes from each (empty for a plain import of the module). Modules are named from the package
    root: "cache", "experiments.common"."""
    tree = ast.parse(module_path(module).read_text())
    here = module.split(".")[:-1]                       # the package the module sits in
    found = {}

    def add(target, names=()):
        if target and target != module:
            found.setdefault(target, set()).update(names)

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1] if node.level > 1 else here
                base = ".".join(base + (node.module.split(".") if node.module else []))
            elif node.module and (node.module == "minidiff" or node.module.startswith("minidiff.")):
                base = node.module[len("minidiff."):] if node.module != "minidiff" else ""
            else:
                continue
            for a in node.names:
                sub = f"{base}.{a.name}" if base else a.name
                if is_module(sub):                          # from . import data / from .experiments import x
                    add(sub)
                else:                                       # from .cache import Recipe
                    add(base, {a.name})
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("minidiff."):
                    add(a.name[len("minidiff."):])
    return found


def minidiff_imports(module: str) -> set[str]:
    return set(imported_names(module))


def all_modules() -> list[str]:
    return sorted(".".join(p.relative_to(PACKAGE).with_suffix("").parts) for p in PACKAGE.rglob("*.py")
                  if p.stem != "__init__" and p.stem != "__main__")


def experiments() -> list[str]:
    return [m for m in all_modules() if m.startswith("experiments.")]


def test_the_import_graph_is_read_correctly():
    assert minidiff_imports("samplers") >= {"forward", "reverse", "schedules", "_checks"}
    assert "data" in minidiff_imports("analytic")
    latent = imported_names("experiments.latent_diffusion")
    assert latent["cache"] >= {"Recipe", "config"} and "unet_kwargs" in latent["experiments.common"]
    assert "autoencoder" in latent and "experiments.common" in minidiff_imports("experiments.generating_images")
    assert imported_names("experiments.gans_vs_diffusion")["experiments.generating_images"] == {
        "FASHION_CLASSIFIER", "FASHION_DDPM"}
    assert "experiments.text_conditioning" in minidiff_imports("recipes")
    assert {"data", "loss", "schedules"} <= minidiff_imports("experiments.common")      # from .. import a, b


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


def test_no_chapter_or_infrastructure_module_imports_an_experiments_module():
    for m in all_modules():
        if m in TOP or m.startswith("experiments."):
            continue
        wrong = {i for i in minidiff_imports(m) if i.startswith("experiments") or i in TOP}
        assert not wrong, f"{m} imports {sorted(wrong)}: only recipes and the CLI name the chapters' experiments"


def test_an_experiments_module_takes_only_recipes_from_another_chapter():
    for m in experiments():
        for other, names in imported_names(m).items():
            assert other not in TOP, f"{m} imports {other}: the table imports the chapters, not the other way"
            if not other.startswith("experiments.") or other == "experiments.common":
                continue
            assert m != "experiments.common", f"experiments.common imports the chapter {other}"
            assert names, f"{m} imports the whole of {other}: take the recipes it builds on by name"
            mod = importlib.import_module(f"minidiff.{other}")
            not_recipes = sorted(n for n in names if not isinstance(getattr(mod, n), model_cache.Recipe))
            assert not not_recipes, f"{m} takes {not_recipes} from {other}: only its recipes may cross chapters"


def test_every_recipe_lives_in_an_experiments_module_and_the_table_names_them_all():
    defined = {}
    for m in experiments():
        mod = importlib.import_module(f"minidiff.{m}")
        for name, value in vars(mod).items():
            if isinstance(value, model_cache.Recipe) and value.train.__module__ == mod.__name__:
                defined[value.name] = value
    assert defined and set(defined) == set(recipes.RECIPES)
    assert all(recipes.RECIPES[n] is r for n, r in defined.items())


def test_the_shared_yardstick_holds_no_chapter_code():
    """evaluation and the cache lean on no chapter past guidance: zero-shot CLIP, GAN grids, inpainting,
    reconstructions, molecules and clips are measured in their chapters' experiments modules."""
    late = {"clip", "gan", "editing", "inverse", "molecules", "video"}
    for m in ("evaluation", "cache", "recipes"):
        assert not minidiff_imports(m) & late, m


def test_no_module_is_longer_than_a_sitting():
    for p in PACKAGE.rglob("*.py"):
        n = len(p.read_text().splitlines())
        assert n <= MAX_LINES, f"{p.relative_to(PACKAGE)} has {n} lines (at most {MAX_LINES}): split it by idea"


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
    ("noise", lambda b: gans_vs_diffusion.settings_tuned({}, {}, [], noise=b)),
    ("acceleration", lambda b: inverse.cartesian_mask(16, b)),
    ("size", lambda b: inverse.cartesian_mask(b, 4)),
    ("sigma", lambda b: inverse.measure(torch.zeros(1, 1, 8, 8), torch.ones(8, 8, dtype=torch.bool), sigma=b)),
    ("data_range", lambda b: inverse.psnr(torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8), b)),
    ("window", lambda b: inverse.ssim(torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8), 2.0, b)),
    ("factor", lambda b: editing_images.low_frequency_distance(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), b)),
    ("sigma", lambda b: inverse.make_problem("denoise", torch.zeros(1, 1, 8, 8), sigma=b)),
    ("n", lambda b: molecules.make_molecules(b)),
    ("type_scale", lambda b: molecules.to_features(torch.zeros(1, 6, 3), torch.zeros(1, 6, dtype=torch.long), b)),
    ("width", lambda b: molecules.AtomTransformer(width=b)),
    ("frames", lambda b: video.moving_shapes(2, frames=b)),
    ("patch", lambda b: video.SpaceTimeTransformer(patch=b)),
    ("per_class", lambda b: beyond_images.class_balanced(torch.tensor([0, 1]), b)),
])
@pytest.mark.parametrize("flag", [True, False])
def test_no_bool_where_a_number_is_meant(name, call, flag):
    with pytest.raises(TypeError, match=name):
        call(flag)
