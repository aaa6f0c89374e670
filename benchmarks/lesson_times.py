"""Run every lesson top to bottom on a fresh kernel at one scale and time it.

    python benchmarks/lesson_times.py --scale tiny                 # measure only
    python benchmarks/lesson_times.py --scale small --write        # also store the outputs

Writes benchmarks/results/lesson_times_<scale>.json (seconds per lesson plus the machine) and
prints a Markdown table. With --write the executed notebooks (outputs and widget state)
replace the ones in lessons/: that is how the committed outputs are produced. Progress bars are
left out of what is stored (a learner sees them live; a stored one would read "0%").
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import re
import sys
import time

import nbformat
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]


PROGRESS_BAR = re.compile(r"\d+%\|")


def without_progress_bars(nb) -> None:
    """Drop the tqdm progress-bar outputs (widgets whose text reads like "42%|####  | 420/1000")."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs
                            if not PROGRESS_BAR.search(str(o.get("data", {}).get("text/plain", "")))]


def run_lesson(path: pathlib.Path, scale: str, write: bool, timeout: int) -> float:
    nb = nbformat.read(path, as_version=4)
    os.environ["MINIDIFF_SCALE"] = scale
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    if write:
        without_progress_bars(nb)
        nbformat.write(nb, path)
    return seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=["tiny", "small", "full"], required=True)
    p.add_argument("--write", action="store_true", help="store the executed notebooks in lessons/")
    p.add_argument("--only", nargs="*", help="lesson file names (default: all)")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = p.parse_args(argv)
    lessons = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        lessons = [nb for nb in lessons if nb.name in args.only or nb.stem in args.only]
    import torch
    times = {}
    for nb in lessons:
        times[nb.name] = round(run_lesson(nb, args.scale, args.write, args.timeout), 1)
        print(f"{nb.name}: {times[nb.name]:.1f} s", file=sys.stderr)
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpu_threads": torch.get_num_threads(), "python": platform.python_version(),
               "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    out = ROOT / "benchmarks" / "results" / f"lesson_times_{args.scale}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(out.read_text())["seconds"] if out.exists() else {}
    old.update(times)
    out.write_text(json.dumps({"scale": args.scale, "seconds": old, "machine": machine}, indent=2) + "\n")
    print(f"| lesson | seconds at {args.scale} |\n|---|---|")
    for name, sec in old.items():
        print(f"| {name} | {sec:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
