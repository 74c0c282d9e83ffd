"""The engine's `Channel` over gRPC streams: one `Link` per remote participant, bridging threads and asyncio.

The engine is synchronous (a session's party program runs in its own thread) while the daemon serves gRPC on an
asyncio loop. A `Link` owns one bidirectional stream: `send` (any thread) encodes a message into frames and hands
them to the loop, whose writer task writes them in order; the reader task reassembles incoming frames and puts
each message in a thread-safe inbox that `recv` blocks on. A link may be created before its stream exists
(a peer that has not dialled yet): sends queue up and are written once the stream attaches. Shaping (latency,
bandwidth) gives each message a due time; the writer holds it until then, so order is kept and `finish` never
overtakes a delayed message. When the remote half-closes, receives beyond what already arrived fail at once.

The inbox is bounded: while the messages waiting in it hold `max_inbox_bytes` or more, the reader stops reading, so
gRPC's flow control holds the remote back instead of this side buffering whatever it sends. (It cannot deadlock: a
paused link has a message waiting, and the engine consumes each link's messages in order.) At most that bound plus
one payload (`max_payload_bytes`, checked from a payload's first chunk) is held per link.

Streams are duck-typed: a client-side call (`read`, `write`, `done_writing`) or a server-side context (`read`,
`write`); `wrap` turns a Frame into the stream's message type and `unwrap` takes it back out.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import torch

from secureinfer.mpc.comm import Channel, CommError, LinkModel, LinkSchedule, Message, payload_bytes
from secureinfer.v1 import node_pb2

from . import frames

_FINISH = object()  # outbox sentinel: no more messages on this link
DEFAULT_MAX_INBOX = 64 << 20
MESSAGE_OVERHEAD = 256  # bytes an inbox entry counts for beyond its payload (an empty message is not free)


class LinkTimeout(CommError):
    """No message arrived from the remote participant before the session's deadline."""


class Link:
    """One remote participant of a session, reached over one gRPC stream."""

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop, wrap: Callable[[node_pb2.Frame], Any],
                 unwrap: Callable[[Any], node_pb2.Frame | None], *, shaping: LinkModel = LinkModel(),
                 max_payload_bytes: int = frames.DEFAULT_MAX_PAYLOAD, max_inbox_bytes: int = DEFAULT_MAX_INBOX,
                 device: str | None = None, observer: Callable[[str, Message], None] | None = None) -> None:
        self.name = name
        self.observer = observer  # leakage audit only (mpc/comm/audit.py): sees every complete inbound message
        self.device = device  # received tensors are moved here (a CUDA party's peers' shares); None: left on CPU
        self.loop = loop
        self.wrap, self.unwrap = wrap, unwrap
        self.shaping = shaping
        self.max_payload_bytes = max_payload_bytes
        self.max_inbox_bytes = max_inbox_bytes
        self.inbox: queue.Queue[Message | BaseException] = queue.Queue()
        self.held_bytes = 0  # what the messages waiting in the inbox count for (MESSAGE_OVERHEAD each + payload)
        self._held_lock = threading.Lock()
        self._room = asyncio.Event()  # set (on the loop) when the inbox drops below its bound while the reader waits
        self._reader_waits = False
        self.outbox: asyncio.Queue[Any] = asyncio.Queue()
        self.error: BaseException | None = None
        self.bytes_received = 0
        self._schedule = LinkSchedule(shaping.latency_s, shaping.bandwidth_bytes_per_s)

    # --- the worker thread's side ----------------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Queue one message for the writer (thread-safe); frames are cut here, off the event loop."""
        if self.error is not None:
            raise CommError(f"link to {self.name} is down: {self.error}")
        batch = [self.wrap(f) for f in frames.encode(message.payload, message.tag, message.clock)]
        due = time.monotonic() + self._delay(payload_bytes(message.payload))
        self._post((due, batch))

    def _post(self, item: Any) -> None:
        """Hand an outbox item to the event loop (thread-safe); a closed loop means the link is gone."""
        try:
            self.loop.call_soon_threadsafe(self.outbox.put_nowait, item)
        except RuntimeError as exc:  # the loop was closed: the node or the SDK is shutting down
            raise CommError(f"link to {self.name} is closed: {exc}") from exc

    def receive(self, deadline: float) -> Message:
        """Block until the next message arrives, the link fails, or the monotonic `deadline` passes."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LinkTimeout(f"timed out waiting for {self.name}")
            try:
                item = self.inbox.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                self.inbox.put(item)  # every later receive fails the same way
                raise CommError(f"link to {self.name} failed: {item}") from item
            self._taken(item)
            if self.device is not None and isinstance(item.payload, torch.Tensor):
                return Message(item.payload.to(self.device, non_blocking=True), item.clock, item.tag)
            return item

    def _taken(self, message: Message) -> None:
        """Count a message out of the inbox; wake a reader that waits for room (thread-safe)."""
        with self._held_lock:
            self.held_bytes -= _held(message)
            wake = self._reader_waits and self.held_bytes < self.max_inbox_bytes
            if wake:
                self._reader_waits = False
        if wake:
            try:
                self.loop.call_soon_threadsafe(self._room.set)
            except RuntimeError:  # the loop is closed: nobody reads any more
                pass

    def _delay(self, size: int) -> float:
        """Seconds to hold a message back so the link behaves like the configured one (FIFO per link)."""
        now = time.monotonic()
        return self._schedule.arrival(size, now) - now

    # --- the event loop's side -------------------------------------------------------------------------------------

    def fail(self, error: BaseException) -> None:
        """Mark the link broken: pending and later receives raise, sends are refused (loop or thread)."""
        if self.error is None:
            self.error = error
            self.inbox.put(error)

    def discard(self) -> None:
        """Drop the messages still waiting in the inbox (their session has ended); a failure stays."""
        kept = []
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, BaseException):
                kept.append(item)
        for item in kept[:1]:
            self.inbox.put(item)
        with self._held_lock:
            self.held_bytes = 0

    def finish(self) -> None:
        """No more messages will be sent (thread-safe); the writer closes its half once the queue drains."""
        self._post(_FINISH)

    async def write_loop(self, stream: Any) -> None:
        """Write queued frames in order, each batch not before its due time, until `finish`; a client-side call
        then half-closes."""
        while True:
            item = await self.outbox.get()
            if item is _FINISH:
                break
            due, batch = item
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            for message in batch:
                await stream.write(message)
        done_writing = getattr(stream, "done_writing", None)
        if done_writing is not None:
            await done_writing()

    async def _until_room(self) -> None:
        """Return once the inbox holds less than its bound (module docstring: the remote waits meanwhile)."""
        while True:
            with self._held_lock:
                if self.held_bytes < self.max_inbox_bytes:
                    return
                self._reader_waits = True
                self._room.clear()
            await self._room.wait()

    async def read_loop(self, stream: Any) -> None:
        """Reassemble incoming frames into messages until the remote half-closes; pause while the inbox is full."""
        assembler = frames.Assembler(self.max_payload_bytes)
        while True:
            await self._until_room()
            message = await stream.read()
            if message is grpc.aio.EOF:
                # Receives after the messages already in the inbox fail at once instead of waiting for the deadline;
                # sending stays allowed (the remote only closed its half).
                self.inbox.put(CommError(f"{self.name} closed its side of the link"))
                return
            frame = self.unwrap(message)
            if frame is None:
                raise frames.FrameError(f"{self.name} sent a message that is not a frame")
            self.bytes_received += len(frame.data)
            complete = assembler.add(frame)
            if complete is not None:
                if self.observer is not None:
                    self.observer(self.name, complete)
                with self._held_lock:
                    self.held_bytes += _held(complete)
                self.inbox.put(complete)

    async def run(self, stream: Any) -> None:
        """Pump both directions of `stream` until both halves are done; any failure fails the link and re-raises."""
        writer = asyncio.ensure_future(self.write_loop(stream))
        try:
            await self.read_loop(stream)
            await writer
        except BaseException as exc:
            self.fail(exc if isinstance(exc, Exception) else CommError(f"link to {self.name} closed"))
            writer.cancel()
            raise


def _held(message: Message) -> int:
    return MESSAGE_OVERHEAD + payload_bytes(message.payload)


class GrpcChannel(Channel):
    """A session party's (or client's) `Channel` whose remote participants are reached through `Link`s."""

    def __init__(self, name: str, links: dict[str, Link], deadline: float) -> None:
        super().__init__(name)
        self.links = links
        self.deadline = deadline  # time.monotonic() after which receives fail

    def _link(self, name: str) -> Link:
        link = self.links.get(name)
        if link is None:
            raise CommError(f"{self.name} has no link to {name!r}; links: {sorted(self.links)}")
        return link

    def _deliver(self, to: str, message: Message) -> None:
        self._link(to).send(message)

    def _receive(self, frm: str) -> Message:
        return self._link(frm).receive(self.deadline)

    def abort(self, error: BaseException) -> None:
        """Fail every link (a participant died, the session was cancelled or ran out of time)."""
        for link in self.links.values():
            link.fail(error)

    def finish(self) -> None:
        """This side sends nothing more on any link."""
        for link in self.links.values():
            link.finish()
