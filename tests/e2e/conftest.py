"""Fixtures for the end-to-end tests: real node processes on loopback with mutual TLS (secureinfer.lab.simulate).

Every network started here is stopped when its fixture ends, failures included; `LocalNetwork` also kills its nodes
if the test process dies. `node_processes(workdir)` lists the node processes of a network still alive.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from secureinfer.lab.simulate import LocalNetwork, SimulationConfig
from secureinfer.models.checkpoint import load_checkpoint

from ..tinymodels import VOCAB, save, tiny_bert, tiny_gpt2, tiny_llama

Model = tuple[Any, dict[str, torch.Tensor]]


def leftover_processes(marker: str | Path) -> list[str]:
    """Command lines of live processes (not zombies) that mention `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(marker) in cmdline and state != "Z":
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


def node_processes(workdir: Path) -> list[str]:
    """Live node processes of the local network in `workdir` (their command lines name workdir/node-i/node.toml)."""
    return leftover_processes(f"{workdir}{os.sep}node-")


def random_ids(batch: int, length: int, seed: int) -> torch.Tensor:
    """Token ids of the tiny models (test data, not secret randomness)."""
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def network_factory(tmp_path: Path) -> Iterator[Callable[..., LocalNetwork]]:
    """Start networks of any size for one test (keyword arguments go to SimulationConfig); all stop afterwards."""
    started: list[LocalNetwork] = []

    def make(n_nodes: int = 3, **kwargs: Any) -> LocalNetwork:
        kwargs.setdefault("workdir", tmp_path / f"net{len(started)}")
        network = LocalNetwork(SimulationConfig(n_nodes=n_nodes, **kwargs))
        started.append(network)
        return network.start()

    try:
        yield make
    finally:
        for network in started:
            network.stop()
        for network in started:
            assert not node_processes(network.workdir), "node processes outlived their network"


@pytest.fixture(scope="module")
def local_network() -> Iterator[LocalNetwork]:
    """Three nodes (secure and plaintext roles) shared by a test module."""
    network = LocalNetwork(SimulationConfig(n_nodes=3))
    try:
        yield network.start()
    finally:
        network.stop()
        assert not node_processes(network.workdir), "node processes outlived their network"


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Model]:
    """Tiny random GPT-2, LLaMA and BERT checkpoints written as HF directories and loaded in float64."""
    root = tmp_path_factory.mktemp("tiny")
    models = {"gpt2": tiny_gpt2(seed=1), "llama": tiny_llama(seed=3), "bert": tiny_bert(seed=2)}
    return {name: load_checkpoint(save(model, root / name), torch.float64) for name, model in models.items()}
