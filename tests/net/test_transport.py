"""The engine's Channel over streams: order, Lamport clocks, shaping, failures and deadlines (fake and real gRPC)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import torch

from secureinfer.mpc.comm import CommError, LinkModel, Message
from secureinfer.net import frames
from secureinfer.net.transport import MESSAGE_OVERHEAD, GrpcChannel, Link
from secureinfer.v1 import node_pb2, node_pb2_grpc

from tests.nodes.netutil import LoopThread

BIG = 3 * (1 << 20) + 12_345  # bytes: a multi-chunk message


def wrap(frame: node_pb2.Frame) -> node_pb2.PeerMessage:
    return node_pb2.PeerMessage(frame=frame)


def unwrap(message: node_pb2.PeerMessage) -> node_pb2.Frame | None:
    return message.frame if message.HasField("frame") else None


class FakeStream:
    """One end of an in-memory bidirectional stream: None in a queue means the other end half-closed."""

    def __init__(self, incoming: asyncio.Queue, outgoing: asyncio.Queue, client_side: bool) -> None:
        self.incoming, self.outgoing = incoming, outgoing
        if client_side:
            self.done_writing = self._done_writing

    async def read(self) -> Any:
        item = await self.incoming.get()
        if item is None:
            return grpc.aio.EOF
        if isinstance(item, BaseException):
            raise item
        return item

    async def write(self, message: Any) -> None:
        await self.outgoing.put(message)

    async def _done_writing(self) -> None:
        await self.outgoing.put(None)


class Pair:
    """Two GrpcChannels, P0 and P1, joined by one fake stream and pumped on the test loop."""

    def __init__(self, loop: LoopThread, shaping: LinkModel = LinkModel(), deadline_s: float = 20.0) -> None:
        self.loop = loop

        async def build() -> None:
            q01, q10 = asyncio.Queue(), asyncio.Queue()
            self.stream0 = FakeStream(q10, q01, client_side=True)
            self.stream1 = FakeStream(q01, q10, client_side=False)
            running = asyncio.get_running_loop()
            self.link0 = Link("P1", running, wrap, unwrap, shaping=shaping)
            self.link1 = Link("P0", running, wrap, unwrap, shaping=shaping)
            self.pump0 = asyncio.ensure_future(self.link0.run(self.stream0))
            self.pump1 = asyncio.ensure_future(self.link1.run(self.stream1))
            self.q01, self.q10 = q01, q10

        loop.run(build())
        deadline = time.monotonic() + deadline_s
        self.c0 = GrpcChannel("P0", {"P1": self.link0}, deadline)
        self.c1 = GrpcChannel("P1", {"P0": self.link1}, deadline)

    def close(self) -> None:
        async def stop() -> None:
            for pump in (self.pump0, self.pump1):
                pump.cancel()
            await asyncio.gather(self.pump0, self.pump1, return_exceptions=True)

        self.loop.run(stop())


@pytest.fixture
def pair(loop: LoopThread) -> Iterator[Pair]:
    p = Pair(loop)
    yield p
    p.close()


def test_messages_both_ways_in_order_with_lamport_clocks(pair: Pair) -> None:
    big = torch.arange(BIG // 8, dtype=torch.int64)
    pair.c0.send("P1", big, "a")
    pair.c0.send("P1", b"second", "b")
    for i in range(20):
        pair.c0.send("P1", torch.full((i + 1,), i, dtype=torch.int32), f"m{i}")
    assert torch.equal(pair.c1.recv("P0", "a"), big)
    assert pair.c1.stats.rounds == 1  # sent at clock 0: receiving moves P1's clock to 1
    assert pair.c1.recv("P0", "b") == b"second"
    for i in range(20):
        got = pair.c1.recv("P0", f"m{i}")
        assert got.dtype == torch.int32 and torch.equal(got, torch.full((i + 1,), i, dtype=torch.int32))
    assert pair.c1.stats.rounds == 1  # independent messages sent together cost one round
    reply = torch.randn(5, 7, dtype=torch.float64)
    pair.c1.send("P0", reply, "reply")  # carries clock 1
    assert torch.equal(pair.c0.recv("P1", "reply"), reply)
    assert pair.c0.stats.rounds == 2
    pair.c0.send("P1", b"x", "again")  # carries clock 2
    pair.c1.recv("P0", "again")
    assert pair.c1.stats.rounds == 3
    assert pair.link1.bytes_received == BIG // 8 * 8 + len(b"second") + sum(4 * (i + 1) for i in range(20)) + 1


def test_wrong_tag_is_an_error(pair: Pair) -> None:
    pair.c0.send("P1", b"x", "expected-not")
    with pytest.raises(CommError, match="expected step"):
        pair.c1.recv("P0", "expected")


def test_unknown_peer_is_an_error(pair: Pair) -> None:
    with pytest.raises(CommError, match="no link"):
        pair.c0.send("P2", b"x", "t")


def test_latency_shaping_delays_delivery(loop: LoopThread) -> None:
    pair = Pair(loop, LinkModel(latency_s=0.25))
    try:
        start = time.monotonic()
        pair.c0.send("P1", b"ping", "t")
        pair.c1.recv("P0", "t")
        one = time.monotonic() - start
        assert 0.24 <= one < 0.6, one
        start = time.monotonic()
        for i in range(10):  # pipelined: ten messages sent together arrive together, one latency later, in order
            pair.c0.send("P1", str(i).encode(), "t")
        assert [pair.c1.recv("P0", "t") for _ in range(10)] == [str(i).encode() for i in range(10)]
        ten = time.monotonic() - start
        assert 0.24 <= ten < 0.6, ten
    finally:
        pair.close()


def test_shaped_messages_are_written_before_the_close(loop: LoopThread) -> None:
    """`finish` right after a delayed send must not overtake it (the last message would be lost)."""
    pair = Pair(loop, LinkModel(latency_s=0.2))
    try:
        pair.c0.send("P1", b"result", "t")
        pair.c0.finish()
        assert pair.c1.recv("P0", "t") == b"result"
    finally:
        pair.close()


def test_bandwidth_shaping_delays_by_size(loop: LoopThread) -> None:
    pair = Pair(loop, LinkModel(bandwidth_bytes_per_s=2_000_000.0))
    try:
        start = time.monotonic()
        pair.c0.send("P1", bytes(400_000), "t")  # 0.2 s at 2 MB/s
        pair.c0.send("P1", bytes(200_000), "t")  # queued behind it: 0.3 s in all
        pair.c1.recv("P0", "t")
        first = time.monotonic() - start
        pair.c1.recv("P0", "t")
        both = time.monotonic() - start
        assert 0.19 <= first < 0.5 and 0.29 <= both < 0.7, (first, both)
    finally:
        pair.close()


def test_failed_link_wakes_blocked_receive_promptly(pair: Pair, loop: LoopThread) -> None:
    loop.loop.call_soon_threadsafe(loop.loop.call_later, 0.2, pair.link1.fail, CommError("boom"))
    start = time.monotonic()
    with pytest.raises(CommError, match="boom"):
        pair.c1.recv("P0", "t")
    assert time.monotonic() - start < 1.0
    with pytest.raises(CommError):  # and every later receive and send fails the same way
        pair.c1.recv("P0", "t")
    with pytest.raises(CommError, match="down"):
        pair.c1.send("P0", b"x", "t")


def test_broken_stream_fails_the_link(pair: Pair, loop: LoopThread) -> None:
    loop.loop.call_soon_threadsafe(loop.loop.call_later, 0.2, pair.q01.put_nowait, ConnectionResetError("reset"))
    start = time.monotonic()
    with pytest.raises(CommError, match="reset"):
        pair.c1.recv("P0", "t")
    assert time.monotonic() - start < 1.0
    assert pair.pump1.done() and isinstance(pair.pump1.exception(), ConnectionResetError)


def test_remote_half_close_wakes_blocked_receive(pair: Pair) -> None:
    """A peer that closes its side while we still wait for it must not leave us blocked until the deadline."""
    pair.c0.send("P1", b"last words", "t")
    threading.Timer(0.2, pair.c0.finish).start()
    assert pair.c1.recv("P0", "t") == b"last words"  # what was sent before the close still arrives
    start = time.monotonic()
    with pytest.raises(CommError, match="closed"):
        pair.c1.recv("P0", "t")
    assert time.monotonic() - start < 1.0


def test_malformed_frame_fails_the_link(pair: Pair, loop: LoopThread) -> None:
    bad = node_pb2.Frame(tag="t", kind=node_pb2.PAYLOAD_KIND_TENSOR, dtype="int64", shape=[3], total_bytes=16,
                         data=bytes(16), last=True)
    loop.loop.call_soon_threadsafe(pair.q01.put_nowait, wrap(bad))
    with pytest.raises(CommError, match="does not match"):
        pair.c1.recv("P0", "t")


def test_receive_past_deadline_raises(loop: LoopThread) -> None:
    pair = Pair(loop, deadline_s=0.3)
    try:
        start = time.monotonic()
        with pytest.raises(CommError, match="timed out"):
            pair.c1.recv("P0", "t")
        assert 0.29 <= time.monotonic() - start < 1.0
    finally:
        pair.close()


def test_finish_half_closes_and_both_pumps_end(pair: Pair, loop: LoopThread) -> None:
    pair.c0.send("P1", b"bye", "t")
    assert pair.c1.recv("P0", "t") == b"bye"
    pair.c0.finish()
    pair.c1.finish()

    async def both() -> None:
        await asyncio.wait_for(pair.pump1, 5)  # the server side ends once the client half-closed and it is done
        pair.q10.put_nowait(None)  # what gRPC does when the handler returns: the client reads the end
        await asyncio.wait_for(pair.pump0, 5)

    loop.run(both())
    assert pair.pump0.exception() is None and pair.pump1.exception() is None


def test_a_full_inbox_stops_the_reader_until_messages_are_taken(loop: LoopThread) -> None:
    """A link whose unread messages reach `max_inbox_bytes` reads no further frame (the remote is held back by flow
    control) until the engine takes some; then it reads on, and every message arrives in order."""
    size, bound, count = 10_000, 35_000, 20

    async def build() -> tuple[Link, asyncio.Queue, asyncio.Future]:
        incoming: asyncio.Queue = asyncio.Queue()
        for i in range(count):
            for frame in frames.encode(bytes([i]) * size, "t", 0):
                incoming.put_nowait(wrap(frame))
        link = Link("P0", asyncio.get_running_loop(), wrap, unwrap, max_inbox_bytes=bound)
        pump = asyncio.ensure_future(link.read_loop(FakeStream(incoming, asyncio.Queue(), client_side=False)))
        await asyncio.sleep(0.2)
        return link, incoming, pump

    link, incoming, pump = loop.run(build())
    try:
        waiting = loop.run(_size(incoming))
        assert waiting == count - 4, waiting  # read until 4 messages (over 35,000 bytes with their overhead) wait
        assert bound <= link.held_bytes <= bound + size + MESSAGE_OVERHEAD
        channel = GrpcChannel("P1", {"P0": link}, time.monotonic() + 10)
        for i in range(count):
            assert channel.recv("P0", "t") == bytes([i]) * size
        assert link.held_bytes == 0
        link.inbox.put(Message(b"left over", 0, "t"))  # what a session that ended left unread
        link.held_bytes += MESSAGE_OVERHEAD + 9
        link.discard()
        assert link.inbox.empty() and link.held_bytes == 0
    finally:
        loop.loop.call_soon_threadsafe(pump.cancel)


async def _size(queue: asyncio.Queue) -> int:
    return queue.qsize()


# ------------------------------------------------------------------------------------------------ real gRPC


class EchoPeer(node_pb2_grpc.PeerServicer):
    """A Peer service whose Link pumps the stream into a GrpcChannel named P1 that the test thread drives."""

    def __init__(self) -> None:
        self.channel: GrpcChannel | None = None
        self.ready = threading.Event()

    async def Link(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        link = Link("P0", asyncio.get_running_loop(), wrap, unwrap)
        self.channel = GrpcChannel("P1", {"P0": link}, time.monotonic() + 20)
        self.ready.set()
        await link.run(context)


def test_grpc_channel_pair_over_real_loopback_stream(loop: LoopThread) -> None:
    servicer = EchoPeer()

    async def start() -> tuple[grpc.aio.Server, grpc.aio.Channel, Any, asyncio.Future, Link]:
        server = grpc.aio.server()
        node_pb2_grpc.add_PeerServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        call = node_pb2_grpc.PeerStub(channel).Link(timeout=20)
        link = Link("P1", asyncio.get_running_loop(), wrap, unwrap)
        return server, channel, call, asyncio.ensure_future(link.run(call)), link

    server, channel, call, pump, link = loop.run(start())
    try:
        c0 = GrpcChannel("P0", {"P1": link}, time.monotonic() + 20)
        big = torch.randint(-(2 ** 62), 2 ** 62, (BIG // 8,), dtype=torch.int64)
        c0.send("P1", big, "big")
        c0.send("P1", torch.tensor([True, False, True]), "bits")
        assert servicer.ready.wait(10)
        c1 = servicer.channel
        assert c1 is not None
        assert torch.equal(c1.recv("P0", "big"), big)
        assert torch.equal(c1.recv("P0", "bits"), torch.tensor([True, False, True]))
        assert c1.stats.rounds == 1
        c1.send("P0", big.flip(0), "back")
        assert torch.equal(c0.recv("P1", "back"), big.flip(0))
        assert c0.stats.rounds == 2
        c0.finish()
        c1.finish()

        async def end() -> grpc.StatusCode:
            await asyncio.wait_for(pump, 10)
            return await call.code()

        assert loop.run(end()) == grpc.StatusCode.OK
    finally:
        async def stop() -> None:
            pump.cancel()
            await channel.close()
            await server.stop(0)

        loop.run(stop())
