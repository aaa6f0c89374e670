"""Lesson 02's sliders in a real browser: JupyterLab on 127.0.0.1, driven by headless Chromium.

Runs with the marker ``browser`` (``python -m pytest -m browser``); .ci/run installs Debian's
chromium and PyPI's playwright. Screenshots before and after each slider move are kept in a
temporary folder whose path is printed. The server and the browser are always stopped, and
nothing is written to the user's home: the server runs with HOME and the Jupyter folders in a
temporary directory, on a copy of the lesson.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(workdir: pathlib.Path, home: pathlib.Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, HOME=str(home), JUPYTER_CONFIG_DIR=str(home / "jupyter-config"),
               JUPYTER_DATA_DIR=str(home / "jupyter-data"), JUPYTER_RUNTIME_DIR=str(home / "jupyter-runtime"),
               IPYTHONDIR=str(home / "ipython"), MPLCONFIGDIR=str(home / "mpl"), XDG_CACHE_HOME=str(home / "cache"),
               MINIDIFF_SCALE=os.environ.get("MINIDIFF_SCALE", "tiny"))
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--ServerApp.port={port}",
           "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=", "--ServerApp.password=",
           "--ServerApp.port_retries=0", "--LabApp.expose_app_in_browser=True",
           f"--ServerApp.root_dir={workdir}"]
    proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("jupyter lab exited before it was ready")
            time.sleep(0.5)
    stop(proc)
    raise RuntimeError("jupyter lab did not answer within 90 s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def wait_for(page, js: str, timeout_s: float, what: str):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = page.evaluate(js)
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


ALL_EXECUTED = """() => {
  const nb = window.jupyterapp.shell.currentWidget;
  if (!nb || !nb.sessionContext || !nb.sessionContext.session) return false;
  const kernel = nb.sessionContext.session.kernel;
  const cells = nb.content.widgets.filter(c => c.model.type === 'code');
  return kernel && kernel.status === 'idle' && cells.length > 0 && cells.every(c => c.model.executionCount);
}"""


def test_lesson_02_sliders_in_jupyterlab(tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (.ci/run does)")
    if not os.path.exists(CHROMIUM):
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)")
    work = tmp_path_factory.mktemp("lab")
    home = tmp_path_factory.mktemp("home")
    shots = pathlib.Path(tempfile.mkdtemp(prefix="minidiff-browser-"))
    print(f"\nscreenshots: {shots}")
    shutil.copy(ROOT / "lessons" / "02_forward_process.ipynb", work / "02.ipynb")
    port = free_port()
    server = start_lab(work, home, port)
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"http://127.0.0.1:{port}/lab/tree/02.ipynb", timeout=120_000)
                wait_for(page, "() => !!(window.jupyterapp && window.jupyterapp.shell.currentWidget "
                               "&& window.jupyterapp.shell.currentWidget.sessionContext "
                               "&& window.jupyterapp.shell.currentWidget.sessionContext.session "
                               "&& window.jupyterapp.shell.currentWidget.sessionContext.session.kernel)",
                         120, "the notebook and its kernel")
                page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
                wait_for(page, ALL_EXECUTED, 300, "every cell to run and the kernel to be idle")
                wait_for(page, "() => document.querySelectorAll('.jp-OutputArea .widget-slider .noUi-handle').length >= 4",
                         60, "the four sliders to render")
                # no error output anywhere in the lesson
                errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'], "
                                      ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']")
                texts = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
                assert not texts, f"error output in lesson 02: {texts[0][:500]}"
                assert "Error displaying widget" not in page.inner_text(".jp-Notebook")

                boxes = page.locator(".jp-OutputArea .widget-vbox:has(.widget-slider)")
                explorer, stepper = boxes.nth(0), boxes.nth(1)
                moves = [(explorer, 0, "T"), (explorer, 1, "beta_start"), (explorer, 2, "beta_end"),
                         (stepper, 0, "t")]
                for box, k, name in moves:
                    readout = box.locator(".widget-html-content").first
                    image = box.locator("img").first
                    image.scroll_into_view_if_needed()
                    before_text = readout.inner_text()
                    before_png = image.screenshot(path=str(shots / f"{name}-before.png"))
                    handle = box.locator(".widget-slider .noUi-handle").nth(k)
                    handle.focus()
                    for _ in range(3):
                        page.keyboard.press("ArrowRight")
                    deadline = time.time() + 60
                    while readout.inner_text() == before_text and time.time() < deadline:
                        time.sleep(0.25)
                    assert readout.inner_text() != before_text, f"moving {name} did not change the readout"
                    deadline = time.time() + 30
                    after_png = image.screenshot(path=str(shots / f"{name}-after.png"))
                    while hashlib.sha256(after_png).digest() == hashlib.sha256(before_png).digest() \
                            and time.time() < deadline:
                        time.sleep(0.25)
                        after_png = image.screenshot(path=str(shots / f"{name}-after.png"))
                    assert after_png != before_png, f"moving {name} did not change the plot"
                page.screenshot(path=str(shots / "page.png"), full_page=False)
            finally:
                browser.close()
    finally:
        stop(server)
