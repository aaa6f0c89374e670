"""The project's promises about itself: metadata, environment file, README quickstart, CLI."""
import pathlib
import re
import subprocess
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_mirrors_pyproject():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(meta["dependencies"]) | set(meta["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {p for p in pip if not p.startswith("-e")}
    assert listed == wanted
    assert any(str(d).startswith("python") for d in env["dependencies"])
    assert meta["requires-python"] == ">=3.10"
    assert {_name(r) for r in meta["dependencies"]} >= {"numpy", "torch", "matplotlib", "ipywidgets",
                                                        "jupyterlab", "tqdm"}
    assert {_name(r) for r in meta["optional-dependencies"]["dev"]} >= {"pytest", "nbval", "hypothesis"}


def quickstart_commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_quickstart_is_two_commands():
    cmds = quickstart_commands()
    assert len(cmds) == 2
    assert 'pip install -e ".[dev]"' in cmds[0] and "python -m minidiff demo" in cmds[0]
    assert "pytest" in cmds[1]
    # .ci/run runs exactly the README's test command
    assert cmds[1] in (ROOT / ".ci" / "run").read_text()


def test_every_lesson_is_in_the_readme_table():
    text = (ROOT / "README.md").read_text()
    for nb in sorted((ROOT / "lessons").glob("*.ipynb")):
        assert nb.name in text, nb.name


def test_demo_cli_writes_a_png(tmp_path):
    out = tmp_path / "sub" / "demo.png"
    r = subprocess.run([sys.executable, "-m", "minidiff", "demo", "--out", str(out), "--steps", "30",
                        "--no-progress"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {out}" in r.stdout


def test_cli_help_and_bad_flags():
    r = subprocess.run([sys.executable, "-m", "minidiff", "demo", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--out" in r.stdout and "--dataset" in r.stdout
    r = subprocess.run([sys.executable, "-m", "minidiff", "demo", "--steps", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and "--steps must be >= 1" in r.stderr


def test_the_wheel_carries_every_module(tmp_path):
    """A plain (non-editable) install gets the whole package, the experiments subpackage included:
    pyproject lists packages by name, so a new subpackage must be listed there too."""
    import shutil
    import zipfile

    import pytest
    pytest.importorskip("setuptools")
    src = tmp_path / "src"          # a clean copy: a stale build/ folder would hide a missing package
    shutil.copytree(ROOT / "minidiff", src / "minidiff", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path / "wheel"), str(src)], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    wheel = next((tmp_path / "wheel").glob("minidiff-*.whl"))
    shipped = set(zipfile.ZipFile(wheel).namelist())
    wanted = {p.relative_to(ROOT).as_posix() for p in (ROOT / "minidiff").rglob("*.py")}
    assert wanted <= shipped, sorted(wanted - shipped)
