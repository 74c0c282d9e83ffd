"""A party that alters an output share is named by the client, over real node processes and mutual TLS.

One node of three runs through tests/e2e/faulty_node.py: every output share it sends a client has its first
component one ring unit off (a one-ulp error in the opened value at most, invisible without the cross-check), while
it vouches for the true component to its neighbour. The client must refuse the output with OutputMismatch
(DATA_LOSS) naming that node, for a generation and for an embedding, and the nodes stay healthy.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from secureinfer.client import Client, OutputMismatch
from secureinfer.lab.simulate import LocalNetwork, SimulationConfig

from .conftest import node_processes, random_ids

FAULTY_NODE = Path(__file__).with_name("faulty_node.py")
FAULTY = 1  # node-1 deviates


class _OneFaultyNode(LocalNetwork):
    """A local network whose node FAULTY starts through the faulty launcher."""

    def _launch_prefix(self, index: int) -> list[str]:
        return [sys.executable, str(FAULTY_NODE)] if index == FAULTY else []


def _wait_until_every_node_sees_all(network: LocalNetwork, within_s: float = 30.0) -> None:
    """Nodes accept a committee only of nodes in their own membership table: wait until each one lists all three."""
    client = network.client(timeout_s=10.0)
    deadline = time.monotonic() + within_s
    try:
        for address in network.addresses:
            view = Client(client.identity, [address], timeout_s=10.0)
            try:
                while len(view.connector.status().records) < len(network.node_ids):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the node at {address} does not list every node")
                    time.sleep(0.2)
            finally:
                view.close()
    finally:
        client.close()


@pytest.fixture(scope="module")
def faulty_network(tiny_models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    network = _OneFaultyNode(SimulationConfig(n_nodes=3, workdir=tmp_path_factory.mktemp("faulty")))
    try:
        network.start()
        _wait_until_every_node_sees_all(network)
        owner = network.owner()
        for name in ("gpt2", "bert"):
            cfg, params = tiny_models[name]
            owner.publish(f"tiny-{name}", cfg, params)
        yield network
    finally:
        network.stop()
        assert not node_processes(network.workdir), "node processes outlived their network"


def _named(error: OutputMismatch) -> None:
    print(error)
    assert error.code == grpc.StatusCode.DATA_LOSS and not error.retryable
    assert error.nodes == (f"node-{FAULTY}",) and error.node == f"node-{FAULTY}"


def test_generation_names_the_node_that_altered_its_output_share(faulty_network):
    client = faulty_network.client(timeout_s=300.0)
    seen = []
    try:
        with pytest.raises(OutputMismatch) as info:
            client.generate("tiny-gpt2", random_ids(1, 4, seed=5), 3, on_token=seen.append)
    finally:
        client.close()
    _named(info.value)
    assert seen == []  # no token sampled from an altered output was handed out


def test_embedding_names_the_node_that_altered_its_output_share(faulty_network):
    client = faulty_network.client(timeout_s=300.0)
    try:
        with pytest.raises(OutputMismatch) as info:
            client.embed("tiny-bert", random_ids(2, 5, seed=6))
    finally:
        client.close()
    _named(info.value)
    assert all(faulty_network.health(n) for n in faulty_network.node_ids)
