"""A cache filled before the chapter layout (issue 25) is served after it: every recipe, at every
scale and with the overrides the lessons and benchmarks use, keeps the file name it had.

``fixtures/cache_keys.json`` was written by the code of that time (``recipes.config`` and
``recipes.cache_path``, and the key ``load_or_sample`` hashed), so it is the old key function's
answer, frozen."""
import json
import pathlib

import pytest
import torch

from minidiff import cache as model_cache, recipes
from minidiff.evaluation import FashionClassifier

KEYS = json.loads((pathlib.Path(__file__).parent / "fixtures" / "cache_keys.json").read_text())


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDIFF_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_fixture_covers_every_recipe_at_every_scale():
    seen = {(c["recipe"], c["scale"]) for c in KEYS["models"] if not c["overrides"]}
    assert seen == {(name, scale) for name in recipes.RECIPES for scale in ("tiny", "small", "full")}
    assert len(KEYS["models"]) > 100 and len(KEYS["samples"]) == 18


@pytest.mark.parametrize("case", KEYS["models"], ids=lambda c: f"{c['recipe']}-{c['scale']}-{len(c['overrides'])}")
def test_every_model_keeps_its_cache_file_name(case, cache):
    cfg = recipes.config(case["recipe"], case["scale"], **case["overrides"])
    assert model_cache.cache_path(cfg) == cache / "models" / case["file"]


def test_every_sample_set_keeps_its_cache_file_name(cache):
    for case in KEYS["samples"]:
        if case["device"] != "cpu":
            continue
        path = cache / "samples" / case["file"]       # what the old code wrote there, but for a mark
        path.parent.mkdir(parents=True, exist_ok=True)
        mark = torch.full((1,), float(len(case["file"])))
        settings = {"weights": "ema", "sampler": "ddpm", "eta": 0.0, "batch_size": 100, "seed": 0, "clip_x0": 1.0,
                    **case["settings"]}
        old = {"model": recipes.config(case["recipe"], case["scale"]), **settings, "device": "cpu"}
        torch.save({"images": mark, "seconds_per_image": 0.5, "config": old}, path)
        served = recipes.load_or_sample(case["recipe"], case["scale"], device="cpu", **case["settings"])
        assert torch.equal(served.images, mark) and served.seconds_per_image == 0.5


def test_a_cached_classifier_from_before_is_loaded_not_retrained(cache):
    case = next(c for c in KEYS["models"] if c["recipe"] == "fashion-classifier" and c["scale"] == "tiny"
                and not c["overrides"])
    torch.manual_seed(3)
    old = FashionClassifier()
    path = cache / "models" / case["file"]
    path.parent.mkdir(parents=True)
    torch.save({"model": old.state_dict(), "config": recipes.config("fashion-classifier", "tiny"),
                "shape": old.shape}, path)
    served = recipes.load_or_train("fashion-classifier", "tiny", device="cpu", progress=False)
    for a, b in zip(old.state_dict().values(), served.state_dict().values()):
        assert torch.equal(a, b)
