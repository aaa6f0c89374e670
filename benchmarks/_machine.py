"""Machine facts written next to every benchmark result, and what every scale benchmark shares."""
import argparse
import os
import platform

import torch
from minidiff import device
from minidiff.device import SCALES


def machine_info() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def write_result(stem: str, result: dict, lines: list[str], write: bool = True) -> None:
    """Write ``results/<stem>.json`` and the Markdown table ``results/<stem>.md``; print both. With
    ``write=False`` (``--no-write``) only print the JSON."""
    import json
    import pathlib

    if not write:
        print(json.dumps(result))
        return

    out = pathlib.Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps(result))


def scale_parser(doc: str, samples_help: str) -> argparse.ArgumentParser:
    """The options of a benchmark run at a scale: --scale, --samples (default by scale), --no-write."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=SCALES, default=None)
    p.add_argument("--samples", type=int, default=None, help=samples_help)
    p.add_argument("--no-write", action="store_true", help="print the JSON, write no file (for tests)")
    return p


def parse_scale_run(parser: argparse.ArgumentParser, argv, samples: tuple) -> tuple:
    """Parse a ``scale_parser``'s options and return (args, scale, device, n): the scale asked for
    (default ``$MINIDIFF_SCALE``), the device the run uses, and ``--samples`` or else the count
    for that scale from ``samples`` = (tiny, small, full)."""
    args = parser.parse_args(argv)
    scale = device.get_scale(args.scale)
    return args, scale, device.get_device(), args.samples or device.by_scale(*samples, scale=scale)
