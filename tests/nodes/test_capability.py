"""Capability measurement: positive numbers, the right device text, and a bounded run time."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from secureinfer.nodes.capability import CapabilityError, host_memory_bytes, matmul_gflops, measure
from secureinfer.v1 import node_pb2


def test_measure_cpu() -> None:
    start = time.perf_counter()
    cap = measure("cpu", seconds_budget=0.2)
    elapsed = time.perf_counter() - start
    assert isinstance(cap, node_pb2.Capability)
    assert cap.device == "cpu"
    assert cap.memory_bytes > 64 * 1024 * 1024
    assert cap.matmul_gflops > 0.1
    assert cap.cpu_count == os.cpu_count()
    assert elapsed < 2.0  # budget 0.2 s plus warm-up; generous for a busy shared machine
    assert node_pb2.Capability.FromString(cap.SerializeToString()) == cap


def test_gflops_is_plausible() -> None:
    # Below 1 PFLOP/s on any CPU: a timing bug (e.g. counting reps wrong) would blow this up.
    assert 0.1 < matmul_gflops("cpu", seconds_budget=0.1) < 1e6


def test_host_memory_from_meminfo_and_fallback(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384 kB\nMemFree:        1 kB\n")
    assert host_memory_bytes(meminfo) == 16384 * 1024
    assert host_memory_bytes(tmp_path / "absent") > 0  # falls back to sysconf


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "auto", ""])
def test_bad_device(device: str) -> None:
    with pytest.raises(CapabilityError, match="device"):
        measure(device)


def test_cuda_unavailable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CapabilityError, match="not available"):
        measure("cuda:0")


def test_bad_budget() -> None:
    with pytest.raises(CapabilityError, match="seconds_budget"):
        matmul_gflops("cpu", seconds_budget=0)


@pytest.mark.cuda
def test_measure_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    cap = measure("cuda:0")
    assert cap.device.startswith("cuda:0 (") and cap.device.endswith(")")
    assert cap.memory_bytes == torch.cuda.get_device_properties(0).total_memory
    assert cap.matmul_gflops > 100
    assert measure("cuda").device.startswith("cuda:")
