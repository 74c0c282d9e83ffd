"""The performance stores measured with `secureinfer bench sweep` and shipped with secureinfer as package data.

`secureinfer selector eval` and `secureinfer selector explain` learn from them unless given --store; they are
opened read-only, so they are written in SQLite's rollback-journal mode (a store in WAL mode cannot be read from a
read-only installation). benchmarks/sweep/README.md describes how they were measured.
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
CPU_STORE = DATA_DIR / "sweep.sqlite"  # host dev-vm-2cpu: every row on its 2 CPU cores
H200_STORE = DATA_DIR / "sweep-h200.sqlite"  # host h200: parties and workers on an NVIDIA H200, some on its CPU
MEASURED_STORES: tuple[Path, ...] = (CPU_STORE, H200_STORE)
