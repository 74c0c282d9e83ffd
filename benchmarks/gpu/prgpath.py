"""Shared by the GPU benchmarks: run code with every new PRG on one keystream path, and write a result file.

The PRG's path is picked per instance (`on_device`); the engine makes its PRGs deep inside a session, so a benchmark
swaps `PRG.__init__` for the duration of a `with prg_path(...)` block. CPU PRGs keep the host path whatever the
choice. The bytes drawn never depend on the path, only the time they take.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import torch

from secureinfer.mpc import prg as prg_module

CHOICES = {"host": False, "device": True, "default": None}  # path name -> PRG(on_device=...)


@contextlib.contextmanager
def prg_path(name: str) -> Iterator[None]:
    """Every PRG made inside the block on a GPU takes the path `name` (host, device or default)."""
    original, choice = prg_module.PRG.__init__, CHOICES[name]

    def init(self, seed, device="cpu", *, on_device=None):
        original(self, seed, device, on_device=None if torch.device(device).type == "cpu" else choice)

    prg_module.PRG.__init__ = init
    try:
        yield
    finally:
        prg_module.PRG.__init__ = original


def write_rows(path: Path, rows: list[dict]) -> None:
    """Rows and the machine they ran on, as JSON."""
    meta = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    path.write_text(json.dumps({"machine": meta, "rows": rows}, indent=1))
