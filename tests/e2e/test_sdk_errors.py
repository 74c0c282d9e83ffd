"""The SDK's error contract over real node processes: every gRPC status the README lists reaches the caller as the
SDK's exception type with that `.code` (NOT_FOUND, INVALID_ARGUMENT, PERMISSION_DENIED, RESOURCE_EXHAUSTED,
DEADLINE_EXCEEDED, UNAVAILABLE), each from the nodes and, where the SDK checks first, from the SDK; an owner
certificate may run requests; and leaving `client.stream()` early ends the session on every node within seconds.

One network of three node processes hosts tiny models as secret shares: a GPT-2, and a LLaMA published without an
end-of-sequence token so its generations run their full length (seconds). Each node takes one session at a time
(max_sessions=1: a second session finds it full), and records live 30 s (a killed node's committee stays listed, so
the client tries it). The node kill comes last.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import grpc
import pytest
import torch

from secureinfer.client import Client, InvalidRequest, ModelNotFound, ModelOwner, RequestFailed
from secureinfer.lab.simulate import LocalNetwork, SimulationConfig
from secureinfer.net.certs import Identity
from secureinfer.plaintext import reference as plaintext
from secureinfer.strategy import SecureStrategy

from ..tinymodels import VOCAB
from .conftest import node_processes, random_ids

LONG = 60  # new tokens of a full-length LLaMA generation (prompt 3 + 60 - 1 <= its 64 positions): a minute here
ENDS_WITHIN_S = 5.0


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory, tiny_models) -> Iterator[LocalNetwork]:
    net = LocalNetwork(SimulationConfig(n_nodes=3, max_sessions=1, record_ttl_s=30.0,
                                        workdir=tmp_path_factory.mktemp("errors")))
    try:
        net.start()
        owner = net.owner()
        owner.publish("tiny-gpt2", *tiny_models["gpt2"])
        cfg, params = tiny_models["llama"]
        owner.publish("long-llama", dataclasses.replace(cfg, eos_token_ids=()), params)
        yield net
    finally:
        net.stop()
        assert not node_processes(net.workdir), "node processes outlived their network"


def active_sessions(network: LocalNetwork) -> dict[str, int]:
    """Sessions each running node has open now (its registry, through the Status call)."""
    identity = Identity.load(network.certs_dir, "client")
    counts = {}
    for node_id in network.node_ids:
        if network.is_running(node_id):
            with Client(identity, [network.address(node_id)], timeout_s=10.0) as one:
                counts[node_id] = one.connector.status().active_sessions
    return counts


def wait_idle(network: LocalNetwork, within_s: float) -> float:
    """Seconds until no node has a session open; AssertionError after `within_s`."""
    start = time.monotonic()
    while any(active_sessions(network).values()):
        assert time.monotonic() - start < within_s, f"sessions still open after {within_s} s: " \
                                                    f"{active_sessions(network)}"
        time.sleep(0.1)
    return time.monotonic() - start


def as_member(network: LocalNetwork, kind: type, name: str, timeout_s: float = 120.0):
    """A Client or ModelOwner with the identity `name` of the network's certificates."""
    return kind(Identity.load(network.certs_dir, name), network.addresses, timeout_s)


def test_breaking_out_of_a_stream_ends_the_session_on_every_node(network: LocalNetwork) -> None:
    client = network.client(timeout_s=300.0)
    prompt = random_ids(1, 3, seed=21)
    start = time.monotonic()
    for _token in client.stream("long-llama", prompt, LONG):
        break
    first_s = time.monotonic() - start
    ended_s = wait_idle(network, within_s=ENDS_WITHIN_S)
    start = time.monotonic()
    again = client.generate("long-llama", prompt, 4)  # the nodes serve the next request (one session at a time)
    step_s = (time.monotonic() - start) / 4
    print(f"first token after {first_s:.2f} s; every node's session ended {ended_s:.2f} s after the break, where the "
          f"{LONG - 1} remaining tokens take about {(LONG - 1) * step_s:.0f} s")
    assert again.tokens.shape == (1, 4)
    assert 2 * ended_s < (LONG - 1) * step_s  # left alone, the nodes would have gone on far longer


def test_each_documented_error_reaches_the_caller_with_its_type_and_code(network: LocalNetwork, tiny_models) -> None:
    client = network.client(timeout_s=120.0)
    gpt2 = client.committees("tiny-gpt2")[0]
    ids = random_ids(1, 4, seed=22)
    failures: dict[str, RequestFailed] = {}

    def expect(kind: type, code: grpc.StatusCode, call, label: str) -> RequestFailed:
        with pytest.raises(kind) as info:
            call()
        failures[label] = info.value
        assert info.value.code == code, (label, info.value)
        return info.value

    # NOT_FOUND: the SDK finds no node hosting the model (with or without a committee named); a committee asked
    # for a model it does not host says so itself
    expect(ModelNotFound, grpc.StatusCode.NOT_FOUND, lambda: client.generate("no-such-model", ids, 2), "sdk")
    expect(ModelNotFound, grpc.StatusCode.NOT_FOUND, lambda: client.generate("no-such-model", ids, 2, committee=gpt2),
           "sdk, committee")
    node_said = expect(RequestFailed, grpc.StatusCode.NOT_FOUND,
                       lambda: client.generate("long-llama", ids, 2, committee=gpt2), "node")
    assert node_said.node in gpt2.node_ids
    # INVALID_ARGUMENT: token ids outside the vocabulary (the SDK's check, also a ValueError); a precision the
    # committee does not hold (the nodes' check)
    bad = expect(InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: client.generate("tiny-gpt2", torch.tensor([[VOCAB + 5]]), 2), "sdk ids")
    assert isinstance(bad, ValueError)
    refused = expect(RequestFailed, grpc.StatusCode.INVALID_ARGUMENT,
                     lambda: client.logits("tiny-gpt2", ids, committee=gpt2, strategy=SecureStrategy(frac_bits=16)),
                     "node strategy")
    assert refused.node in gpt2.node_ids and "frac_bits" in refused.details
    # PERMISSION_DENIED: a client certificate publishing, a node certificate asking for inference
    with as_member(network, ModelOwner, "client") as impostor:
        expect(RequestFailed, grpc.StatusCode.PERMISSION_DENIED,
               lambda: impostor.publish("sneaky", *tiny_models["gpt2"], wait_s=1.0), "client publishes")
    with as_member(network, Client, "node-0") as node_as_client:
        expect(RequestFailed, grpc.StatusCode.PERMISSION_DENIED, lambda: node_as_client.generate("tiny-gpt2", ids, 2),
               "node infers")
    # an owner certificate may run requests (an owner testing its own model)
    with as_member(network, Client, "owner") as owner_as_client:
        tested = owner_as_client.generate("tiny-gpt2", ids, 2)
    assert torch.equal(tested.tokens, plaintext.greedy_generate(*tiny_models["gpt2"], ids, 2))
    # RESOURCE_EXHAUSTED: every node of the only committee is busy with a stream (max_sessions=1)
    busy_with = client.stream("long-llama", random_ids(1, 3, seed=23), LONG)
    next(busy_with)
    with network.client(timeout_s=60.0) as second:
        expect(RequestFailed, grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: second.generate("tiny-gpt2", ids, 2),
               "full")
    busy_with.close()
    wait_idle(network, within_s=ENDS_WITHIN_S)
    # DEADLINE_EXCEEDED: a generation far longer than the client's deadline
    with as_member(network, Client, "client", timeout_s=1.5) as hurried:
        expect(RequestFailed, grpc.StatusCode.DEADLINE_EXCEEDED,
               lambda: hurried.generate("long-llama", random_ids(1, 3, seed=24), LONG), "deadline")
    wait_idle(network, within_s=10.0)
    for label, failure in failures.items():
        print(f"{label:>16}: {type(failure).__name__} {failure}")


def test_a_dead_committee_node_is_unavailable(network: LocalNetwork) -> None:
    client = network.client(timeout_s=120.0)
    view = client.committees("tiny-gpt2")[0]
    network.kill(view.node_ids[1])
    with pytest.raises(RequestFailed) as info:
        client.generate("tiny-gpt2", random_ids(1, 4, seed=25), 2)
    print(f"{type(info.value).__name__}: {info.value}")
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
