"""What a node can do, measured once at start: device, memory, float32 matmul speed and CPU count."""

from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from secureinfer.v1 import node_pb2

MATMUL_SIZES: tuple[int, ...] = (256, 512, 1024)
MAX_SAMPLES = 15
MAX_REPS = 1000


class CapabilityError(ValueError):
    """The device to measure is malformed or not present."""


def host_memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> int:
    """Total host memory in bytes: /proc/meminfo's MemTotal, else the page count times the page size."""
    try:
        match = re.search(r"^MemTotal:\s+(\d+)\s*kB", meminfo.read_text(), re.MULTILINE)
        if match is not None:
            return int(match.group(1)) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 0


def _cuda_index(device: str) -> int:
    if not torch.cuda.is_available():
        raise CapabilityError(f"device {device!r}: torch.cuda is not available here")
    index = torch.cuda.current_device() if device == "cuda" else int(device.split(":", 1)[1])
    if not 0 <= index < torch.cuda.device_count():
        raise CapabilityError(f"device {device!r}: only {torch.cuda.device_count()} CUDA devices here")
    return index


def _timed(run: Callable[[], None], reps: int, sync: Callable[[], None]) -> float:
    sync()
    start = time.perf_counter()
    for _ in range(reps):
        run()
    sync()
    return time.perf_counter() - start


def matmul_gflops(device: str, seconds_budget: float = 0.3) -> float:
    """Median float32 GFLOP/s of square matmuls on `device`, timed within about `seconds_budget` seconds.

    The size grows from 256 to 1024 while one product is too quick to time well; each sample batches enough
    products to last about a tenth of the budget (one launch is not a measurement on a GPU); warm-up is excluded.
    """
    if seconds_budget <= 0:
        raise CapabilityError(f"seconds_budget must be > 0, got {seconds_budget}")
    dev = torch.device(device)
    sync: Callable[[], None] = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    deadline = time.perf_counter() + seconds_budget
    target = seconds_budget / 10
    with torch.inference_mode():
        for n in MATMUL_SIZES:
            a = torch.rand(n, n, dtype=torch.float32, device=dev)
            b = torch.rand(n, n, dtype=torch.float32, device=dev)
            out = torch.empty(n, n, dtype=torch.float32, device=dev)
            run = lambda: torch.matmul(a, b, out=out)  # noqa: E731
            _timed(run, 1, sync)  # warm-up: allocation, kernel selection, thread pool start
            single = _timed(run, 1, sync)
            if single >= target or n == MATMUL_SIZES[-1]:
                break
        reps = max(1, min(MAX_REPS, int(target / max(single, 1e-9))))
        flops = 2.0 * n**3 * reps
        samples: list[float] = []
        while len(samples) < MAX_SAMPLES:
            elapsed = _timed(run, reps, sync)
            samples.append(flops / max(elapsed, 1e-12) / 1e9)
            if time.perf_counter() + elapsed > deadline:
                break
    return statistics.median(samples)


def describe_device(device: str) -> str:
    """The device as gossiped: "cpu", or "cuda:I (NAME)" for a CUDA device."""
    if device == "cpu":
        return "cpu"
    index = _cuda_index(device)
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def measure(device: str, seconds_budget: float = 0.3) -> node_pb2.Capability:
    """Measure this node on `device` ("cpu", "cuda" or "cuda:N") for its gossiped record."""
    if re.fullmatch(r"cpu|cuda|cuda:\d+", device) is None:
        raise CapabilityError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device == "cpu":
        memory = host_memory_bytes()
        torch_device = "cpu"
    else:
        index = _cuda_index(device)
        memory = torch.cuda.get_device_properties(index).total_memory
        torch_device = f"cuda:{index}"
    return node_pb2.Capability(
        device=describe_device(device),
        memory_bytes=memory,
        matmul_gflops=matmul_gflops(torch_device, seconds_budget),
        cpu_count=os.cpu_count() or 1,
    )
