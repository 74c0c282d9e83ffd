"""Every stream ends with the node's status, whatever its writer was doing (over real gRPC with mutual TLS).

gRPC core refuses a call's status while one of its writes is in flight (GRPC_CALL_ERROR_TOO_MANY_OPERATIONS): a
node that aborted a stream whose link was mid-write left the caller waiting for its own deadline. Each test here
fails a stream while the node is writing on it, and checks that the caller gets the node's status at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import grpc
import pytest
import torch

from secureinfer.client.connection import SessionSpec
from secureinfer.mpc.comm import Channel
from secureinfer.mpc.models import serving
from secureinfer.mpc.party import EngineConfig
from secureinfer.net import frames
from secureinfer.net.membership import CommitteeView
from secureinfer.plaintext import reference as plaintext
from secureinfer.v1 import node_pb2

from .committee import PUBLIC, Net, publish, running_committee
from .netutil import Cluster, LoopThread, Outcome, Pki, finish, open_message, open_stream, session_id

Code = grpc.StatusCode
PEER_WAIT_S = 2.0
DEADLINE_S = 8.0  # the callers' deadline: a status that arrives only then was lost
ROWS, STEPS = 32, 300  # the session race: 300 steps of 32 x 8 x 13 float64 logits = 8 MB of outputs
PARTY2 = ("n1", "n2", "n0")  # a committee with n0 as party 2: both other parties dial n0
GARBAGE = [b"\xff\xff\xff",
           node_pb2.PeerMessage(frame=node_pb2.Frame(tag="x", kind=node_pb2.PAYLOAD_KIND_TENSOR, dtype="complex64",
                                                     shape=[2], total_bytes=9, last=True)).SerializeToString()]


@pytest.fixture(scope="module")
def net(pki: Pki, loop: LoopThread) -> Iterator[Net]:
    with running_committee(pki, loop, PEER_WAIT_S) as running:
        view = CommitteeView("c-party2", PARTY2, tuple(running.cluster.address(n) for n in PARTY2),
                             node_pb2.PRIVACY_SECRET)
        publish(running.olivia, view, running.cfg, running.params)
        yield running


async def _peer_link_race(cluster: Cluster, garbage: bytes) -> Outcome:
    """Open a session at n0 (party 2), dial its Peer.Link as n1 (party 0), send the hello and at once garbage:
    n0 writes its key agreement message on that link while its reader fails."""
    sid = session_id()
    client = await open_stream(cluster, "alice", "n0", open_message(cluster, PARTY2, 2, sid=sid,
                                                                     committee_id="c-party2"), timeout=20)
    call = cluster.channel("n1", "n0").stream_stream("/secureinfer.v1.Peer/Link")(timeout=DEADLINE_S)
    start = time.monotonic()
    await call.write(node_pb2.PeerMessage(hello=node_pb2.LinkHello(session_id=sid, from_party=0, to_party=2))
                     .SerializeToString())
    await call.write(garbage)
    out = await finish(call, start)
    client.cancel()
    return out


@pytest.mark.parametrize("garbage", GARBAGE, ids=["not-a-message", "bad-frame"])
def test_a_failing_peer_link_gets_the_nodes_status(net: Net, garbage: bytes) -> None:
    """Finding 7: the dialling party learns at once why its link failed (today it waited for its deadline)."""
    for _ in range(5):
        out = net.run(_peer_link_race(net.cluster, garbage), timeout=30)
        assert out.code in (Code.INVALID_ARGUMENT, Code.UNAVAILABLE), out
        assert out.seconds < DEADLINE_S / 2, out
    net.run(net.cluster.wait_idle(("n0", "n1", "n2"), within_s=10.0))


def _frame_message(payload: torch.Tensor | bytes, tag: str) -> list[node_pb2.ClientMessage]:
    return [node_pb2.ClientMessage(frame=f) for f in frames.encode(payload, tag, 0)]


async def _session_race(cluster: Cluster, steps: int) -> Outcome:
    """A public session whose caller sends `steps` full-length steps (each after a reset) without reading their outputs
    (the node's writes stall on flow control), then a malformed frame, and only then reads."""
    call = await open_stream(cluster, "alice", "n0", open_message(cluster, PUBLIC, 0, committee_id="c-public",
                                                                   output="all"), timeout=DEADLINE_S)
    start = time.monotonic()
    tokens = torch.full((ROWS, 8), 2, dtype=torch.int64)  # every position: outputs of ROWS x 8 x 13 logits
    step = _frame_message(b"reset", "ctrl") + _frame_message(b"step", "ctrl") + _frame_message(tokens, "tokens")
    bad = node_pb2.Frame(tag="x", kind=node_pb2.PAYLOAD_KIND_TENSOR, dtype="int64", shape=[4], total_bytes=5,
                         last=True)
    try:
        for _ in range(steps):
            for message in step:
                await call.write(message)
        await asyncio.sleep(1.0)  # the node computes the steps; its outputs fill the flow-control window
        await call.write(node_pb2.ClientMessage(frame=bad))
    except grpc.aio.AioRpcError:
        pass  # the node ended the call already: its status says why
    return await finish(call, start)


def test_a_failing_session_stream_gets_the_nodes_status_while_outputs_are_unread(net: Net) -> None:
    """The same race on Inference.Session: the caller's malformed frame fails the session while the node's writer is
    blocked mid-write (its outputs fill the flow-control window); the caller reads on and gets INVALID_ARGUMENT, not
    its deadline. (The session's `accepted` message has already carried the stream's initial metadata, which is what
    keeps this one working: see nodes/servicers.py.)"""
    for _ in range(2):
        out = net.run(_session_race(net.cluster, steps=STEPS), timeout=40)
        assert out.code == Code.INVALID_ARGUMENT, out
        assert out.seconds < DEADLINE_S - 1.0, out
    net.run(net.cluster.wait_idle(("n0",), within_s=10.0))


def test_good_requests_after_the_races(net: Net) -> None:
    """The nodes stay up and serve the party-2 committee normally."""
    ids = torch.tensor([[2, 5, 7, 3]])
    view = CommitteeView("c-party2", PARTY2, tuple(net.cluster.address(n) for n in PARTY2), node_pb2.PRIVACY_SECRET)
    spec = SessionSpec(task=node_pb2.TASK_DECODE, privacy=view.privacy, model_id="olivia/tiny", output="all")

    def program(channel: Channel) -> torch.Tensor:
        return serving.client_logits(channel, net.cfg, EngineConfig(), ids, (ids.shape[1],))[0]

    got = net.alice.run_session(view, spec, program, timeout_s=60)
    assert (got - plaintext.gpt2_forward(net.cfg, net.params, ids)).abs().max().item() < 3e-3
