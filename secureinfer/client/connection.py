"""The SDK's plumbing: a background event loop, mutual-TLS channels to nodes, and sessions as engine `Channel`s.

A client (or model owner) session opens one `Inference.Session` stream per committee node, sends the open request,
waits for each node's acceptance, and then speaks the engine protocol (secureinfer.mpc.models.serving) through a
`GrpcChannel` whose links are those streams. The engine code runs in the caller's thread; the streams are pumped on
a private event loop thread. Failures surface as `RequestFailed` with the gRPC status of the node that failed first
(errors.py); a `Cancellation` stops a session from another thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import secrets
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc

from secureinfer.models.requests import PUBLIC_WORKER
from secureinfer.mpc.comm import Channel, CommError
from secureinfer.mpc.models import serving
from secureinfer.mpc.party import PARTY_NAMES
from secureinfer.mpc.protocols import reveal
from secureinfer.mpc.ring import FixedPoint
from secureinfer.net.certs import NODE_SAN, Identity
from secureinfer.net.membership import CommitteeView
from secureinfer.net.options import grpc_options
from secureinfer.net.wire import REPORT_BYTES, REPORT_ROUNDS, REPORT_SECONDS
from secureinfer.net.transport import GrpcChannel, Link, LinkTimeout
from secureinfer.v1 import node_pb2, node_pb2_grpc

from .errors import Cancelled, NetworkError, OutputMismatch, RequestFailed

T = TypeVar("T")
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class EventLoopThread:
    """A private asyncio loop in a daemon thread; `run` executes a coroutine there and waits for its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="secureinfer-sdk-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """The coroutine's result; TimeoutError after `timeout` seconds, the coroutine then cancelled."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        """Stop the loop and its thread (idempotent)."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)  # also works if run_forever has not begun yet
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


@dataclass(frozen=True)
class SessionSpec:
    """What a session asks of its committee (everything in OpenSession but the per-node party index)."""

    task: int
    privacy: int
    model_id: str
    output: str = ""
    profile: str = ""
    model_config_json: str = ""
    strategy_json: str = ""  # an execution strategy (strategy.to_json); empty = the nodes' default
    public_weights: bool = False  # publishing to a secure committee: the open weights in the clear to every party
    fractional_bits: int = 0  # secure: publish at this fixed point f / infer only where the model is held at f (0: any)
    owner_seal: node_pb2.OwnerSeal | None = None  # publishing: the owner's signature for this committee (net/owners.py)


def session_io(privacy: int, view: CommitteeView, spec: SessionSpec) -> tuple[serving.TokenIO, SessionSpec]:
    """How the client talks to `view` (secure: decoding outputs at the committee's fixed point), and the spec asking
    the nodes for exactly that precision (a node holding the model at another refuses it)."""
    if privacy != node_pb2.PRIVACY_SECRET:
        return serving.PUBLIC, spec
    io = serving.TokenIO(secret=True, fxp=FixedPoint(view.frac_bits))
    return io, dataclasses.replace(spec, fractional_bits=view.frac_bits)


class Cancellation:
    """A request's off switch, thrown from any thread: it aborts the request's session as soon as the session is
    open (at once if it already is), so the nodes drop it; the request then raises Cancelled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channel: GrpcChannel | None = None
        self.cancelled = False

    def cancel(self) -> None:
        with self._lock:
            self.cancelled, channel = True, self._channel
        if channel is not None:
            channel.abort(Cancelled())

    def attach(self, channel: GrpcChannel) -> None:
        """The open session this switch aborts (called by Connector.run_measured)."""
        with self._lock:
            self._channel, cancelled = channel, self.cancelled
        if cancelled:
            channel.abort(Cancelled())


@dataclass(frozen=True)
class NodeReport:
    """What one node said a finished session cost it (the stream's trailing metadata; None where it did not say)."""

    node_id: str
    bytes_sent: int | None = None
    rounds: int | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class Measured(Generic[T]):
    """A session's result, its wall time at the caller (open to close) and each node's report, in party order."""

    result: T
    seconds: float
    nodes: tuple[NodeReport, ...]


class Connector:
    """Channels to nodes (cached per address and expected node name) on one background loop."""

    def __init__(self, identity: Identity, seeds: Sequence[str], timeout_s: float) -> None:
        if not seeds:
            raise NetworkError("give at least one seed node address (host:port)")
        self.identity = identity
        self.seeds = tuple(seeds)
        self.timeout_s = timeout_s
        self.loop_thread = EventLoopThread()
        self._channels: dict[tuple[str, str], grpc.aio.Channel] = {}
        self._closed = False

    def close(self) -> None:
        """Close every channel and stop the loop thread; later calls do nothing."""
        if self._closed:
            return
        self._closed = True

        async def close_all() -> None:
            for channel in self._channels.values():
                await channel.close()

        try:
            self.loop_thread.run(close_all(), timeout=5)
        finally:
            self.loop_thread.close()

    def channel(self, address: str, node_id: str) -> grpc.aio.Channel:
        """Only call on the loop thread."""
        key = (address, node_id)
        if key not in self._channels:
            options = grpc_options(MAX_MESSAGE_BYTES) + self.identity.channel_options(node_id)
            self._channels[key] = grpc.aio.secure_channel(address, self.identity.channel_credentials(), options)
        return self._channels[key]

    # --- membership ------------------------------------------------------------------------------------------------

    def status(self) -> node_pb2.StatusReply:
        """The membership view of the first seed that answers."""
        errors = []
        for seed in self.seeds:
            try:
                return self.loop_thread.run(self._status(seed), timeout=self.timeout_s)
            except grpc.aio.AioRpcError as exc:
                errors.append(f"{seed}: {exc.code().name} {exc.details()}")
        raise NetworkError("no seed node answered: " + "; ".join(errors))

    async def _status(self, seed: str) -> node_pb2.StatusReply:
        stub = node_pb2_grpc.MembershipStub(self.channel(seed, NODE_SAN))
        return await stub.Status(node_pb2.StatusRequest(), timeout=min(self.timeout_s, 10.0))

    # --- sessions --------------------------------------------------------------------------------------------------

    def run_session(self, view: CommitteeView, spec: SessionSpec, program: Callable[[Channel], T],
                    timeout_s: float | None = None, cancel: Cancellation | None = None) -> T:
        """Open the session on every committee node, run `program(channel)` here, and close it cleanly."""
        return self.run_measured(view, spec, program, timeout_s, cancel).result

    def run_measured(self, view: CommitteeView, spec: SessionSpec, program: Callable[[Channel], T],
                     timeout_s: float | None = None, cancel: Cancellation | None = None) -> Measured[T]:
        """`run_session`, also returning its wall time here and what each node reported it cost; `cancel` aborts
        the session from another thread (the nodes drop it at once, and this raises Cancelled)."""
        timeout = timeout_s or self.timeout_s
        start = time.monotonic()
        deadline = start + timeout
        session_id = secrets.token_hex(16)
        try:
            channel, calls, pumps = self.loop_thread.run(self._open(view, spec, session_id, timeout), timeout=timeout)
        except grpc.aio.AioRpcError as exc:  # a write failed: the node is unreachable
            raise RequestFailed(exc.code(), exc.details() or "") from exc
        except TimeoutError as exc:
            raise RequestFailed(grpc.StatusCode.DEADLINE_EXCEEDED,
                                f"the committee did not accept the session within {timeout:g} s") from exc
        try:
            if cancel is not None:
                cancel.attach(channel)
            result = program(channel)
            channel.finish()
            self.loop_thread.run(asyncio.wait_for(asyncio.gather(*pumps), max(deadline - time.monotonic(), 1.0)))
            seconds = time.monotonic() - start
            reports = self.loop_thread.run(_reports(calls, view), timeout=10)
            return Measured(result, seconds, reports)
        except BaseException as exc:
            channel.abort(exc if isinstance(exc, Exception) else CommError("interrupted"))
            stopped = cancel is not None and cancel.cancelled
            reported = self.loop_thread.run(_settle(calls, pumps, view, wait_s=0.0 if stopped else 2.0), timeout=10)
            if isinstance(exc, reveal.OutputMismatch) and not stopped:  # the client's own finding outranks any status
                raise _deviation(exc, view) from exc
            raise (Cancelled() if stopped else _as_request_failure(exc, reported)) from exc

    async def _open(self, view: CommitteeView, spec: SessionSpec, session_id: str, timeout: float
                    ) -> tuple[GrpcChannel, list[Any], list[asyncio.Future]]:
        loop = asyncio.get_running_loop()
        names = PARTY_NAMES if len(view.node_ids) == 3 else (PUBLIC_WORKER,)
        # Peers by node id only: each node dials its peers at the addresses of its own membership table, never at
        # addresses a request names (the entries stay empty).
        committee = node_pb2.Committee(committee_id=view.committee_id, node_ids=list(view.node_ids),
                                       addresses=[""] * len(view.node_ids))
        links: dict[str, Link] = {}
        calls = []
        try:  # any failure while opening cancels the streams already open, so those nodes drop the session
            for index, (name, node_id, address) in enumerate(zip(names, view.node_ids, view.addresses)):
                stub = node_pb2_grpc.InferenceStub(self.channel(address, node_id))
                call = stub.Session(timeout=timeout)
                calls.append(call)
                request = node_pb2.OpenSession(session_id=session_id, task=spec.task, privacy=spec.privacy,
                                               model_id=spec.model_id, committee=committee, party_index=index,
                                               output=spec.output, profile=spec.profile,
                                               model_config_json=spec.model_config_json,
                                               strategy_json=spec.strategy_json,
                                               public_weights=spec.public_weights,
                                               fractional_bits=spec.fractional_bits,
                                               owner_seal=spec.owner_seal)
                try:
                    await call.write(node_pb2.ClientMessage(open=request))
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:  # e.g. the node is down
                    raise await _open_failure(call, node_id, exc) from exc
                links[name] = Link(name, loop, lambda f: node_pb2.ClientMessage(frame=f),
                                   lambda m: m.frame if m.HasField("frame") else None)
            for call, node_id in zip(calls, view.node_ids):
                try:
                    first = await call.read()
                except grpc.aio.AioRpcError as exc:
                    raise RequestFailed(exc.code(), exc.details() or "", node_id) from exc
                if first is grpc.aio.EOF or not first.HasField("accepted"):
                    raise RequestFailed(grpc.StatusCode.UNAVAILABLE, "did not accept the session", node_id)
        except BaseException:
            for call in calls:
                call.cancel()
            raise
        channel = GrpcChannel("client" if spec.task != node_pb2.TASK_PUBLISH else "owner", links,
                              time.monotonic() + timeout)
        pumps = [asyncio.ensure_future(links[name].run(call)) for name, call in zip(names, calls)]
        return channel, calls, pumps


async def _reports(calls: list[Any], view: CommitteeView) -> tuple[NodeReport, ...]:
    """Each node's cost report, from the trailing metadata the node closed its session stream with."""
    reports = []
    for call, node_id in zip(calls, view.node_ids):
        meta = dict(await call.trailing_metadata() or ())
        reports.append(NodeReport(node_id, _number(meta, REPORT_BYTES, int),
                                  _number(meta, REPORT_ROUNDS, int),
                                  _number(meta, REPORT_SECONDS, float)))
    return tuple(reports)


def _number(meta: dict[str, Any], key: str, kind: type) -> Any:
    """A non-negative number from trailing metadata, or None if absent or malformed."""
    try:
        value = kind(meta[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if 0 <= value < float("inf") else None


async def _open_failure(call: Any, node_id: str, exc: BaseException) -> RequestFailed:
    """The status of a stream whose open request could not be written."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return RequestFailed(exc.code(), exc.details() or "", node_id)
    return RequestFailed(await call.code(), await call.details() or "", node_id)


async def _settle(calls: list[Any], pumps: list[asyncio.Future], view: CommitteeView, wait_s: float = 2.0
                  ) -> RequestFailed | None:
    """After a failure: give the nodes a moment to report their own status, cancel what is left, and return the
    most telling status (a node's refusal such as INVALID_ARGUMENT before a knock-on UNAVAILABLE)."""
    await asyncio.wait(pumps, timeout=wait_s)
    failures: list[RequestFailed] = []
    for call, node_id in zip(calls, view.node_ids):
        if call.done():
            code = await call.code()
            if code not in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED):
                failures.append(RequestFailed(code, await call.details() or "", node_id))
        call.cancel()
    for pump in pumps:
        pump.cancel()
    await asyncio.gather(*pumps, return_exceptions=True)
    failures.sort(key=lambda f: f.retryable)
    return failures[0] if failures else None


def _deviation(mismatch: reveal.OutputMismatch, view: CommitteeView) -> OutputMismatch:
    """The engine's OutputMismatch with its parties named as the committee's nodes."""
    nodes = tuple(view.node_ids[PARTY_NAMES.index(p)] if p in PARTY_NAMES else p for p in mismatch.parties)
    detail = mismatch.detail
    for party, node in zip(PARTY_NAMES, view.node_ids):
        detail = re.sub(rf"\b{party}\b", f"{node} ({party})", detail)
    who = nodes[0] if len(nodes) == 1 else " or ".join(nodes)
    return OutputMismatch(f"output step {mismatch.step}: {detail}; deviating: {who}", nodes)


def _as_request_failure(exc: BaseException, reported: RequestFailed | None) -> BaseException:
    """The most telling error: a node's own status if one reported, else what the link saw."""
    if reported is not None:
        return reported
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, RequestFailed):
            return seen
        if isinstance(seen, grpc.aio.AioRpcError):
            return RequestFailed(seen.code(), seen.details() or "")
        seen = seen.__cause__
    if isinstance(exc, (LinkTimeout, TimeoutError)):  # the session's deadline passed while waiting here
        return RequestFailed(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc) or "the session's deadline passed")
    if isinstance(exc, CommError):
        return RequestFailed(grpc.StatusCode.UNAVAILABLE, str(exc))
    return exc
