"""The command line every runner in the main environment shares (see the runner protocol in __init__.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def parser(prog: str, description: str, default_repeats: int) -> argparse.ArgumentParser:
    """--workload, --out, --output-npy and --repeats; a runner adds its own options."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--workload", required=True, type=Path, help="the workload's JSON (benchmarks.anchors.workloads)")
    p.add_argument("--out", required=True, type=Path, help="where to write the result JSON")
    p.add_argument("--output-npy", required=True, type=Path, help="where to write the opened output (float64)")
    p.add_argument("--repeats", type=int, default=default_repeats,
                   help=f"timed runs; the median is reported (default {default_repeats})")
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse and check the shared options."""
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


def write(args: argparse.Namespace, result: dict[str, Any], output: np.ndarray) -> None:
    """Write the output array and the result JSON where the command line says."""
    np.save(args.output_npy, output)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
