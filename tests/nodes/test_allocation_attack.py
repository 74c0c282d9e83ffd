"""The allocation attack on a node process, from outside over mutual TLS: a client opens a real secure session at
all three parties and sends party 0 its `tokens` seed messages (a seed and the dimensions, about 60 bytes each) declaring
a shape the node must refuse. The node answers INVALID_ARGUMENT without expanding it: its peak resident memory
(VmHWM, reset before each attempt) grows by no more than the frame plus a fixed bound, and its RSS stays flat across
the attempts. Before the bounds, each attempt expanded the declared shape (gigabytes for 2^30 elements) first.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from secureinfer.net import frames
from secureinfer.v1 import node_pb2, node_pb2_grpc

from .fuzzutil import CORE_WRITE_RACE, Target, running_target
from .netutil import LoopThread, Outcome, Pki, finish, session_id

Code = grpc.StatusCode
FIXED_BOUND = 24 << 20  # what one refused session may add to the node's peak memory besides its frames
RSS_DRIFT = 16 << 20  # how far the node's RSS may move across the attempts after warm-up
# Shapes the tiny GPT-2 (vocabulary 13, 8 positions) must refuse, each expanding to 256 MiB or more.
REFUSED = {
    "wrong vocabulary": (1, 1, 1 << 25),
    "too many rows": (1 << 22, 1, 13),
    "too many positions": (1, 1 << 21, 13),
    "negative dimension": (-1, 1, 13),
    "too many dimensions": (1,) * 9,
}


@pytest.fixture(scope="module")
def target(pki: Pki, loop: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with running_target(pki, loop, tmp_path_factory.mktemp("allocation")) as running:
        yield running


def seed_message(shape: tuple[int, ...]) -> bytes:
    """The input owner's seed message of mpc/protocols/sharing.py for a component of `shape`."""
    return b"S" + os.urandom(16) + struct.pack(f"<B{len(shape)}q", len(shape), *shape)


def status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {name} for process {pid}")


def reset_peak(pid: int) -> None:
    """Reset the process's VmHWM to its current RSS (Linux: write 5 to /proc/PID/clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


async def attack(target: Target, shape: tuple[int, ...], second: tuple[int, ...] | None = None
                 ) -> tuple[Outcome, int]:
    """One attempt: open the session at n0 (party 0, the process), n1 and n2, wait for every party's ready, then send
    n0 a step whose two token seeds declare `shape` (the second: `second`, if given); how n0's stream ended and the
    bytes of the frames sent."""
    sid = session_id()
    calls = []
    for index, node in enumerate(("n0", "n1", "n2")):
        request = node_pb2.OpenSession(session_id=sid, task=node_pb2.TASK_DECODE, privacy=node_pb2.PRIVACY_SECRET,
                                       model_id="olivia/tiny", committee=target.committee(True), party_index=index,
                                       output="all")
        channel = target.channel("alice") if node == "n0" else target.cluster.channel("alice", node)
        call = node_pb2_grpc.InferenceStub(channel).Session(timeout=20)
        await call.write(node_pb2.ClientMessage(open=request))
        calls.append(call)
    for call in calls:
        for expected in ("accepted", "ready"):
            reply = await call.read()
            assert reply is not grpc.aio.EOF and (reply.HasField("accepted") if expected == "accepted" else
                                                   reply.frame.data == b"ready"), (expected, reply)
    sent = [node_pb2.ClientMessage(frame=f) for f in frames.encode(b"step", "ctrl", 0)]
    for declared in (shape, second or shape):  # party 0 holds components x_0 and x_1: both travel as seeds
        sent += [node_pb2.ClientMessage(frame=f) for f in frames.encode(seed_message(declared), "tokens", 0)]
    raced = False
    try:
        for message in sent:
            await calls[0].write(message)
    except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
        raced = True  # n0 refused the first seed and ended the call while the second was being written
    out = await finish(calls[0])
    for call in calls[1:]:
        call.cancel()
    if raced and out.code == Code.INTERNAL and out.details == CORE_WRITE_RACE:  # the client library lost n0's status
        out = Outcome(Code.INVALID_ARGUMENT, "(the client's own write race)", out.received, out.seconds)
    return out, sum(m.ByteSize() for m in sent)


def attempt(target: Target, shape: tuple[int, ...]) -> tuple[Outcome, int]:
    """One attack with n0's peak reset before it; the outcome and how far n0's peak rose above its RSS before."""
    pid = target.node.pid
    reset_peak(pid)
    before = status_field(pid, "VmRSS")
    out, sent = target.run(attack(target, shape), timeout=60)
    grown = status_field(pid, "VmHWM") - before
    assert out.code == Code.INVALID_ARGUMENT, (shape, out)
    assert grown <= sent + FIXED_BOUND, f"{shape}: peak grew by {grown >> 20} MiB on a frame of {sent} bytes"
    return out, grown


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_refused_shape_is_not_expanded(target: Target, case: str) -> None:
    out, _ = attempt(target, REFUSED[case])
    assert out.seconds < 5.0, out
    target.check()


def test_the_allocation_attack_repeated_100_times(target: Target) -> None:
    """100 attempts cycling through the refused shapes: each one bounded, and RSS flat after warm-up."""
    shapes = [REFUSED[c] for c in sorted(REFUSED)]
    rss, peaks = [], []
    for i in range(100):
        _, grown = attempt(target, shapes[i % len(shapes)])
        peaks.append(grown)
        target.wait_idle()
        rss.append(target.node.rss_bytes())
    settled = rss[10:]
    assert max(settled) - min(settled) <= RSS_DRIFT, [r >> 20 for r in rss]
    print(f"\nallocation attack x100: peak growth max {max(peaks) / 2**20:.1f} MiB; RSS MiB first {rss[0] >> 20}, "
          f"after warm-up {min(settled) >> 20}..{max(settled) >> 20}")
    target.check(secure=True)


@pytest.fixture
def roomy(pki: Pki, loop: LoopThread, tmp_path: Path) -> Iterator[Target]:
    """A target whose n0 accepts steps of up to 2^20 rows within its 1 GiB session budget."""
    with running_target(pki, loop, tmp_path, session_max_rows=1 << 20) as running:
        yield running


def test_the_memory_of_a_failed_session_is_released_when_it_ends(roomy: Target) -> None:
    """Four sessions that each expand 218 MB of token shares within the limits and then fail (the second component
    declares another shape): after each one ends, n0's RSS is back near where it was (before: it kept growing
    until some later garbage collection)."""
    rows = 1 << 18  # 2^18 x 8 x 13 ring elements: 218 MB
    roomy.wait_idle()
    baseline = roomy.node.rss_bytes()
    after = []
    for _ in range(4):
        out, _ = roomy.run(attack(roomy, (rows, 8, 13), (rows + 1, 8, 13)), timeout=120)
        assert out.code == Code.INVALID_ARGUMENT and "different shapes" in out.details, out
        roomy.wait_idle()
        after.append(roomy.node.rss_bytes())
    assert max(after) - baseline <= 48 << 20, [a >> 20 for a in [baseline, *after]]
