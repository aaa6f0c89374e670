"""Every ``plots.show_source(...)`` a lesson displays shows the package's code as it is now: the
committed Markdown equals the source (nbval compares it too, but only after running the lesson)."""
import importlib
import json
import pathlib
import re

import pytest

from minidiff import plots

LESSONS = sorted((pathlib.Path(__file__).resolve().parents[1] / "lessons").glob("*.ipynb"))


def shown(nb):
    """(name, committed Markdown) for every show_source cell whose outputs hold one Markdown per call."""
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        calls = re.findall(r"plots\.show_source\(([\w.]+)\)", "".join(cell["source"]))
        markdown = [o["data"]["text/markdown"] for o in cell.get("outputs", [])
                    if "data" in o and "text/markdown" in o["data"]]
        if calls and len(calls) == len(markdown):
            yield from zip(calls, ("".join(m) for m in markdown))


def resolve(name: str):
    module, *attrs = name.split(".")
    obj = importlib.import_module(f"minidiff.{module}")
    for a in attrs:
        obj = getattr(obj, a)
    return obj


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_shown_sources_are_current(lesson):
    for name, committed in shown(json.loads(lesson.read_text())):
        assert committed == plots.show_source(resolve(name)).data, f"{lesson.name}: {name} changed; re-run its cell"


def test_the_lessons_show_sources_at_all():
    assert sum(len(list(shown(json.loads(p.read_text())))) for p in LESSONS) >= 20
