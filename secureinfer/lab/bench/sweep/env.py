"""The environment of a run: the measured node (device, CPUs, matmul speed, memory, host label, CPU model), the
run's store key, and the software environment recorded with each row."""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .grid import Run


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    """The source tree's commit, '+dirty' when it has uncommitted changes (best effort)."""
    root = Path(__file__).resolve().parents[3]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=root).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=root).stdout.strip()
        return (head + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass(frozen=True)
class Node:
    """The node features of one device (secureinfer.nodes.capability.measure) plus the host label and CPU model."""

    device: str  # torch device used ("cpu", "cuda")
    description: str  # "cpu" or "cuda:0 (NVIDIA H200)"
    cpu_count: int
    matmul_gflops: float
    memory_bytes: int
    host: str
    cpu_model: str


def measure_node(device: str, host: str | None = None, seconds_budget: float = 0.3) -> Node:
    """Measure `device` once (float32 matmul GFLOP/s, memory, CPUs)."""
    from secureinfer.nodes import capability

    cap = capability.measure(device, seconds_budget)
    return Node(device, cap.device, cap.cpu_count, float(cap.matmul_gflops), int(cap.memory_bytes),
                host or socket.gethostname(), _cpu_model())


def strategy_key(strategy: Any) -> dict[str, Any]:
    """The strategy's part of a run key: its mode and the fields that differ from their defaults, so a field added
    to the strategy later (with a default) leaves the keys of rows already measured unchanged."""
    defaults = dataclasses.asdict(type(strategy)())
    return {"mode": strategy.mode,
            **{k: v for k, v in dataclasses.asdict(strategy).items() if defaults.get(k, object()) != v}}


def key_for(run: Run, node: Node) -> str:
    """The run's store key: case, strategy, link, repeat and environment (host label, device, CPU model and count),
    not the measured node speed, so a re-run on the same machine finds its rows."""
    from secureinfer.perfstore import run_key

    return run_key(case=dataclasses.asdict(run.case), strategy=strategy_key(run.strategy),
                   link=[run.link.latency_s, run.link.bandwidth_bytes_per_s] if run.strategy.mode == "secure"
                   else None, repeat=run.repeat,
                   env={"host": node.host, "device": node.description, "cpu": node.cpu_model,
                        "cpus": node.cpu_count})


def _env(node: Node, engine: str | None) -> dict[str, Any]:
    return {"torch": torch.__version__, "python": sys.version.split()[0], "threads": torch.get_num_threads(),
            "platform": platform.platform(), "cpu_model": node.cpu_model, "commit": _git_commit_cached(),
            "engine": engine, "gpu": torch.cuda.get_device_name(0) if node.device.startswith("cuda") else None,
            "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


@functools.lru_cache(maxsize=1)
def _git_commit_cached() -> str | None:
    return _git_commit()
