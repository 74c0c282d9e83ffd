"""A session's life on a node: one caller stream, links to the other parties, and a worker thread running the engine.

A session starts when a client or model owner opens an `Inference.Session` stream to this node:
  1. the open request is checked before anything runs (opening.py);
  2. a `GrpcChannel` is made with one `Link` per other participant: the caller, and for secure sessions the two
     other parties (this node dials the higher-index ones at the addresses of its own membership table, never the
     request's; the lower-index ones dial in through `Peer.Link`; both ends checked as peering.py says);
  3. a worker thread runs the session's engine program (dispatch.py: publish, or serve an inference) while the event
     loop pumps the links;
  4. the session ends when the worker returns (status OK once every link has drained), or fails as a whole when
     the worker raises, any link breaks, a lower party has not dialled in within `peer_wait_s`, the deadline
     passes or the caller cancels; the other links are then cancelled so the other parties fail fast too.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from secureinfer.models.requests import CLIENT, PUBLIC_WORKER
from secureinfer.mpc.comm import LinkModel
from secureinfer.mpc.comm.audit import FrameLog
from secureinfer.mpc.models.serving import StepLimits
from secureinfer.mpc.party import PARTY_NAMES, EngineConfig, KeySigner
from secureinfer.mpc.ring import DEFAULT_FRAC_BITS, FixedPoint
from secureinfer.mpc.runtime import OWNER
from secureinfer.net.certs import Identity, PeerCert
from secureinfer.net.errors import BadRequest, Busy, Cancelled, PeerFailed, SessionExists, SessionTimeout, Unauthorized
from secureinfer.net.frames import FrameError
from secureinfer.net.transport import DEFAULT_MAX_INBOX, GrpcChannel, Link
from secureinfer.v1 import node_pb2, node_pb2_grpc

from .peering import KnownPeer, NodeKeySigner, PeerDirectory, PeerRefused, check_caller, known_peer, unavailable
from .store import ModelStore
from .vault import Vault

PEER_WAIT_S = 30.0  # default: how long an incoming peer link waits for its session, and a session for its peers
PEER_LOOKUP_S = 3.0  # how long a session waits for a peer's record to reach this node's membership table


class BatchServer(Protocol):
    """What a session needs of its node's batcher (batching.Batcher): to serve a batched request's session."""

    def serve(self, session: NodeSession, model: Any, output: str, profile: str) -> int:
        """Serve `session` (its worker thread), each of its steps run in a batch; returns the number of steps."""


@dataclass(frozen=True)
class NodeRuntime:
    """What sessions need from their node: identity, role, device, hosted models, limits and peer channels.
    `max_payload_bytes` bounds any one message a link takes, `max_inbox_bytes` what a link holds unread,
    `step_limits` what one step's tokens may declare, `max_model_bytes` a published model."""

    identity: Identity
    roles: tuple[str, ...]
    device: str
    store: ModelStore
    max_sessions: int
    session_timeout_s: float
    max_payload_bytes: int
    shaping: LinkModel
    dial: Callable[[str, str], grpc.aio.Channel]  # (address, node_id) -> a mutual-TLS channel to that node
    peer_wait_s: float = PEER_WAIT_S  # how long a session and an incoming peer link wait for each other
    batcher: BatchServer | None = None  # runs SecureStrategy(batch_requests=True) steps together; None: refused
    audit: FrameLog | None = None  # leakage audit only (daemon.AUDIT_ENV): every inbound message; None: off
    max_inbox_bytes: int = DEFAULT_MAX_INBOX
    step_limits: StepLimits = StepLimits()
    max_model_bytes: int = 8 << 30
    vault: Vault | None = None  # where hosted models are kept across restarts (nodes/vault.py); None: memory only
    peers: PeerDirectory | None = None  # the membership table peers are found and checked in; None: none are

    @property
    def node_id(self) -> str:
        return self.identity.name


Program = Callable[["NodeSession"], Any]  # a session's engine program, run on its worker thread


def _caller_link_name(request: node_pb2.OpenSession) -> str:
    return OWNER if request.task == node_pb2.TASK_PUBLISH else CLIENT


def _frame_of(message: Any) -> node_pb2.Frame | None:
    return message.frame if message.HasField("frame") else None


def _describe(error: BaseException) -> str:
    """One line for an error: a failed call's status and details rather than its multi-line repr."""
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return str(error) or type(error).__name__


class NodeSession:
    """One session on this node, from the open request to the end of every link; with no caller, an internal
    session of the parties alone (a batch run, batching.py)."""

    def __init__(self, runtime: NodeRuntime, request: node_pb2.OpenSession, caller: PeerCert | None,
                 deadline: float, program: Program) -> None:
        self.runtime = runtime
        self.program = program
        self.request = request
        self.caller = caller
        self.deadline = deadline  # time.monotonic()
        self.loop = asyncio.get_running_loop()
        self.secret = request.privacy == node_pb2.PRIVACY_SECRET
        self.index = request.party_index
        self.started = time.monotonic()
        self.caller_name = _caller_link_name(request)
        self.links: dict[str, Link] = {}
        if caller is not None:
            self.links[self.caller_name] = self._link(self.caller_name, node_pb2.ServerMessage)
        self.peers: tuple[int, ...] = ()  # the other parties this session exchanges shares with
        if self.secret and request.task != node_pb2.TASK_PUBLISH:
            self.peers = tuple(j for j in range(3) if j != self.index)
            for j in self.peers:
                self.links[PARTY_NAMES[j]] = self._link(PARTY_NAMES[j], node_pb2.PeerMessage)
        name = PARTY_NAMES[self.index] if self.secret else PUBLIC_WORKER
        self.channel = GrpcChannel(name, self.links, deadline)
        self.result: Any = None
        self.frac_bits = request.fractional_bits or DEFAULT_FRAC_BITS  # infer: the hosted model's (set by the program)
        self.error: BaseException | None = None  # why the session was aborted, once it was
        self._attached: set[int] = set()  # lower parties whose Peer.Link has arrived
        self._tasks: dict[asyncio.Future, str] = {}  # link pumps and the link each one serves
        self._wake = asyncio.Event()  # set when a peer attaches or the session is aborted
        self._worker: asyncio.Future | None = None

    @property
    def id(self) -> str:
        return self.request.session_id

    def _link(self, name: str, message_type: Any) -> Link:
        on_device = name in PARTY_NAMES and self.runtime.device != "cpu"  # the client's shares are placed by the engine
        observer = None
        if self.runtime.audit is not None:
            receiver = PARTY_NAMES[self.index] if self.secret else PUBLIC_WORKER
            observer = functools.partial(self.runtime.audit.record, receiver, session=self.id)
        return Link(name, self.loop, lambda f: message_type(frame=f), _frame_of, shaping=self.runtime.shaping,
                    max_payload_bytes=self.runtime.max_payload_bytes, max_inbox_bytes=self.runtime.max_inbox_bytes,
                    device=self.runtime.device if on_device else None, observer=observer)

    def _pump(self, name: str, coro: Any) -> asyncio.Future:
        task = asyncio.ensure_future(coro)
        self._tasks[task] = name
        return task

    # --- running ---------------------------------------------------------------------------------------------------

    async def run(self, caller_stream: Any) -> None:
        """Pump the caller's stream (if any), dial the higher parties, run the worker; raise if anything fails."""
        if caller_stream is not None:
            self._pump(self.caller_name, self.links[self.caller_name].run(caller_stream))
        for j in self.peers:
            if j > self.index:
                self._pump(PARTY_NAMES[j], self._dial(j))
        worker = self._worker = self._start_worker()
        try:
            await self._until_worker_done(worker)
            self.channel.finish()
            drain = asyncio.gather(*self._tasks)
            try:
                await asyncio.wait_for(drain, timeout=max(self.remaining(), 5.0))
            except asyncio.TimeoutError:
                raise SessionTimeout(f"session {self.id[:8]} did not close its links in time") from None
        except BaseException as exc:
            self.abort(exc if isinstance(exc, Exception) else Cancelled("session cancelled"))
            raise

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def key_signer(self) -> KeySigner:
        """The engine's signer of this session's key agreement: this node's key, the committee's certificates."""
        return NodeKeySigner(self.runtime.identity, self.runtime.peers, self.request.committee.node_ids)

    def engine_config(self) -> EngineConfig:
        """The engine's configuration for this session: its fixed point, this node's device, its session id."""
        return EngineConfig(fxp=FixedPoint(self.frac_bits), device=self.runtime.device, session_id=self.id)

    async def _until_worker_done(self, worker: asyncio.Future) -> None:
        """Wait for the worker; raise as soon as a link fails, a peer is missing, the deadline passes or the session
        is aborted (the worker then stops at its next message)."""
        peer_deadline = self.started + self.runtime.peer_wait_s
        while not worker.done():
            if self.error is not None:
                raise self.error
            self._check_links()
            missing = [j for j in self.peers if j < self.index and j not in self._attached]
            now = time.monotonic()
            if missing and now >= peer_deadline:
                j = missing[0]
                raise PeerFailed(f"party {PARTY_NAMES[j]} ({self.request.committee.node_ids[j]}) did not connect "
                                 f"within {self.runtime.peer_wait_s:g} s")
            if self.remaining() <= 0:
                raise SessionTimeout(f"session {self.id[:8]} passed its deadline")
            timeout = min(self.remaining(), peer_deadline - now) if missing else self.remaining()
            self._wake.clear()
            wake = asyncio.ensure_future(self._wake.wait())
            running = {task for task in self._tasks if not task.done()}  # a pump that ended well is not waited on
            try:
                await asyncio.wait({worker, wake, *running}, timeout=max(timeout, 0.0),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                wake.cancel()
        if self.error is not None:  # aborted (cancelled, a shutdown): that, not the worker's knock-on error, is why
            raise self.error
        if not worker.cancelled() and worker.exception() is not None:
            self._check_links()  # likewise a failed link's own diagnosis (e.g. the caller's malformed frame) wins
        self.result = worker.result()

    def _check_links(self) -> None:
        """Raise for the first pump that ended badly: a malformed frame from the caller is the caller's error
        (INVALID_ARGUMENT); anything else on any link means a participant failed (UNAVAILABLE)."""
        for task, name in list(self._tasks.items()):
            if not task.done():
                continue
            if task.cancelled():
                raise PeerFailed(f"the link to {name} of session {self.id[:8]} was cancelled")
            exc = task.exception()
            if exc is None:
                continue
            if name == self.caller_name and isinstance(exc, FrameError):
                raise BadRequest(f"{name} sent a malformed frame: {exc}") from exc
            if name in PARTY_NAMES:  # what failed on a peer link stays in this node's log (peering.py)
                party = PARTY_NAMES.index(name)
                raise PeerFailed(unavailable(party, self.request.committee.node_ids[party])) from exc
            raise PeerFailed(f"the link to {name} of session {self.id[:8]} failed: {_describe(exc)}") from exc

    async def _dial(self, j: int) -> None:
        """Open the Peer.Link stream to party j, at the address of its node's record in this node's membership
        table (the request's addresses are never used), and pump it."""
        peer = await self._find_peer(j)
        channel = self.runtime.dial(peer.address, peer.node_id)
        wait_s = max(min(self.runtime.peer_wait_s, self.remaining()), 0.1)
        try:  # a channel backing off after the peer was away (e.g. restarted) connects again, within peer_wait_s
            await asyncio.wait_for(channel.channel_ready(), wait_s)
        except asyncio.TimeoutError:
            refused = PeerRefused(f"{peer.node_id} at {peer.address} did not connect within {wait_s:g} s")
            raise PeerFailed(unavailable(j, peer.node_id)) from refused
        call = node_pb2_grpc.PeerStub(channel).Link(timeout=max(self.remaining(), 1.0))
        try:
            hello = node_pb2.LinkHello(session_id=self.id, from_party=self.index, to_party=j)
            await call.write(node_pb2.PeerMessage(hello=hello))
            await self.links[PARTY_NAMES[j]].run(call)
        except BaseException:
            call.cancel()
            raise

    async def _find_peer(self, j: int) -> KnownPeer:
        """Party j's node as this node's membership table knows it, waiting up to PEER_LOOKUP_S for gossip to
        bring a record it lacks; PeerFailed (the peer unavailable, why in its cause) if it never passes."""
        node_id = self.request.committee.node_ids[j]
        deadline = time.monotonic() + min(PEER_LOOKUP_S, max(self.remaining(), 0.0))
        while True:
            try:
                return known_peer(self.runtime.peers, node_id)
            except PeerRefused as exc:
                if time.monotonic() >= deadline:
                    raise PeerFailed(unavailable(j, node_id)) from exc
            await asyncio.sleep(0.1)

    def check_peer(self, hello: node_pb2.LinkHello, caller: PeerCert) -> None:
        """Raise a NodeError unless `hello` is a link this session expects, from the committee's node for a lower
        party to this one (with the certificate of its membership record), not yet linked, while the session runs."""
        if hello.to_party != self.index or hello.from_party not in self.peers or hello.from_party > self.index:
            raise BadRequest("this link does not fit the session's committee")
        node_id = self.request.committee.node_ids[hello.from_party]
        if node_id != caller.name:
            raise Unauthorized(f"{caller.name} is not party {PARTY_NAMES[hello.from_party]} of this committee")
        try:
            check_caller(self.runtime.peers, node_id, caller)
        except PeerRefused as exc:
            raise Unauthorized(f"{caller.name} is refused as party {PARTY_NAMES[hello.from_party]}: {exc}") from None
        if hello.from_party in self._attached:
            raise BadRequest(f"party {PARTY_NAMES[hello.from_party]} is already linked to this session")
        if self.error is not None:
            raise PeerFailed(f"session {self.id[:8]} has ended: {self.error}")

    async def attach_peer(self, j: int, stream: Any) -> None:
        """Pump an incoming Peer.Link stream from party j (called by the Peer servicer, after `check_peer`)."""
        self._attached.add(j)
        task = self._pump(PARTY_NAMES[j], self.links[PARTY_NAMES[j]].run(stream))
        self._wake.set()
        await task

    def abort(self, error: BaseException) -> None:
        """Fail every link and cancel every pump (the worker thread stops at its next message); first error wins."""
        if self.error is None:
            self.error = error
        self.channel.abort(error)
        for task in self._tasks:
            task.cancel()
        self._wake.set()

    def release(self) -> None:
        """Drop what an ended session still holds (unread messages, its result, the locals of the frames its error
        passed through, e.g. expanded shares), so its memory is freed when it ends rather than at some later
        garbage collection."""
        for link in self.links.values():
            link.discard()
        self.result = None
        worker = self._worker
        failed = worker.exception() if worker is not None and worker.done() and not worker.cancelled() else None
        seen: set[int] = set()
        for error in (self.error, failed):
            while error is not None and id(error) not in seen:
                seen.add(id(error))
                if error.__traceback__ is not None:
                    traceback.clear_frames(error.__traceback__)
                error = error.__cause__ or error.__context__

    def _start_worker(self) -> asyncio.Future:
        future: asyncio.Future = self.loop.create_future()
        # The worker's error is read by `_until_worker_done` unless the session failed first: never leave it unread.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())

        def settle(fn: Callable[[], Any]) -> None:
            if not future.done():
                fn()

        def target() -> None:
            try:
                result = self.program(self)
            except BaseException as exc:  # noqa: BLE001 - handed to the event loop
                self._settle_from_thread(settle, functools.partial(future.set_exception, exc))
            else:
                self._settle_from_thread(settle, functools.partial(future.set_result, result))

        threading.Thread(target=target, name=f"session-{self.id[:8]}", daemon=True).start()
        return future

    def _settle_from_thread(self, settle: Callable[[Callable[[], Any]], None], fn: Callable[[], Any]) -> None:
        try:
            self.loop.call_soon_threadsafe(settle, fn)
        except RuntimeError:  # the loop is closed: the node has shut down and nobody waits for this result
            pass


class SessionRegistry:
    """The open sessions of a node, and incoming peer links waiting for theirs to open."""

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._sessions: dict[str, NodeSession] = {}
        self._internal: set[str] = set()  # ids of internal sessions (batch runs): not counted against the limit
        self._waiters: dict[str, list[asyncio.Future]] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def add(self, session: NodeSession, *, internal: bool = False) -> None:
        """Register a session; `internal` ones (batch runs, which serve sessions already admitted) skip the limit."""
        if session.id in self._sessions:
            raise SessionExists(f"session {session.id[:8]} is already open")
        if not internal and len(self._sessions) - len(self._internal) >= self.max_sessions:
            raise Busy(f"node is serving its maximum of {self.max_sessions} sessions")
        self._sessions[session.id] = session
        if internal:
            self._internal.add(session.id)
        for waiter in self._waiters.pop(session.id, []):
            if not waiter.done():
                waiter.set_result(session)

    def remove(self, session: NodeSession) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
            self._internal.discard(session.id)

    def get(self, session_id: str) -> NodeSession | None:
        return self._sessions.get(session_id)

    async def wait_for(self, session_id: str, timeout: float) -> NodeSession | None:
        """The session with this id, waiting up to `timeout` s for it to open here; None if it does not."""
        if session_id in self._sessions:
            return self._sessions[session_id]
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(session_id, []).append(waiter)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            waiters = self._waiters.get(session_id, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiters.pop(session_id, None)

    def abort_all(self, error: BaseException) -> None:
        for session in list(self._sessions.values()):
            session.abort(error)
