"""A newcomer's first command, verbatim, in a fresh clone and a fresh virtual environment.

Marker ``newcomer``. The repository's committed HEAD is cloned into a temporary folder, a new
virtual environment is made there, PyTorch is pre-installed into it (as on a machine that
already has it; the README explains how to pick a build), and then the README quickstart's
first command runs exactly as written. The test checks that the main job wrote its picture.
Everything, pip's cache included, stays inside the temporary folder.
"""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import venv

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.newcomer


def first_quickstart_command() -> str:
    section = (ROOT / "README.md").read_text().split("## Quickstart", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")][0]


def test_readme_first_command_in_a_fresh_clone_and_venv(tmp_path):
    import torch

    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}", VIRTUAL_ENV=str(env_dir),
               HOME=str(tmp_path / "home"), PIP_CACHE_DIR=str(tmp_path / "pip-cache"),
               MPLCONFIGDIR=str(tmp_path / "mpl"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("PYTHONPATH", None)
    (tmp_path / "home").mkdir()
    torch_version = torch.__version__.split("+")[0]
    subprocess.run([str(bindir / "python"), "-m", "pip", "install", "--quiet", f"torch=={torch_version}"],
                   check=True, env=env, cwd=repo, timeout=900)
    command = first_quickstart_command()
    result = subprocess.run(command, shell=True, env=env, cwd=repo, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, f"`{command}` failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    picture = repo / "minidiff_demo.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert picture.stat().st_size > 20_000                   # a real figure, not an empty canvas
    # the package it ran is the clone's, installed in the new environment
    where = subprocess.run([str(bindir / "python"), "-c", "import minidiff; print(minidiff.__file__)"],
                           env=env, capture_output=True, text=True, cwd=tmp_path / "home")
    assert str(repo) in where.stdout
