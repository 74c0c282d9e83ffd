"""Shared selector fixtures: one cost model per test session (its op tables are measured once per profile and bit
width), the sweep datasets read read-only, and small builders for nodes, options and requests."""

from __future__ import annotations

import pytest

from secureinfer.lab.stores import MEASURED_STORES
from secureinfer.selector.cost import CostModel
from secureinfer.selector.features import CommitteeOption, LinkFeatures, NodeFeatures, RequestFeatures, WorkerOption
from secureinfer.selector.records import read_records

H200 = "cuda:0 (NVIDIA H200)"


@pytest.fixture(scope="session")
def op_tables() -> dict:
    """Op tables shared by every cost model of the session (filled lazily)."""
    return {}


@pytest.fixture
def cost_model(op_tables: dict) -> CostModel:
    """A fresh (uncalibrated) cost model that reuses the session's op tables."""
    return CostModel(_tables=op_tables)


@pytest.fixture(scope="session")
def sweep_records() -> list:
    """The measured CPU and H200 sweep rows shipped with the package (status ok)."""
    return [r for path in MEASURED_STORES for r in read_records(path)]


def cpu_node(name: str, gflops: float = 40.0) -> NodeFeatures:
    return NodeFeatures(name, "cpu", 2, gflops, 8 << 30, host=name)


def gpu_node(name: str) -> NodeFeatures:
    return NodeFeatures(name, H200, 16, 38000.0, 140 << 30, host=name)


def committee(cid: str, names: tuple[str, str, str], *, gpu: bool = False, latency_s: float = 1e-4,
              bandwidth: float | None = 125e6, gflops: float = 40.0) -> CommitteeOption:
    make = gpu_node if gpu else (lambda n: cpu_node(n, gflops))
    return CommitteeOption(cid, tuple(make(n) for n in names), LinkFeatures(latency_s, bandwidth))


def worker(name: str, *, gpu: bool = False, latency_s: float = 1e-4) -> WorkerOption:
    return WorkerOption(gpu_node(name) if gpu else cpu_node(name), LinkFeatures(latency_s, 125e6))


def tiny_gpt2(**kw) -> RequestFeatures:
    base = dict(model="tiny-gpt2", arch="gpt2", n_params=120_000, n_layers=2, hidden=64, vocab=256, seq_len=8,
                gen_tokens=4, task="generate", n_heads=4, intermediate=256)
    base.update(kw)
    return RequestFeatures(**base)
