"""Benchmarks behind `secureinfer bench`: shared machine description and JSON output."""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Any

import torch


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
