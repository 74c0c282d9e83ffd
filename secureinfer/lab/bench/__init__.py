"""Benchmarks behind `secureinfer bench`: what every result records (the machine, a command that reruns it) and
its JSON output."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

# Where a recorded command puts the files it named outside the working directory: a folder the reader picks.
OUT = "OUT"


def machine(device: str = "cpu") -> dict[str, Any]:
    """What the figures were measured on."""
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "python": sys.version.split()[0], "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None}


def write_json(path: str, benchmark: str, results: list[Any], device: str = "cpu", **extra: Any) -> None:
    """Write {"benchmark", "machine", "results", ...extra} to `path` ('-' for stdout)."""
    text = json.dumps({"benchmark": benchmark, "machine": machine(device), **extra, "results": results}, indent=2)
    if path == "-":
        print(text)
    else:
        with open(path, "w") as fh:
            fh.write(text + "\n")


def portable_paths(values: Sequence[str], cwd: Path | None = None) -> list[str]:
    """`values` (command-line arguments, configured folders) without the folders of this machine: an absolute path
    inside the working directory becomes relative to it, any other absolute path goes under the placeholder folder
    OUT, below the common folder of all such paths (--opt=PATH counts as PATH); other values stay as they are."""
    cwd = (cwd or Path.cwd()).absolute()
    split = [_option_and_path(v) for v in values]
    outside = [Path(p) for _, p in split if os.path.isabs(p) and not Path(p).is_relative_to(cwd)]
    base = Path(os.path.commonpath([p.parent for p in outside])) if outside else None
    out = []
    for option, path in split:
        if os.path.isabs(path):
            inside = Path(path).is_relative_to(cwd)
            path = str(Path(path).relative_to(cwd)) if inside else str(OUT / Path(path).relative_to(base))
        out.append(option + path)
    return out


def _option_and_path(value: str) -> tuple[str, str]:
    """'--opt=PATH' -> ('--opt=', 'PATH'); anything else -> ('', value)."""
    if value.startswith("-") and "=" in value:
        option, _, path = value.partition("=")
        return option + "=", path
    return "", value


def command_line(prog: Sequence[str], args: Sequence[str]) -> str:
    """The shell command `prog args` with portable paths (`portable_paths`): what a reader reruns from the
    repository root to reproduce a committed result."""
    return shlex.join([*prog, *portable_paths(args)])
