"""Bounds before allocation at the node API, over real gRPC with mutual TLS: what one client may make a node hold.

A link that is flooded stops reading (the sender waits; nothing is buffered beyond the bound); a step whose tokens
exceed the session's rows or memory budget is refused before its shares are expanded, on secure parties and
plaintext workers alike; a model whose weights exceed max_model_bytes is refused when its publish opens; a leader's
batch plan that declares steps outside the limits is refused; and with the default admission settings no single
client can hold every session slot.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Iterator

import grpc
import pytest
import torch

from secureinfer.client.connection import RequestFailed, SessionSpec
from secureinfer.mpc.comm import Channel
from secureinfer.mpc.models import serving
from secureinfer.mpc.party import EngineConfig
from secureinfer.net import frames
from secureinfer.net.errors import PeerFailed
from secureinfer.net.wire import config_to_json
from secureinfer.nodes.batching import Member, Plan, _check_plan
from secureinfer.v1 import node_pb2

from .committee import PUBLIC, SECRET, Net, running_committee, sealed
from .netutil import (Cluster, LoopThread, Outcome, Pki, finish, open_message, open_stream, session_id, tiny_config,
                      wait_until)

Code = grpc.StatusCode
PEER_WAIT_S = 6.0
BUDGET = 2 << 20  # the nodes' session_memory_bytes here: a link holds at most this much unread
ROWS = 2000  # the nodes' session_max_rows here, so that the memory budget is what refuses a large step


@pytest.fixture(scope="module")
def net(pki: Pki, loop: LoopThread) -> Iterator[Net]:
    with running_committee(pki, loop, PEER_WAIT_S, session_memory_bytes=BUDGET, session_max_rows=ROWS) as running:
        yield running


def frame_messages(payload: torch.Tensor | bytes, tag: str) -> list[node_pb2.ClientMessage]:
    return [node_pb2.ClientMessage(frame=f) for f in frames.encode(payload, tag, 0)]


# ------------------------------------------------------------------------------------------------ a flooded link


async def _flood(net: Net, total: int, chunk: int) -> tuple[int, int, Outcome]:
    """Open a secure session at n0 alone (its worker waits for peers that never come, reading nothing from the
    client) and write `total` bytes of messages at it; how many bytes went out before the writes stalled, the most
    the session's client link held unread, and how the stream ended."""
    sid = session_id()
    call = await open_stream(net.cluster, "alice", "n0", open_message(net.cluster, SECRET, 0, sid=sid,
                                                                       committee_id="c-secret"), timeout=30)
    written, held = 0, 0
    link = net.cluster.daemons["n0"].registry.get(sid).links["client"]
    for message in frame_messages(bytes(chunk), "flood") * (total // chunk):
        try:
            await asyncio.wait_for(call.write(message), timeout=2.0)
        except asyncio.TimeoutError:
            break
        written += chunk
        held = max(held, link.held_bytes)
    await asyncio.sleep(0.5)
    held = max(held, link.held_bytes)
    call.cancel()
    return written, held, await finish(call)


def test_a_flooded_link_stops_reading_instead_of_buffering(net: Net) -> None:
    """64 MiB of messages the session does not read yet: the node holds no more than its bound unread (plus what
    gRPC's flow-control windows take), and the sender's writes stall."""
    total, chunk = 64 << 20, 1 << 20
    written, held, _ = net.run(_flood(net, total, chunk), timeout=60)
    assert held <= BUDGET + chunk, held
    assert written < 24 << 20, f"{written >> 20} MiB written: the node kept reading"
    net.run(net.cluster.wait_idle(SECRET, within_s=PEER_WAIT_S + 5))


# ------------------------------------------------------------------------------------------------ step limits


def _logits(net: Net, ids: torch.Tensor, secret: bool) -> torch.Tensor:
    view = net.view(SECRET if secret else PUBLIC)
    spec = SessionSpec(task=node_pb2.TASK_DECODE, privacy=view.privacy, model_id="olivia/tiny", output="all")

    def program(channel: Channel) -> torch.Tensor:
        io = serving.SECRET if secret else serving.PUBLIC
        return serving.client_logits(channel, net.cfg, EngineConfig(), ids, (ids.shape[1],), io)[0]

    return net.alice.run_session(view, spec, program, timeout_s=60)


@pytest.mark.parametrize("secret", [True, False], ids=["secure", "plaintext"])
def test_a_step_over_the_memory_budget_is_refused(net: Net, secret: bool) -> None:
    """2000 rows of 8 tokens: their 13-wide one-hots take 3.3 MB as shares (two components), over a 2 MiB budget
    (each message, 1.7 MB, is within it)."""
    ids = torch.randint(0, net.cfg.vocab_size, (ROWS, net.cfg.max_positions))
    with pytest.raises(RequestFailed) as info:
        _logits(net, ids, secret)
    assert info.value.code == Code.INVALID_ARGUMENT and "limit" in str(info.value), info.value
    small = ids[:4]
    assert _logits(net, small, secret).shape == (4, net.cfg.max_positions, net.cfg.vocab_size)


def test_a_plaintext_step_over_the_row_limit_is_refused(pki: Pki, loop: LoopThread) -> None:
    """A plaintext worker counts rows too (its ids arrive in the clear, whole, within the payload limit)."""
    with running_committee(pki, loop, 2.0, session_max_rows=3) as small:
        with pytest.raises(RequestFailed) as info:
            _logits(small, torch.zeros(4, 2, dtype=torch.int64), secret=False)
        assert info.value.code == Code.INVALID_ARGUMENT and "4 rows" in str(info.value), info.value
        assert _logits(small, torch.zeros(3, 2, dtype=torch.int64), secret=False).shape[0] == 3


def test_a_message_over_the_budget_is_refused_from_its_first_chunk(net: Net) -> None:
    async def go() -> Outcome:
        call = await open_stream(net.cluster, "alice", "n0", open_message(net.cluster, PUBLIC, 0,
                                                                           committee_id="c-public"))
        head = node_pb2.Frame(tag="tokens", kind=node_pb2.PAYLOAD_KIND_BYTES, total_bytes=BUDGET + 1,
                              data=b"x", last=False)
        await call.write(node_pb2.ClientMessage(frame=head))
        return await finish(call)

    out = net.run(go())
    assert out.code == Code.INVALID_ARGUMENT and "exceeds the limit" in out.details, out


# ------------------------------------------------------------------------------------------------ publishing


def test_a_model_over_max_model_bytes_is_refused_when_its_publish_opens(pki: Pki, loop: LoopThread) -> None:
    cluster = Cluster(pki, loop)
    try:
        cluster.start("n0", max_model_bytes=1 << 20)
        big = tiny_config(vocab_size=40_000)  # its 40,000 x 8 embedding alone: 2.6 MB in float64

        async def go() -> Outcome:
            call = cluster.inference("olivia", "n0").Session(timeout=10)
            await call.write(open_message(cluster, ("n0",), 0, task=node_pb2.TASK_PUBLISH, committee_id="c-big",
                                          model_config_json=config_to_json(big)))
            return await finish(call)

        out = cluster.run(go())
        assert out.code == Code.INVALID_ARGUMENT and "max_model_bytes" in out.details, out
    finally:
        cluster.close()


def test_a_seed_for_an_unexpected_weight_is_refused_before_expansion(net: Net) -> None:
    """An owner's seed message for a weight the architecture does not have, or at another shape, is refused from
    what it declares, before it is expanded."""

    def publish_session(messages: list[tuple[bytes, str]]) -> Outcome:
        async def go() -> Outcome:
            call = await open_stream(net.cluster, "olivia", "n0", sealed(open_message(
                net.cluster, SECRET, 0, task=node_pb2.TASK_PUBLISH, committee_id="c-seeds",
                model_config_json=config_to_json(net.cfg)), net.cluster.pki.identity("olivia")), timeout=20)
            try:
                for payload, tag in messages:
                    for message in frame_messages(payload, tag):
                        await call.write(message)
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
                pass
            return await finish(call)

        return net.run(go(), timeout=30)

    seed = b"S" + os.urandom(16) + struct.pack("<B2q", 2, 1 << 13, 1 << 13)  # 512 MiB once expanded
    for name in (b"no.such.weight", b"transformer.wte.weight"):
        out = publish_session([(struct.pack("<I", 1), "weights"), (name, "weights"), (seed, "weights")])
        assert out.code == Code.INVALID_ARGUMENT, (name, out)
        assert out.seconds < 5.0, out


# ------------------------------------------------------------------------------------------------ batch plans


def test_a_batch_plan_outside_the_limits_is_refused() -> None:
    cfg, limits = tiny_config(), serving.StepLimits(max_rows=4, max_input_bytes=1 << 20)
    ok = Plan("batch-" + "0" * 32, (Member("a" * 16, 4, 8, 0), Member("b" * 16, 2, 1, 7)))
    _check_plan(cfg, ok, {"a" * 16}, limits)
    for member in (Member("c" * 16, 5, 1, 0), Member("c" * 16, 1, 0, 0), Member("c" * 16, 1, 2, 7)):
        with pytest.raises(PeerFailed, match="outside this node's limits"):
            _check_plan(cfg, Plan(ok.batch_id, (member,)), set(), limits)
    many = Plan(ok.batch_id, tuple(Member(f"{i:016d}", 4, 8, 0) for i in range(200)))
    with pytest.raises(PeerFailed, match="placeholders"):
        _check_plan(cfg, many, set(), limits)


# ------------------------------------------------------------------------------------------------ admission


def test_one_client_cannot_hold_every_session_slot_by_default(pki: Pki, loop: LoopThread) -> None:
    """Default settings (max_sessions 4): alice holds two sessions, her third is RESOURCE_EXHAUSTED, bob gets in."""
    cluster = Cluster(pki, loop)
    try:
        daemon = cluster.start("n0", peer_wait_s=20.0)

        async def hold(who: str) -> object:
            return cluster.inference(who, "n0").Session(timeout=30)

        held = [cluster.run(hold("alice")) for _ in range(2)]
        wait_until(lambda: daemon.admission.active("alice") == 2, 10.0, "alice's two sessions admitted")

        async def refused(who: str) -> Outcome:
            call = cluster.inference(who, "n0").Session(timeout=10)
            await call.write(open_message(cluster, SECRET, 0, sid="short"))
            await call.done_writing()
            return await finish(call)

        out = cluster.run(refused("alice"))
        assert out.code == Code.RESOURCE_EXHAUSTED and "limit of concurrent sessions is 2" in out.details, out
        assert cluster.run(refused("bob")).code == Code.INVALID_ARGUMENT  # admitted; its open is judged instead

        async def cancel() -> None:
            for call in held:
                call.cancel()

        cluster.run(cancel())
    finally:
        cluster.close()
