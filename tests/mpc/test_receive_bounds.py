"""Receiving-side bounds of the engine: a party checks the shape an input owner's message declares before it expands
a seed (sharing.receive_input), the token steps of a session against the model and its StepLimits
(serving.check_tokens, serve_steps), and published weights against the architecture (weights.receive,
receive_public). What is sent is unchanged: only what a receiver accepts."""

from __future__ import annotations

import os
import struct
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from secureinfer.models.config import parameter_shapes
from secureinfer.models.requests import RequestError
from secureinfer.mpc import prg
from secureinfer.mpc.comm import memory
from secureinfer.mpc.models import serving, weights
from secureinfer.mpc.party import PARTY_NAMES, EngineConfig, Party
from secureinfer.mpc.protocols import sharing
from secureinfer.mpc.runtime import OWNER

from tests.tinymodels import tiny_config, tiny_params


@pytest.fixture
def expansions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Every shape a PRG expands during the test."""
    seen: list[tuple[int, ...]] = []
    ring = prg.PRG.ring

    def spy(self: prg.PRG, shape: tuple[int, ...]) -> torch.Tensor:
        seen.append(tuple(shape))
        return ring(self, shape)

    monkeypatch.setattr(prg.PRG, "ring", spy)
    return seen


def owner_and_party(index: int = 0) -> tuple[memory.MemoryChannel, Party]:
    network = memory.MemoryNetwork([OWNER, *PARTY_NAMES], timeout_s=5.0)
    return network.channel(OWNER), Party.receiver(index, network.channel(PARTY_NAMES[index]), EngineConfig())


def seed(shape: tuple[int, ...]) -> bytes:
    return b"S" + os.urandom(16) + struct.pack(f"<B{len(shape)}q", len(shape), *shape)


# ------------------------------------------------------------------------------------------------ sharing


def test_receive_input_checks_each_declared_shape_before_expanding(expansions: list) -> None:
    owner, party = owner_and_party()
    refused: list[tuple[int, ...]] = []

    def check(shape: tuple[int, ...]) -> None:
        if shape != (2, 3):
            refused.append(shape)
            raise ValueError(f"not {shape}")

    owner.send(PARTY_NAMES[0], seed((1 << 20, 1 << 20)), "in")
    with pytest.raises(ValueError, match="not"):
        sharing.receive_input(party, OWNER, "in", check=check)
    assert refused == [(1 << 20, 1 << 20)] and expansions == []


@pytest.mark.parametrize("second", [(3, 2), (2, 3, 1)])
def test_components_of_different_shapes_are_refused_before_the_second_expands(expansions: list,
                                                                               second: tuple) -> None:
    owner, party = owner_and_party()
    owner.send(PARTY_NAMES[0], seed((2, 3)), "in")
    owner.send(PARTY_NAMES[0], seed(second), "in")
    with pytest.raises(sharing.InputError, match="different shapes"):
        sharing.receive_input(party, OWNER, "in")
    assert expansions == [(2, 3)]


@pytest.mark.parametrize("message", [seed((-1, 4)), seed((1 << 40, 1 << 40)), seed((1,) * 9), b"S" + bytes(5),
                                     b"X" + bytes(30)], ids=["negative", "overflow", "nine-dims", "short", "tag"])
def test_impossible_or_malformed_seed_messages_are_input_errors(expansions: list, message: bytes) -> None:
    owner, party = owner_and_party()
    owner.send(PARTY_NAMES[0], message, "in")
    with pytest.raises(sharing.InputError):
        sharing.receive_input(party, OWNER, "in")
    assert expansions == []


def test_a_good_input_is_received_as_before() -> None:
    network = memory.MemoryNetwork([OWNER, *PARTY_NAMES], timeout_s=5.0)
    x = torch.arange(12, dtype=torch.int64).reshape(3, 4)
    sharing.send_input(network.channel(OWNER), x, "in")
    shares = [sharing.receive_input(Party.receiver(i, network.channel(PARTY_NAMES[i]), EngineConfig()), OWNER, "in",
                                    check=lambda shape: None) for i in range(3)]
    assert torch.equal(shares[0].lo + shares[1].lo + shares[2].lo, x)


# ------------------------------------------------------------------------------------------------ token steps


def test_check_tokens_caps_rows_and_memory() -> None:
    cfg = tiny_config()  # vocabulary 13, 8 positions
    limits = serving.StepLimits(max_rows=4, max_input_bytes=4 * 8 * 13 * 16)
    serving.check_tokens(cfg, (4, 8, 13), None, limits)
    with pytest.raises(RequestError, match="5 rows exceeds"):
        serving.check_tokens(cfg, (5, 1, 13), None, limits)
    with pytest.raises(RequestError, match="over this session's limit"):
        serving.check_tokens(cfg, (4, 8, 13), None, serving.StepLimits(max_rows=4, max_input_bytes=1000))
    with pytest.raises(RequestError, match="exceed max_positions"):
        serving.check_tokens(cfg, (1, 2, 13), _cache_of(7), limits)  # 7 positions cached already
    with pytest.raises(RequestError, match=r"\(B, T, 13\)"):
        serving.check_tokens(cfg, (1, 1, 1 << 30), None, limits)
    assert serving.StepLimits() == serving.StepLimits(serving.MAX_ROWS, serving.MAX_INPUT_BYTES)
    with pytest.raises(ValueError):
        serving.StepLimits(max_rows=0)


def _cache_of(length: int) -> Any:
    """A stand-in for a decoder's cache that already holds `length` positions (all check_tokens reads of it)."""
    return SimpleNamespace(length=length)


def test_serve_steps_refuses_a_huge_step_before_expanding_it(expansions: list) -> None:
    """A client's step declaring 2^22 rows: the party says ready, refuses the step, and expanded nothing."""
    cfg = tiny_config()
    network = memory.MemoryNetwork(["client", *PARTY_NAMES], timeout_s=5.0)
    party = Party.receiver(0, network.channel(PARTY_NAMES[0]), EngineConfig())
    client = network.channel("client")
    client.send(PARTY_NAMES[0], b"step", "ctrl")
    client.send(PARTY_NAMES[0], seed((1 << 22, 1, 13)), "tokens")
    client.send(PARTY_NAMES[0], seed((1 << 22, 1, 13)), "tokens")
    with pytest.raises(RequestError, match="rows exceeds"):
        serving.serve_steps(party, cfg, False, lambda *a: None, client="client")
    assert client.recv(PARTY_NAMES[0], "ready") == b"ready"
    assert expansions == []


# ------------------------------------------------------------------------------------------------ weights


def test_weights_receive_refuses_unknown_or_misshapen_weights_before_expanding(expansions: list) -> None:
    cfg = tiny_config()
    shapes = parameter_shapes(cfg)
    for name, shape in (("no.such.weight", (2, 2)), ("transformer.wte.weight", (1 << 20, 8))):
        owner, party = owner_and_party()
        owner.send(PARTY_NAMES[0], struct.pack("<I", 1), "weights")
        owner.send(PARTY_NAMES[0], name.encode(), "weights")
        owner.send(PARTY_NAMES[0], seed(shape), "weights")
        with pytest.raises(weights.WeightsError):
            weights.receive(party, OWNER, shapes=shapes)
    owner, party = owner_and_party()
    owner.send(PARTY_NAMES[0], struct.pack("<I", len(shapes) + 1), "weights")
    with pytest.raises(weights.WeightsError, match="announced"):
        weights.receive(party, OWNER, shapes=shapes)
    assert expansions == []


def test_weights_published_as_expected_are_received_with_the_shapes() -> None:
    cfg = tiny_config()
    params = serving.owner_params(cfg, tiny_params(cfg))
    network = memory.MemoryNetwork([OWNER, *PARTY_NAMES], timeout_s=10.0)
    weights.publish(network.channel(OWNER), params, EngineConfig().fxp)
    expected = {k: tuple(v.shape) for k, v in params.items()}
    got = [weights.receive(Party.receiver(i, network.channel(PARTY_NAMES[i]), EngineConfig()), OWNER,
                           shapes=expected) for i in range(3)]
    assert set(got[0]) == set(params) and all(tuple(got[1][k].shape) == s for k, s in expected.items())


def test_receive_public_refuses_a_duplicate_a_misshapen_weight_and_too_many_bytes() -> None:
    cfg = tiny_config()
    params = tiny_params(cfg)
    shapes = parameter_shapes(cfg)

    def run(sent: list[tuple[str, torch.Tensor]], **bounds: object) -> dict:
        network = memory.MemoryNetwork([OWNER, "worker"], timeout_s=5.0)
        owner = network.channel(OWNER)
        owner.send("worker", struct.pack("<I", len(sent)), "weights")
        for name, value in sent:
            owner.send("worker", name.encode(), "weights")
            owner.send("worker", value, "weights")
        return weights.receive_public(network.channel("worker"), OWNER, **bounds)

    wte = params["transformer.wte.weight"]
    with pytest.raises(weights.WeightsError, match="twice"):
        run([("transformer.wte.weight", wte)] * 2)
    with pytest.raises(weights.WeightsError, match="expected"):
        run([("transformer.wte.weight", wte[:5])], shapes=shapes)
    with pytest.raises(weights.WeightsError, match="limit of 100 bytes"):
        run([("transformer.wte.weight", wte)], max_bytes=100)
    assert set(run(list(params.items()), shapes=shapes, max_bytes=1 << 20)) == set(params)
