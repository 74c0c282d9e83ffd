"""Batching concurrent secure requests at the nodes (`SecureStrategy(batch_requests=True)`): steps of requests to one
committee and model, with the same output, profile, strategy and step shape, that arrive within a short window run
as one MPC forward; each client gets only its own rows.

Every request keeps its own session (its client's stream, its own peer links, used here for coordination only).
Each of its steps:
  1. every party receives the client's one-hot shares (and BERT's public mask) on that session, as unbatched;
  2. P1 and P2 register the step with their node's `Batcher`, then tell P0 `batch.have` (the step's shape) over the
     session's peer link; P0 waits for both and checks the shapes agree, so a step joins a batch only once all three
     parties hold its input;
  3. P0, the committee's leader, queues the step in a group keyed by (committee, model, output, profile, strategy,
     shape key); a group closes `window_s` after its first step or when it holds `max_rows` rows, and its `Plan` (a
     fresh batch id and the members' session ids, rows and positions, in arrival order) is sent by each member's P0
     session to its P1 and P2 (`batch.plan`); the first copy to reach a party starts the batch there;
  4. the batch runs as an internal session (`NodeSession` without a caller) under the batch id: fresh peer links
     (the lower party dials), a fresh key agreement, one forward over the members' stacked steps (mpc batching.run);
  5. each member's session gets its own output shares (and decoder cache) back and reveals them to its own client
     alone (serving's reveal_to_owner); no client's stream ever carries another's rows.
Isolation: the batch's MPC traffic has its own links, so a client that goes away fails only its own session; its rows
are still computed (all three parties held its step) and discarded. A party lacking a listed member's step (its
session ended before the plan arrived, or its client sent the parties different shapes) computes zero shares in its
place (mpc batching.placeholder): rows never mix, so only that member's discarded rows are wrong. A failure of the
batch itself (a node dies) fails every member, each with UNAVAILABLE. A request that finds no partner within the
window runs as a batch of one. Public: which sessions share a batch, and their shapes (the nodes saw those anyway).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import re
import secrets
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from secureinfer import strategy
from secureinfer.models.config import ModelConfig
from secureinfer.models.requests import CLIENT, RequestError
from secureinfer.mpc.models import batching, serving
from secureinfer.mpc.models.batching import BatchItem
from secureinfer.mpc.party import PARTY_NAMES, Party
from secureinfer.net.errors import NodeError, PeerFailed, SessionTimeout
from secureinfer.v1 import node_pb2

from .errors import status_for
from .logs import log_event
from .metrics import NodeMetrics
from .sessions import NodeSession, Program, SessionRegistry

_BATCH_ID = re.compile(r"^batch-[0-9a-f]{32}$")
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
MAX_MEMBERS = 256
_REMEMBERED = 4096  # batch ids a follower remembers having started (later copies of their plan are ignored)


@dataclass(frozen=True)
class BatchSettings:
    """How long the leader holds a group open after its first step, and how many rows a batch may hold."""

    window_s: float = 0.05
    max_rows: int = 32

    def __post_init__(self) -> None:
        if not 0.0 <= self.window_s <= 10.0:
            raise ValueError(f"batch window must be in [0, 10] s, got {self.window_s}")
        if self.max_rows < 1:
            raise ValueError(f"batch max_rows must be >= 1, got {self.max_rows}")


@dataclass(frozen=True)
class Member:
    """One request's step in a plan: its session and the step's shape."""

    session_id: str
    rows: int
    positions: int
    cached: int

    @classmethod
    def of(cls, session_id: str, item: BatchItem) -> "Member":
        return cls(session_id, item.rows, item.positions, item.cached)


@dataclass(frozen=True)
class Plan:
    """What the leader decided: a batch id and its members in order (JSON on the wire, no pickle)."""

    batch_id: str
    members: tuple[Member, ...]

    def to_bytes(self) -> bytes:
        members = [[m.session_id, m.rows, m.positions, m.cached] for m in self.members]
        return json.dumps({"batch": self.batch_id, "members": members}).encode()

    @classmethod
    def from_bytes(cls, data: Any) -> "Plan":
        """Parse `to_bytes` output; PeerFailed for anything else (the leader misbehaved)."""
        try:
            raw = json.loads(data)
            batch_id, members = raw["batch"], raw["members"]
            if not isinstance(batch_id, str) or not _BATCH_ID.match(batch_id) or \
                    not isinstance(members, list) or not 0 < len(members) <= MAX_MEMBERS:
                raise ValueError("bad batch id or member list")
            parsed = []
            for sid, rows, positions, cached in members:
                if not isinstance(sid, str) or not _SESSION_ID.match(sid) or \
                        not all(isinstance(n, int) and n >= 0 for n in (rows, positions, cached)):
                    raise ValueError("bad member")
                parsed.append(Member(sid, rows, positions, cached))
            return cls(batch_id, tuple(parsed))
        except (TypeError, ValueError, KeyError) as exc:
            raise PeerFailed(f"malformed batch plan from the leader: {exc}") from exc


def _shape(item: BatchItem) -> bytes:
    return struct.pack("<3I", item.rows, item.positions, item.cached)


@dataclass
class _Member:
    """A batched request's session on this node, with what a batch it starts computes with."""

    session: NodeSession
    cfg: ModelConfig
    model: Any
    step: serving.Step
    key: tuple  # the group key without the step's shape


@dataclass
class _Pending:
    """One step of a member, waiting for its batch: its item and where its output shares (and cache) will go."""

    member: _Member
    item: BatchItem
    key: tuple  # the full group key
    result: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


@dataclass
class _Group:
    """An open group at the leader."""

    members: list[_Pending] = field(default_factory=list)
    rows: int = 0
    plan: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    timer: threading.Timer | None = None


def _fail(futures: list[concurrent.futures.Future | None], error: BaseException) -> None:
    for future in futures:
        if future is not None and not future.done():
            future.set_exception(error)


class Batcher:
    """A node's batching of SecureStrategy(batch_requests=True) steps: the leader's groups (as P0) and the steps it
    holds as P1 or P2 until a plan names them; thread-safe (called from the sessions' worker threads)."""

    def __init__(self, settings: BatchSettings, registry: SessionRegistry, metrics: NodeMetrics,
                 logger: logging.Logger) -> None:
        self.settings = settings
        self.registry, self.metrics, self.logger = registry, metrics, logger
        self._lock = threading.Lock()
        self._groups: dict[tuple, _Group] = {}  # leader: open groups
        self._held: dict[str, _Pending] = {}  # follower: steps by session id, until a plan takes them
        self._started: OrderedDict[str, None] = OrderedDict()  # follower: batch ids already started here

    # --- a member session's worker thread --------------------------------------------------------------------------

    def serve(self, session: NodeSession, model: Any, output: str, profile: str) -> int:
        """Serve a batched request's session (its worker thread): the step protocol of serving.serve, each step run
        in a batch; returns the number of steps."""
        cfg: ModelConfig = model.cfg
        step, with_meta = serving.step_function(cfg, output)
        request = session.request
        chosen = strategy.to_json(strategy.from_json(request.strategy_json))
        key = (request.committee.committee_id, tuple(request.committee.node_ids), request.model_id, output, profile,
               chosen)
        member = _Member(session, cfg, model, step, key)
        party = Party.receiver(session.index, session.channel, session.engine_config())  # only inputs in, outputs out
        try:
            return batching.serve_batched(party, cfg, with_meta, lambda item: self._step(member, item),
                                          client=CLIENT)
        finally:
            with self._lock:
                self._held.pop(session.id, None)

    def _step(self, member: _Member, item: BatchItem) -> tuple[Any, Any]:
        session = member.session
        key = member.key + batching.shape_key(member.cfg, item)
        if session.index == 0:
            for j in (1, 2):
                if session.channel.recv(PARTY_NAMES[j], "batch.have") != _shape(item):
                    raise RequestError("the client sent the parties steps of different shapes")
            plan, result = self._submit(_Pending(member, item, key))
            message = _wait(plan, session).to_bytes()
            for j in (1, 2):
                session.channel.send(PARTY_NAMES[j], message, "batch.plan")
            return _wait(result, session)
        pending = _Pending(member, item, key)
        with self._lock:
            self._held[session.id] = pending
        session.channel.send(PARTY_NAMES[0], _shape(item), "batch.have")
        plan = Plan.from_bytes(session.channel.recv(PARTY_NAMES[0], "batch.plan"))
        if session.id not in {m.session_id for m in plan.members}:
            raise PeerFailed("the leader's batch plan does not list this session")
        self._follow(member, key, plan)
        return _wait(pending.result, session)

    # --- the leader (P0) --------------------------------------------------------------------------------------------

    def _submit(self, pending: _Pending) -> tuple[concurrent.futures.Future, concurrent.futures.Future]:
        """Queue a step in its group; returns the futures of the group's plan and of this step's result."""
        full: list[_Group] = []
        with self._lock:
            group = self._groups.get(pending.key)
            if group is not None and group.rows + pending.item.rows > self.settings.max_rows:
                full.append(self._close(pending.key))
                group = None
            if group is None:
                group = self._groups[pending.key] = _Group()
                group.timer = threading.Timer(self.settings.window_s, self._flush, (pending.key, group))
                group.timer.daemon = True
                group.timer.start()
            group.members.append(pending)
            group.rows += pending.item.rows
            if group.rows >= self.settings.max_rows:
                full.append(self._close(pending.key))
        for closed in full:
            self._launch(closed)
        return group.plan, pending.result

    def _close(self, key: tuple) -> _Group:
        """Take an open group out of the queue (caller holds the lock)."""
        group = self._groups.pop(key)
        if group.timer is not None:
            group.timer.cancel()
        return group

    def _flush(self, key: tuple, group: _Group) -> None:
        """The window of `group` has passed: close and launch it, unless it was closed already."""
        with self._lock:
            if self._groups.get(key) is not group:
                return
            self._close(key)
        self._launch(group)

    def _launch(self, group: _Group) -> None:
        """Plan a closed group (members in arrival order) and start its batch."""
        futures: list[concurrent.futures.Future | None] = [p.result for p in group.members]
        try:
            plan = Plan(f"batch-{secrets.token_hex(16)}", tuple(Member.of(p.member.session.id, p.item)
                                                                  for p in group.members))
            deadline = min(p.member.session.deadline for p in group.members)
            self._start(group.members[0].member, plan, [p.item for p in group.members], futures, deadline)
        except Exception as exc:  # noqa: BLE001 - every member (waiting in its own thread) learns it
            _fail([*futures, group.plan], exc)
            return
        group.plan.set_result(plan)

    # --- a follower (P1, P2) ----------------------------------------------------------------------------------------

    def _follow(self, member: _Member, key: tuple, plan: Plan) -> None:
        """Start `plan` here unless a copy of it already did: each member's held step (or a placeholder) in order."""
        session = member.session
        items: list[BatchItem] = []
        futures: list[concurrent.futures.Future | None] = []
        with self._lock:
            if plan.batch_id in self._started:
                return
            _check_plan(member.cfg, plan, {sid for sid, held in self._held.items() if held.key == key},
                        session.runtime.step_limits)
            self._started[plan.batch_id] = None
            while len(self._started) > _REMEMBERED:
                self._started.popitem(last=False)
            for m in plan.members:
                held = self._held.get(m.session_id)
                if held is not None and held.key == key:
                    del self._held[m.session_id]
                    if Member.of(m.session_id, held.item) == m:
                        items.append(held.item)
                        futures.append(held.result)
                        continue
                    held.result.set_exception(RequestError("the leader saw this step with another shape"))
                items.append(batching.placeholder(member.cfg, session.index, session.runtime.device, m.rows,
                                                  m.positions, m.cached))
                futures.append(None)
        self._start(member, plan, items, futures, session.deadline)

    # --- both: the batch run ----------------------------------------------------------------------------------------

    def _start(self, member: _Member, plan: Plan, items: list[BatchItem],
               futures: list[concurrent.futures.Future | None], deadline: float) -> None:
        """Run the batch as an internal session on the node's event loop (from any thread)."""
        session = member.session
        request = node_pb2.OpenSession(session_id=plan.batch_id, task=session.request.task,
                                       privacy=node_pb2.PRIVACY_SECRET, model_id=session.request.model_id,
                                       committee=session.request.committee, party_index=session.index,
                                       fractional_bits=session.frac_bits)  # the hosted model's fixed point

        def compute(party: Party) -> int:
            parts = batching.run(party, member.model, member.step, member.cfg, items)
            for future, part in zip(futures, parts):
                if future is not None and not future.done():
                    future.set_result(part)
            return len(parts)

        try:
            asyncio.run_coroutine_threadsafe(self._run(session, request, deadline, compute, futures, plan),
                                             session.loop)
        except RuntimeError as exc:  # the loop is closed: the node is shutting down
            _fail(futures, PeerFailed(f"batch {plan.batch_id[6:14]} could not start: {exc}"))

    async def _run(self, session: NodeSession, request: node_pb2.OpenSession, deadline: float,
                   compute: Callable[[Party], int], futures: list[concurrent.futures.Future | None], plan: Plan
                   ) -> None:
        run = NodeSession(session.runtime, request, None, deadline, _batch_program(compute))
        start, status = time.monotonic(), "OK"
        try:
            self.registry.add(run, internal=True)
        except NodeError as exc:
            _fail(futures, PeerFailed(f"batch {plan.batch_id[6:14]} could not start: {exc}"))
            return
        try:
            await run.run(None)
        except BaseException as exc:  # noqa: BLE001 - every member learns it; a cancellation is re-raised
            code, message = status_for(exc)
            status = code.name
            _fail(futures, PeerFailed(f"batch {plan.batch_id[6:14]} failed: {message}"))
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self.registry.remove(run)
            run.release()
            sent = run.channel.stats.bytes_sent
            self.metrics.add_bytes_sent("party", sent)
            self.metrics.batch_finished(status, len(plan.members))
            log_event(self.logger, "INFO" if status == "OK" else "WARNING", "batch done", batch=plan.batch_id[6:14],
                      members=len(plan.members), rows=sum(m.rows for m in plan.members), status=status,
                      seconds=round(time.monotonic() - start, 3), bytes_sent=sent, rounds=run.channel.stats.rounds)


def _check_plan(cfg: ModelConfig, plan: Plan, held: set[str], limits: serving.StepLimits) -> None:
    """PeerFailed unless every member of the leader's plan is a step this node would take from a client (rows and
    positions within the model and the step limits), and the placeholders it would make for the members it does not
    hold (zero shares of their declared shapes) stay within one step's memory limit."""
    placeholders = 0
    for m in plan.members:
        if not 1 <= m.rows <= limits.max_rows or m.positions < 1 or m.cached + m.positions > cfg.max_positions:
            raise PeerFailed(f"the leader's batch plan declares a step of {m.rows} rows, {m.positions} positions "
                             f"after {m.cached}: outside this node's limits")
        if m.session_id not in held:
            placeholders += 2 * 8 * m.rows * (m.positions * cfg.vocab_size + 2 * cfg.n_kv_heads * m.cached *
                                              cfg.head_dim * cfg.n_layers)
    if placeholders > limits.max_input_bytes:
        raise PeerFailed(f"the leader's batch plan would make this node hold {placeholders} bytes of placeholders, "
                         f"over its limit of {limits.max_input_bytes}")


def _batch_program(compute: Callable[[Party], int]) -> Program:
    """The engine program of a batch run, an internal session of the three parties (peer links under the batch id,
    no caller): connect as this party, then compute the batch."""
    def program(run: NodeSession) -> int:
        return compute(Party.connect(run.index, run.channel, run.engine_config(), run.key_signer()))

    return program


def _wait(future: concurrent.futures.Future, session: NodeSession) -> Any:
    """The future's result, waiting no longer than the session lives (aborted: its error; deadline: a timeout)."""
    while True:
        if session.error is not None:
            raise session.error
        remaining = session.remaining()
        if remaining <= 0:
            raise SessionTimeout(f"session {session.id[:8]} passed its deadline waiting for its batch")
        try:
            return future.result(timeout=min(remaining, 0.2))
        except concurrent.futures.TimeoutError:
            continue
