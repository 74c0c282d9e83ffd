"""Thin gRPC servicers: check the caller's certificate, hand the work to sessions or membership, map errors."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc

from secureinfer.net.certs import CertError, PeerCert, peer_from_context
from secureinfer.net.errors import Cancelled, NodeError, PeerFailed, SessionTimeout
from secureinfer.net.membership import MembershipTable
from secureinfer.net.wire import REPORT_BYTES, REPORT_ROUNDS, REPORT_SECONDS, RETRY_AFTER
from secureinfer.v1 import node_pb2, node_pb2_grpc

from . import dispatch
from .admission import Admission, AdmissionSettings, Refused
from .errors import status_for
from .logs import log_event
from .metrics import NodeMetrics
from .opening import check_open
from .records import RecordBook
from .sessions import NodeRuntime, NodeSession, SessionRegistry

_TASKS = {node_pb2.TASK_PUBLISH: "publish", node_pb2.TASK_ENCODE: "encode", node_pb2.TASK_DECODE: "decode"}
_PRIVACY = {node_pb2.PRIVACY_SECRET: "secret", node_pb2.PRIVACY_PUBLIC: "public"}


async def _caller(context: grpc.aio.ServicerContext, role: str | None = None) -> PeerCert:
    """The authenticated caller, or abort with PERMISSION_DENIED (mutual TLS makes this rare)."""
    try:
        caller = peer_from_context(context)
    except CertError as exc:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
    if role is not None and caller.role != role:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{caller.name} is not a {role}")
    return caller


async def _first(context: grpc.aio.ServicerContext, field: str, wait_s: float) -> Any:
    """The stream's first message, which must carry `field` and arrive within `wait_s` seconds."""
    try:
        message = await asyncio.wait_for(context.read(), wait_s)
    except asyncio.TimeoutError:
        await context.abort(*status_for(SessionTimeout(f"no `{field}` message within {wait_s:g} s")))
    if message is grpc.aio.EOF or not message.HasField(field):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the first message must be `{field}`")
    return getattr(message, field)




def _peer_detail(error: BaseException) -> dict[str, str]:
    """For the node's log only: why a peer was unavailable (the refusal or dial error the caller is not told)."""
    if not isinstance(error, PeerFailed) or error.__cause__ is None:
        return {}
    causes, cause = [], error.__cause__
    while cause is not None and len(causes) < 4:
        causes.append(f"{cause.code().name}: {cause.details()}" if isinstance(cause, grpc.aio.AioRpcError)
                      else str(cause) or type(cause).__name__)
        cause = cause.__cause__
    return {"detail": " <- ".join(causes)}


def session_report(session: NodeSession) -> tuple[tuple[str, str], ...]:
    """What a finished session cost this node, for the caller's performance record (the stream's trailing metadata):
    bytes it sent, communication rounds (its Lamport clock) and seconds since it opened."""
    stats = session.channel.stats
    return ((REPORT_BYTES, str(stats.bytes_sent)), (REPORT_ROUNDS, str(stats.rounds)),
            (REPORT_SECONDS, f"{time.monotonic() - session.started:.6f}"))


class InferenceServicer(node_pb2_grpc.InferenceServicer):
    """Sessions opened by clients and model owners, cancellation, and the hosted-model list."""

    def __init__(self, runtime: NodeRuntime, registry: SessionRegistry, metrics: NodeMetrics,
                 logger: logging.Logger, admission: Admission | None = None) -> None:
        self.runtime, self.registry, self.metrics, self.logger = runtime, registry, metrics, logger
        self.admission = admission if admission is not None else Admission(AdmissionSettings(), runtime.node_id)

    async def Session(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        caller = await _caller(context)
        try:
            ticket = self.admission.admit(caller)
        except Refused as exc:  # a per-client limit: RESOURCE_EXHAUSTED saying which limit and when to retry
            self.metrics.admission_refused_for(exc.limit)
            log_event(self.logger, "WARNING", "session refused", caller=caller.name, limit=exc.limit)
            if exc.retry_after_s is not None:
                context.set_trailing_metadata(((RETRY_AFTER, f"{exc.retry_after_s:.3f}"),))
            await context.abort(*status_for(exc))
        with ticket:
            await self._session(caller, context)

    async def _session(self, caller: PeerCert, context: grpc.aio.ServicerContext) -> None:
        """Run one admitted session: open it, serve it, and map whatever ends it to a status."""
        request = await _first(context, "open", self.runtime.peer_wait_s)
        task, privacy = _TASKS.get(request.task, "unknown"), _PRIVACY.get(request.privacy, "unknown")
        remaining = context.time_remaining()
        timeout = self.runtime.session_timeout_s if remaining is None else min(remaining, self.runtime.session_timeout_s)
        session: NodeSession | None = None
        status, start = "OK", time.monotonic()
        self.metrics.session_started(task, privacy)
        try:
            check_open(self.runtime, request, caller)
            session = NodeSession(self.runtime, request, caller, time.monotonic() + timeout, dispatch.run)
            self.registry.add(session)
            log_event(self.logger, "INFO", "session opened", session=request.session_id[:8], task=task,
                      privacy=privacy, model=request.model_id, party=request.party_index, caller=caller.name)
            await context.write(node_pb2.ServerMessage(
                accepted=node_pb2.SessionAccepted(session_id=request.session_id, node_id=self.runtime.node_id)))
            await session.run(context)
            context.set_trailing_metadata(session_report(session))
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):  # gRPC ended the call: its deadline passed, or it was cancelled
                left = context.time_remaining()
                late = (left is not None and left <= 0.01) or (session is not None and session.remaining() <= 0)
                exc = SessionTimeout("the call's deadline passed") if late else \
                    Cancelled("the caller cancelled the call")
            code, message = status_for(exc)
            status = code.name
            log_event(self.logger, "WARNING", "session failed", session=request.session_id[:8], task=task,
                      status=status, reason=message, **_peer_detail(exc))
            if not isinstance(exc, grpc.aio.AbortError):
                await context.abort(code, message)
            raise
        finally:
            if session is not None:
                self.registry.remove(session)
                session.release()
            sent = session.channel.stats.bytes_sent if session is not None else 0
            rounds = session.channel.stats.rounds if session is not None else 0
            self.metrics.session_finished(task, privacy, status, time.monotonic() - start, bytes_sent=sent,
                                          rounds=rounds)
            if status == "OK":
                log_event(self.logger, "INFO", "session done", session=request.session_id[:8], task=task,
                          seconds=round(time.monotonic() - start, 3), bytes_sent=sent, rounds=rounds)

    async def Cancel(self, request: node_pb2.CancelRequest, context: grpc.aio.ServicerContext
                     ) -> node_pb2.CancelReply:
        caller = await _caller(context)
        session = self.registry.get(request.session_id)
        if session is None:
            return node_pb2.CancelReply(cancelled=False)
        if session.caller is None or session.caller.name != caller.name:  # no caller: a node's internal batch run
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "only the session's opener may cancel it")
        session.abort(Cancelled(f"session {request.session_id[:8]} cancelled by {caller.name}"))
        return node_pb2.CancelReply(cancelled=True)

    async def ListModels(self, request: node_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
                         ) -> node_pb2.ListModelsReply:
        await _caller(context)
        return node_pb2.ListModelsReply(models=self.runtime.store.records())


class PeerServicer(node_pb2_grpc.PeerServicer):
    """Incoming party-to-party links: the caller must be the committee's node for the party it claims to be."""

    def __init__(self, runtime: NodeRuntime, registry: SessionRegistry, logger: logging.Logger) -> None:
        self.runtime, self.registry, self.logger = runtime, registry, logger

    async def Link(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        caller = await _caller(context, role="node")
        hello = await _first(context, "hello", self.runtime.peer_wait_s)
        session = await self.registry.wait_for(hello.session_id, self.runtime.peer_wait_s)
        if session is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no session {hello.session_id[:8]} here")
        try:
            session.check_peer(hello, caller)
        except NodeError as exc:
            await context.abort(*status_for(exc))
        # The stream's initial metadata goes out now, on its own: if it went with the link's first message, a status
        # sent while that write is in flight would carry it a second time, and gRPC would refuse the status
        # (GRPC_CALL_ERROR_TOO_MANY_OPERATIONS), leaving the dialling party to wait for its deadline.
        await context.send_initial_metadata(())
        try:
            await session.attach_peer(hello.from_party, context)
        except BaseException as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            if session.error is not None:  # the session failed here: the dialling party learns it as UNAVAILABLE
                exc = PeerFailed(f"session {session.id[:8]} ended at {self.runtime.node_id}: "
                                        f"{status_for(session.error)[1]}")
            code, message = status_for(exc)
            await context.abort(code, message)


class MembershipServicer(node_pb2_grpc.MembershipServicer):
    """Gossip (push-pull of signed records) and the status view."""

    def __init__(self, table: MembershipTable, registry: SessionRegistry, node_id: str, metrics: NodeMetrics
                 ) -> None:
        self.table, self.registry, self.node_id, self.metrics = table, registry, node_id, metrics

    async def Gossip(self, request: node_pb2.GossipRequest, context: grpc.aio.ServicerContext
                     ) -> node_pb2.GossipReply:
        await _caller(context, role="node")
        before = self.table.rejected
        self.table.merge(list(request.records))
        if self.table.rejected > before:
            self.metrics.record_rejected(self.table.rejected - before)
        return node_pb2.GossipReply(records=self.table.live())

    async def Status(self, request: node_pb2.StatusRequest, context: grpc.aio.ServicerContext
                     ) -> node_pb2.StatusReply:
        await _caller(context)
        return node_pb2.StatusReply(node_id=self.node_id, records=self.table.live(),
                                    active_sessions=len(self.registry))


class RecordsServicer(node_pb2_grpc.RecordsServicer):
    """Performance records: any certificate of the network may push its own (within its quota, records.py); only
    nodes may pull and fetch (PERMISSION_DENIED for a client or an owner)."""

    def __init__(self, book: RecordBook, logger: logging.Logger) -> None:
        self.book, self.logger = book, logger

    async def Push(self, request: node_pb2.PushRecordsRequest, context: grpc.aio.ServicerContext
                   ) -> node_pb2.PushRecordsReply:
        caller = await _caller(context)
        try:
            reply = await self.book.push(request.records, caller.name)
        except NodeError as exc:
            log_event(self.logger, "WARNING", "records refused", caller=caller.name, reason=str(exc))
            await context.abort(*status_for(exc))
        return reply

    async def Pull(self, request: node_pb2.PullRecordsRequest, context: grpc.aio.ServicerContext
                   ) -> node_pb2.PullRecordsReply:
        await _caller(context, role="node")
        try:
            return await self.book.pull(request)
        except NodeError as exc:
            await context.abort(*status_for(exc))

    async def Fetch(self, request: node_pb2.FetchRecordsRequest, context: grpc.aio.ServicerContext
                    ) -> node_pb2.FetchRecordsReply:
        await _caller(context, role="node")
        try:
            return await self.book.fetch(request)
        except NodeError as exc:
            await context.abort(*status_for(exc))
