"""The recipe table and the model cache: train once, serve the same run, resume, never mix configs."""
import dataclasses

import pytest
import torch

from minidiff import cache as model_cache
from minidiff import data, recipes
from minidiff.device import SCALES
from minidiff.experiments import gans_vs_diffusion, generating_images, latent_diffusion, text_conditioning

needs_data = pytest.mark.skipif(
    not (data.SYSTEM_DATA_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="needs the Debian package dataset-fashion-mnist (.ci/run installs it)")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDIFF_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


def test_every_recipe_has_every_scale_and_is_named_by_its_name():
    for name, recipe in recipes.RECIPES.items():
        assert set(recipe.settings) == set(SCALES) and recipe.name == name, name
    with pytest.raises(ValueError, match="every scale"):
        model_cache.Recipe("half", {"tiny": {}}, train=None)
    with pytest.raises(TypeError, match="recipe must be a cache.Recipe"):
        model_cache.config("fashion-ddpm", "tiny")


def test_config_and_its_cache_path(cache):
    cfg = recipes.config("fashion-ddpm", "tiny")
    assert cfg["scale"] == "tiny" and cfg["seed"] == 0 and cfg["steps"] == 150 and cfg["T"] == 1000
    other = recipes.config("fashion-ddpm", "tiny", steps=3, seed=2)
    assert other["steps"] == 3 and other["seed"] == 2 and other["unet"] == cfg["unet"]
    assert model_cache.cache_path(cfg) == model_cache.cache_path(recipes.config("fashion-ddpm", "tiny"))
    assert model_cache.cache_path(cfg) != model_cache.cache_path(other)
    assert model_cache.cache_path(cfg).parent == cache and model_cache.cache_path(cfg).name.startswith("fashion-ddpm-tiny-")
    with pytest.raises(ValueError, match=r"has no setting stepz; allowed: .*steps"):
        recipes.config("fashion-ddpm", "tiny", stepz=3)
    with pytest.raises(ValueError, match="unknown recipe 'gan'"):
        recipes.config("gan", "tiny")
    RECIPE = recipes.RECIPES["fashion-ddpm"].settings["tiny"]
    other["unet"]["base_channels"] = 99                     # a config is a copy: the table is untouched
    assert RECIPE["unet"]["base_channels"] == 16


@needs_data
def test_a_finished_run_is_served_from_the_cache(cache):
    run = recipes.load_or_train("fashion-ddpm", "tiny", device="cpu", steps=3, progress=False)
    assert len(run.history) == 3 and not run.model.training and run.seconds > 0
    path = model_cache.cache_path(run.config)
    stamp = path.stat().st_mtime_ns
    again = recipes.load_or_train("fashion-ddpm", "tiny", device="cpu", steps=3, progress=False)
    assert path.stat().st_mtime_ns == stamp                  # nothing trained, nothing written
    assert again.history == run.history and again.seconds == run.seconds   # the time it took back then
    for a, b in zip(run.ema.model.state_dict().values(), again.ema.model.state_dict().values()):
        assert torch.equal(a, b)
    assert [p.name for p in cache.iterdir()] == [path.name]


@needs_data
def test_an_interrupted_run_resumes_to_the_uninterrupted_result(cache, tmp_path):
    whole = recipes.load_or_train("fashion-ddpm", "tiny", device="cpu", steps=4, progress=False,
                                  checkpoint=tmp_path / "whole.pt")
    # what an interruption after step 2 leaves behind: the same run's checkpoint at step 2
    cfg4 = recipes.config("fashion-ddpm", "tiny", steps=4)
    recipes.RECIPES["fashion-ddpm"].train(recipes.config("fashion-ddpm", "tiny", steps=2), model_cache.cache_path(cfg4),
                                          torch.device("cpu"), False)
    path = model_cache.cache_path(cfg4)
    state = torch.load(path, weights_only=True)
    assert state["step"] == 2
    state["history"][0] = 123.0                              # a mark: a resumed run keeps the file's history
    torch.save(state, path)
    resumed = recipes.load_or_train("fashion-ddpm", "tiny", device="cpu", steps=4, progress=False)
    assert resumed.history == [123.0] + whole.history[1:]
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


@needs_data
def test_a_file_of_another_config_is_never_served(cache):
    mine = recipes.config("fashion-ddpm", "tiny", steps=2)
    recipes.RECIPES["fashion-ddpm"].train(recipes.config("fashion-ddpm", "tiny", steps=2, seed=1),
                                          model_cache.cache_path(mine), torch.device("cpu"), False)
    with pytest.raises(ValueError, match="seed: 1 there, 0 here"):
        recipes.load_or_train("fashion-ddpm", "tiny", device="cpu", steps=2, progress=False)


@needs_data
def test_the_classifier_is_trained_once(cache):
    clf = recipes.load_or_train("fashion-classifier", "tiny", device="cpu", steps=5, progress=False)
    path = model_cache.cache_path(recipes.config("fashion-classifier", "tiny", steps=5))
    stamp = path.stat().st_mtime_ns
    again = recipes.load_or_train("fashion-classifier", "tiny", device="cpu", steps=5, progress=False)
    assert path.stat().st_mtime_ns == stamp and not again.training
    for a, b in zip(clf.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    other = model_cache.cache_path(recipes.config("fashion-classifier", "tiny", steps=6))
    other.write_bytes(path.read_bytes())                         # a file under the wrong name
    with pytest.raises(ValueError, match="another config"):
        recipes.load_or_train("fashion-classifier", "tiny", device="cpu", steps=6, progress=False)



@needs_data
def test_samples_are_drawn_once_and_equal_what_compare_samplers_draws(cache):
    from minidiff import evaluation

    kw = dict(n=5, sampler="ddim", steps=4, eta=1.0, batch_size=3, seed=2, device="cpu", progress=False,
              overrides={"steps": 3, "ema_warmup": 1})        # after the warm-up the EMA differs from raw
    got = recipes.load_or_sample("fashion-ddpm", "tiny", **kw)
    assert got.images.shape == (5, 1, 28, 28) and got.images.device.type == "cpu" and got.seconds_per_image > 0
    files = list((cache.parent / "samples").iterdir())
    assert len(files) == 1 and files[0].name.startswith("fashion-ddpm-tiny-")
    stamp = files[0].stat().st_mtime_ns
    again = recipes.load_or_sample("fashion-ddpm", "tiny", **kw)
    assert files[0].stat().st_mtime_ns == stamp and torch.equal(again.images, got.images)
    assert again.seconds_per_image == got.seconds_per_image          # the time it took back then
    # the same images compare_samplers draws from the same model, noise seed and batches
    run = recipes.load_or_train("fashion-ddpm", "tiny", device="cpu", steps=3, ema_warmup=1, progress=False)
    mine, _ = evaluation.draw_samples(run.ema.model, run.schedule, (1, 28, 28), 5, "ddim", 4, 1.0, batch_size=3,
                                      seed=2, progress=False)
    assert torch.equal(mine, got.images)
    # raw weights, another seed or another batch size are other samples
    for change in ({"weights": "raw"}, {"seed": 3}, {"batch_size": 5}):
        other = recipes.load_or_sample("fashion-ddpm", "tiny", **{**kw, **change})
        assert not torch.equal(other.images, got.images), change
    assert len(list((cache.parent / "samples").iterdir())) == 4


def test_load_or_sample_refuses_bad_settings(cache):
    with pytest.raises(ValueError, match="unknown weights 'best'; allowed: ema, raw"):
        recipes.load_or_sample("fashion-ddpm", "tiny", n=2, weights="best")
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        recipes.load_or_sample("fashion-ddpm", "tiny", n=2, sampler="euler")
    with pytest.raises(ValueError, match="recipe 'fashion-classifier' gives no image_shape"):
        recipes.load_or_sample("fashion-classifier", "tiny", n=2)
    with pytest.raises(ValueError, match="unknown recipe 'gan'"):
        recipes.load_or_sample("gan", "tiny", n=2)
    with pytest.raises(ValueError, match="n must be"):
        recipes.load_or_sample("fashion-ddpm", "tiny", n=0)
    with pytest.raises(ValueError, match="has no setting stepz"):
        recipes.load_or_sample("fashion-ddpm", "tiny", n=2, overrides={"stepz": 1})
    assert not (cache.parent / "samples").exists()                   # nothing drawn, nothing written


@needs_data
def test_the_autoencoder_recipe_stores_its_latent_scale(cache):
    from minidiff import autoencoder

    run = recipes.load_or_train("fashion-autoencoder", "tiny", device="cpu", steps=3, progress=False)
    path = model_cache.cache_path(run.config)
    state = torch.load(path, weights_only=True)
    assert state["step"] == 3 and state["latent_scale"] == run.latent_scale
    images = data.fashion_mnist("train")[0][:latent_diffusion.SCALE_BATCH]
    again = autoencoder.latent_scale(run.model, images, generator=torch.Generator().manual_seed(0))
    assert again == pytest.approx(run.latent_scale, rel=1e-6)                   # measured, not typed
    assert set(run.history[0]) == {"loss", "recon", "kl"}
    stamp = path.stat().st_mtime_ns
    served = recipes.load_or_train("fashion-autoencoder", "tiny", device="cpu", steps=3, progress=False)
    assert path.stat().st_mtime_ns == stamp and served.latent_scale == run.latent_scale
    z = served.space.encode(images[:2], sample=False)
    assert z.shape == (2, 4, 7, 7)


@needs_data
def test_the_latent_ddpm_learns_its_autoencoders_latents_and_carries_it(cache):
    ae_cfg = recipes.config("fashion-autoencoder", "tiny", steps=2)
    cfg = recipes.config("fashion-latent-ddpm", "tiny", steps=2, autoencoder=ae_cfg)
    assert recipes.config("fashion-latent-ddpm", "tiny")["autoencoder"] == recipes.config("fashion-autoencoder", "tiny")
    assert model_cache.cache_path(cfg) != model_cache.cache_path(recipes.config("fashion-latent-ddpm", "tiny", steps=2))
    run = recipes.load_or_train("fashion-latent-ddpm", "tiny", device="cpu", steps=2, autoencoder=ae_cfg,
                                progress=False)
    assert len(run.history) == 2 and model_cache.cache_path(ae_cfg).exists()       # its autoencoder trained first
    path = model_cache.cache_path(cfg)
    model, s, got = generating_images.model_from_checkpoint(path)
    assert got["autoencoder"] == ae_cfg and model.config["in_channels"] == 4
    space = latent_diffusion.latent_space_from_checkpoint(path)
    assert space.scale == run.space.scale
    z = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(space.decode(z), run.space.decode(z))       # the same autoencoder, stored
    pixel = recipes.load_or_train("fashion-ddpm", "tiny", device="cpu", steps=1, progress=False)
    assert latent_diffusion.latent_space_from_checkpoint(model_cache.cache_path(pixel.config)) is None


def test_the_latent_ddpm_uses_the_pixel_ddpms_unet_at_every_scale():
    for scale in SCALES:
        pixel, latent = recipes.config("fashion-ddpm", scale), recipes.config("fashion-latent-ddpm", scale)
        assert latent["unet"] == pixel["unet"], scale
        assert latent["scale_latents"] is True
        assert {k: v for k, v in latent.items() if k not in ("recipe", "autoencoder", "scale_latents")} == \
            {k: v for k, v in pixel.items() if k != "recipe"}, scale              # only the space differs


@needs_data
def test_a_latent_model_at_56_pixels(cache):
    assert "image_size" not in recipes.config("fashion-latent-ddpm", "tiny")           # default configs unchanged
    ae_cfg = recipes.config("fashion-autoencoder", "tiny", steps=2, image_size=56)
    cfg = recipes.config("fashion-latent-ddpm", "tiny", steps=2, image_size=56)
    assert cfg["autoencoder"]["image_size"] == 56                                     # its autoencoder follows
    run = recipes.load_or_train("fashion-latent-ddpm", "tiny", device="cpu", steps=2, image_size=56, autoencoder=ae_cfg,
                                progress=False)
    assert run.space.latent_shape((1, 56, 56)) == (4, 14, 14)
    with torch.no_grad():
        z = torch.randn(2, 4, 14, 14)
        assert run.ema.model(z, torch.tensor([1, 2])).shape == z.shape and run.space.decode(z).shape == (2, 1, 56, 56)
    with pytest.raises(ValueError, match="image_size"):
        recipes.config("fashion-latent-ddpm", "tiny", image_size=2)
    with pytest.raises(ValueError, match="has no setting image_size"):
        recipes.config("fashion-ddpm", "tiny", image_size=56)


def test_shapes_clip_logs_the_naive_floor_and_holds_out_pairs(cache):
    from minidiff import clip
    run = recipes.load_or_train("shapes-clip", "tiny", progress=False, steps=20)
    assert set(run.history[0]) == {"loss", "naive", "grouped", "floor"}
    cfg = run.config
    train = text_conditioning.shapes_train_set(cfg, "cpu")
    batch = train["labels"][:cfg["batch_size"]]
    assert 0 < clip.contrastive_floor(batch) < cfg["batch_size"]
    assert all(h["naive"] >= h["floor"] - 1e-4 for h in run.history)     # the naive loss never beats its floor
    pairs = {(c, s) for c, s in zip(*[data.shape_attributes(train["labels"])[k].tolist() for k in ("colour", "shape")])}
    colours, kinds = list(data.SHAPE_ATTRIBUTES["colour"]), list(data.SHAPE_ATTRIBUTES["shape"])
    assert len(pairs) == 15 - len(text_conditioning.HELD_OUT)
    assert not pairs & {(colours.index(c), kinds.index(s)) for c, s in text_conditioning.HELD_OUT}
    assert recipes.load_or_train("shapes-clip", "tiny", progress=False, steps=20).history == run.history


@pytest.mark.parametrize("condition", ["clip", "learned", "onehot"])
def test_the_text_to_image_ddpm_and_its_condition(cache, condition):
    from minidiff import guidance, samplers
    run = recipes.load_or_train("shapes-text-ddpm", "tiny", progress=False, steps=15, condition=condition)
    assert ("clip" in run.config) == (condition != "onehot")
    assert (run.tokenizer is None) == (condition == "onehot")
    encoder = run.model.text_encoder
    if condition == "clip":      # the frozen encoder is exactly the cached CLIP's text tower
        clip_run = recipes.load_or_train("shapes-clip", "tiny", progress=False)
        assert all(torch.equal(a, b) for a, b in zip(encoder.parameters(), clip_run.model.text.parameters()))
    assert (encoder is None) == (condition == "onehot")
    size = run.config["size"]
    if run.tokenizer is not None:
        context = run.tokenizer.encode(["a large red square in the centre", "a small blue circle at the top left"])
    else:
        context = data.shape_one_hot(data.shapes(2, size, generator=torch.Generator().manual_seed(0))[2])
    x = samplers.sample(guidance.cfg(run.ema.model, 3.0, run.uncond), run.schedule, (2, 3, size, size), "ddim",
                        steps=5, generator=torch.Generator().manual_seed(0), progress=False, context=context)
    assert x.shape == (2, 3, size, size) and torch.isfinite(x).all()


def test_the_class_conditional_fashion_ddpm(cache):
    run = recipes.load_or_train("fashion-cond-ddpm", "tiny", progress=False, steps=10)
    assert run.config["num_classes"] == 10 and run.config["cond_dropout"] == 0.1
    assert run.model.class_emb.num_embeddings == 11 and run.uncond["y"].tolist() == [10]
    clf = recipes.load_or_train("shapes-classifier", "tiny", progress=False)
    assert clf.head[-1].out_features == 150 and clf.shape["in_channels"] == 3


@needs_data
def test_the_gan_recipes_track_collapse_and_resume_exactly(cache, tmp_path):
    for name in ("fashion-gan", "fashion-cond-gan"):
        run = recipes.load_or_train(name, "tiny", progress=False, steps=20, track_every=10, track_samples=40)
        assert [t["step"] for t in run.tracking] == [10, 20] and run.tracking[0]["snapshot"].shape == (16, 1, 28, 28)
        assert all(0 <= t["entropy"] <= 1 and t["distance"] > 0 for t in run.tracking)
        assert len(run.history) == 20 and set(run.history[0]) == {"loss", "d", "g", "d_real", "d_fake"}
        assert (run.model.num_classes == 10) == (name == "fashion-cond-gan")
        assert run.config["lr"] == 2e-4 and run.config["beta1"] == 0.5
    whole = recipes.load_or_train("fashion-gan", "tiny", progress=False, steps=20, track_every=10, track_samples=40,
                                  checkpoint=tmp_path / "whole.pt")
    recipes.load_or_train("fashion-gan", "tiny", progress=False, steps=10, track_every=10, track_samples=40,
                          checkpoint=tmp_path / "half.pt")
    resumed = recipes.load_or_train("fashion-gan", "tiny", progress=False, steps=20, track_every=10,
                                    track_samples=40, checkpoint=tmp_path / "half.pt")
    assert all(torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()))
    assert [t["entropy"] for t in resumed.tracking] == [t["entropy"] for t in whole.tracking]


def test_the_stability_grid_and_the_runs_at_library_defaults():
    grid = gans_vs_diffusion.stability_grid("fashion-gan", "small")
    assert len(grid) == 9 and sorted({o["lr"] for o in grid}) == pytest.approx([5e-5, 2e-4, 8e-4])
    assert all(o["steps"] == o["track_every"] == gans_vs_diffusion.STABILITY["steps"]["fashion-gan"]["small"] for o in grid)
    gan = gans_vs_diffusion.default_runs("fashion-gan", "small")
    assert set(gan) == {"lr", "beta1"}                                   # the two settings the GAN recipe moves
    assert [(o["lr"], o.get("beta1"), o["seed"]) for o in gan["lr"]] == [(1e-3, None, s) for s in gans_vs_diffusion.STABILITY["seeds"]]
    assert [(o["lr"], o["beta1"]) for o in gan["beta1"]] == [(2e-4, 0.9)] * 3   # one setting back at a time
    assert gans_vs_diffusion.default_runs("fashion-ddpm", "small") == {}           # its lr already is Adam's default
    assert set(gans_vs_diffusion.default_runs("fashion-ddpm", "tiny")) == {"lr"}
    for name in ("fashion-gan", "fashion-ddpm"):
        for runs in gans_vs_diffusion.default_runs(name, "tiny").values():
            for o in runs:
                recipes.config(name, "tiny", **o)                        # every override is a valid setting
    with pytest.raises(ValueError, match="name"):
        gans_vs_diffusion.stability_grid("fashion-classifier")


def test_training_is_compiled_by_default_at_full_scale_on_cuda_only(monkeypatch):
    seen = []
    spy = dataclasses.replace(recipes.RECIPES["fashion-ddpm"], train=lambda cfg, path, device, progress, compile,
                              checkpoint_every: seen.append((cfg["scale"], device.type, compile)))
    monkeypatch.setitem(recipes.RECIPES, "fashion-ddpm", spy)
    for scale, dev in [("full", "cuda"), ("full", "cpu"), ("small", "cuda"), ("tiny", "cpu")]:
        recipes.load_or_train("fashion-ddpm", scale, device=torch.device(dev), progress=False)
    recipes.load_or_train("fashion-ddpm", "full", device=torch.device("cuda"), progress=False, compile=False)
    assert seen == [("full", "cuda", True), ("full", "cpu", False), ("small", "cuda", False), ("tiny", "cpu", False),
                    ("full", "cuda", False)]


def test_at_batch_keeps_the_images_and_the_emas_horizon_in_images():
    base = {"batch_size": 128, "lr": 2e-4, "steps": 40000, "ema_decay": 0.9999, "ema_warmup": 2000, "unet": {"x": [1]}}
    moved = recipes.at_batch(base, 512)
    assert moved["steps"] * 512 == base["steps"] * 128 and moved["ema_warmup"] == 500
    assert moved["lr"] == pytest.approx(4e-4)                     # square-root scaling: 4x the batch, 2x the lr
    # the EMA averages over about 1 / (1 - decay) steps: as many images at either batch (to first order)
    assert 512 / (1 - moved["ema_decay"]) == pytest.approx(128 / (1 - base["ema_decay"]), rel=2e-3)
    # k steps at decay**4 weigh the past as 4k steps at decay do: exactly
    assert moved["ema_decay"] ** 10 == pytest.approx(base["ema_decay"] ** 40, rel=1e-12)
    assert recipes.at_batch(base, 512, lr=1e-3)["lr"] == 1e-3 and recipes.at_batch(base, 128) == base
    moved["unet"]["x"].append(2)
    assert base["unet"]["x"] == [1]                               # a copy, not the recipe itself
    with pytest.raises(ValueError, match="batch_size"):
        recipes.at_batch(base, 0)
