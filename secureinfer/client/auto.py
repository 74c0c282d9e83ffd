"""strategy="auto": the SDK asks a selector where and how to run a request, runs it, and records what it measured.

    from secureinfer.client import Client, selector_from_network

    with Client.from_dir(certs, "alice", seeds=[...]) as client:
        client.use_selector(selector_from_network(client))   # trained on the history every node shares
        out = client.generate("tiny", prompt, 8, strategy="auto")
        out.plan                                             # mode, committee or worker, strategy, no_history

What "auto" never changes: the privacy mode and the accuracy. `privacy` decides the mode ("secret": committees of
three secure nodes; "public": plaintext workers only); a model not hosted in that mode is ModelNotFound naming the
other privacy, never a silent switch. Without `max_error`, no plan is expected to be less accurate than the default
profile (`less_accurate`); a request that sets `max_error` lets the selector trade accuracy within that budget.

Per request: the request's features come from the model's public config and the request's shape; the options from
the membership view (the committees and workers hosting the model, only workers for a public request, each node's
signed capability record, and the one-way latency as half the round trip of a health call from here); the selector
ranks plans; plans this network cannot execute, or the request may not use, are dropped here as well (the one
strategy check, `strategy.misfit`: a secret prompt never runs in plaintext, whatever a selector says), and so are
plans below the default accuracy and plans against the planner's own preference (`against_preference`); the request
runs on the first plan left and, on a retryable failure, on the next plan at another placement (failover.py). Every
attempt's outcome goes to `selector.observe` and, as a performance record, to a node (fire and forget: a failed push
never fails the request). A selector built from zero performance records is announced by a logged warning and
flagged on every result it plans (`ServedPlan.no_history`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from secureinfer.models.config import ModelConfig
from secureinfer.models.requests import RequestError
from secureinfer.mpc.comm import Channel
from secureinfer.mpc.models import serving
from secureinfer.net.certs import NODE_SAN
from secureinfer.net.membership import CommitteeView, MembershipTable
from secureinfer.perfstore import RunRecord
from secureinfer.plaintext import serving as plain_serving
from secureinfer.selector.features import (CommitteeOption, LinkFeatures, NodeFeatures, Option, Outcome, Plan,
                                           RequestFeatures, SelectorError, WorkerOption)
from secureinfer.selector.records import record_of
from secureinfer.selector.space import prior_error
from secureinfer.strategy import Hosting, SecureStrategy, Strategy, misfit, to_json
from secureinfer.v1 import node_pb2

from .connection import Cancellation, Connector, Measured, SessionSpec, session_io
from .errors import NetworkError, RequestFailed
from .failover import failover
from .member import Member, not_hosted, privacy_code
from .records import RecordsDenied, measure_rtts, pull_records, push_records
from .results import ServedPlan

if TYPE_CHECKING:  # the selector's learning stack loads only when selector_from_network builds one
    from secureinfer.selector.selector import Selector

logger = logging.getLogger(__name__)
RTT_TTL_S = 30.0  # how long a measured round trip is reused
# what a request runs once its session is open: the engine protocol on the channel, returning (value, steps)
Program = Callable[[Channel, ModelConfig, serving.TokenIO], tuple[Any, serving.ClientSteps]]


class PlanSource(Protocol):
    """What the client needs of a selector (secureinfer.selector.selector.Selector has it): plans, feedback, and
    the performance records it was built from."""

    @property
    def records(self) -> Sequence[RunRecord]: ...

    def plan(self, request: RequestFeatures, options: Sequence[Option]) -> list[Plan]: ...

    def observe(self, plan: Plan, outcome: Outcome) -> None: ...


@dataclass(frozen=True)
class Work:
    """The shape of one request: its task, rows, prompt tokens per row, and new tokens asked for."""

    task: str  # "embed" | "logits" | "generate"
    batch: int
    seq_len: int
    gen_tokens: int = 0


@dataclass(frozen=True)
class Placement:
    """An option the selector may choose, and the hosted committee (or worker) it runs on."""

    option: Option
    view: CommitteeView

    def __post_init__(self) -> None:
        if isinstance(self.option, CommitteeOption) != (self.view.privacy == node_pb2.PRIVACY_SECRET):
            raise ValueError(f"a {type(self.option).__name__} cannot run on committee {self.view.committee_id!r} "
                             f"(privacy {self.view.privacy}): committees are secure, workers public")

    @property
    def nodes(self) -> tuple[NodeFeatures, ...]:
        """The placement's nodes as their records describe them, in party order."""
        return self.option.nodes if isinstance(self.option, CommitteeOption) else (self.option.node,)


def node_features(record: node_pb2.NodeRecord) -> NodeFeatures:
    """A node as its signed membership record describes it."""
    cap = record.capability
    return NodeFeatures(node_id=record.node_id, device=cap.device or "cpu", cpu_count=cap.cpu_count,
                        matmul_gflops=cap.matmul_gflops, memory_bytes=cap.memory_bytes, host=record.node_id)


def placements(table: MembershipTable, views: Sequence[CommitteeView], rtts: dict[str, float | None]
               ) -> list[Placement]:
    """The committees and workers in `views` whose every node is in `table` and answered a health call (`rtts`:
    round trip per address); link latency is half the slowest member's round trip."""
    records = {r.node_id: r for r in table.live()}
    out = []
    for view in views:
        times = [rtts.get(a) for a in view.addresses]
        if any(t is None for t in times) or any(n not in records for n in view.node_ids):
            continue
        link = LinkFeatures(latency_s=max(times) / 2)
        nodes = tuple(node_features(records[n]) for n in view.node_ids)
        if view.privacy == node_pb2.PRIVACY_SECRET:
            out.append(Placement(CommitteeOption(view.committee_id, nodes, link), view))
        else:
            out.append(Placement(WorkerOption(nodes[0], link), view))
    return out


def request_features(cfg: ModelConfig, model_id: str, work: Work, *, secret_prompt: bool, open_model: bool,
                     max_error: float | None = None) -> RequestFeatures:
    """The selector's view of a request: the model's public shape, the work, its privacy constraints and its
    accuracy budget (None: the default profile's accuracy, which the client enforces with `less_accurate`)."""
    return RequestFeatures.for_model(cfg, model=model_id, seq_len=work.seq_len, batch=work.batch,
                                     gen_tokens=work.gen_tokens, task=work.task, secret_prompt=secret_prompt,
                                     open_model=open_model, max_error=max_error)


def less_accurate(strategy: Strategy) -> str | None:
    """Why `strategy` is expected to be less accurate than the default (SecureStrategy(): the accurate profile), or
    None: by the stated prior errors (secureinfer.selector.space.prior_error). A secure strategy is judged at the
    default fixed point: the committee's fixed point is the owner's choice when publishing, not the plan's."""
    default = SecureStrategy()
    judged = dataclasses.replace(strategy, frac_bits=default.frac_bits) if isinstance(strategy, SecureStrategy) \
        else strategy
    if prior_error(judged) <= prior_error(default):
        return None
    return (f"accuracy: {strategy.name} is expected to be less accurate than the default profile "
            f"({default.profile}); set max_error= on the request to allow it")


def hosting_of(place: Placement) -> Hosting:
    """Where `place` would run a plan, as the one strategy check sees it: every node's device from its record, the
    committee's fixed point and weight mode, and no batching (node records do not advertise it: never risk a
    refusal)."""
    return Hosting(secure=isinstance(place.option, CommitteeOption), node_ids=place.view.node_ids,
                   devices=tuple(n.device for n in place.nodes), frac_bits=place.view.frac_bits,
                   public_weights=place.view.public_weights, batching=False)


def against_preference(plan: Plan, place: Placement) -> str | None:
    """The planner's preference, not a check: a secure plan's public_weights is how the committee holds the model
    (nodes would also serve public_weights=False on a committee holding the open weights; the planner never picks
    that)."""
    chosen = plan.strategy
    if isinstance(chosen, SecureStrategy) and chosen.public_weights != place.view.public_weights:
        return (f"planning preference: public_weights must match how the committee holds the model "
                f"(public_weights={place.view.public_weights})")
    return None


def unusable(plan: Plan, place: Placement, cfg: ModelConfig, request: RequestFeatures) -> str | None:
    """Why this network cannot (or this request may not, or the planner does not) run `plan` on `place`, or None
    if it can: the strategy check, then the planner's preference, then a plaintext worker's capabilities."""
    chosen = plan.strategy
    reason = misfit(chosen, secret_prompt=request.secret_prompt, open_model=request.open_model,
                    hosting=hosting_of(place)) or against_preference(plan, place)
    if reason is not None or isinstance(chosen, SecureStrategy):
        return reason
    try:
        plain_serving.check_strategy(cfg, chosen, chosen.device)
    except RequestError as exc:
        return f"worker: {exc}"
    return None


def outcome_of(measured: Measured[Any], steps: serving.ClientSteps, work: Work) -> Outcome:
    """What the client measured: wall time open to close, the first step, the mean later step of a generation, and
    the busiest node's bytes and rounds (secure sessions report them)."""
    sent = [n.bytes_sent for n in measured.nodes if n.bytes_sent is not None]
    rounds = [n.rounds for n in measured.nodes if n.rounds is not None]
    later = [s for s, _ in steps[1:]]
    generate = work.task == "generate"
    per_token = sum(later) / len(later) if generate and later else None
    extra = {"bytes_sum": sum(sent) if sent else None, "steps": list(steps),
             "gen_tokens": len(steps) if generate else 0}  # one sampled token per step
    return Outcome(total_s=measured.seconds, prefill_s=steps[0][0] if steps else None, per_token_s=per_token,
                   bytes_per_party=float(max(sent)) if sent else None, rounds=max(rounds) if rounds else None,
                   ok=True, extra=extra)


def record_for(plan: Plan, place: Placement, outcome: Outcome, request: RequestFeatures, client: str,
               error: str | None = None) -> RunRecord:
    """The performance record of one attempt (selector.records.record_of, plus where and how it was measured)."""
    record = record_of(plan, outcome, request)
    steps = outcome.extra.get("steps") or []
    env = {"source": "sdk", "client": client, "committee_id": place.view.committee_id,
           "node_ids": list(place.view.node_ids), "predicted_s": plan.predicted.total_s,
           "predicted_by": plan.predicted.source}
    return dataclasses.replace(
        record, error=None if outcome.ok else (error or "failed")[:1000],
        bytes_per_party_sum=outcome.extra.get("bytes_sum"), gen_tokens=outcome.extra.get("gen_tokens",
                                                                                          record.gen_tokens),
        steps_json=json.dumps([{"seconds": s, "tokens": n} for s, n in steps]), env_json=json.dumps(env))


class AutoRunner:
    """Runs requests on the selector's plans for one client (see the module docstring); thread-safe.

    `connector` reaches the nodes; `client_name` is who reports the performance records. A selector built from no
    records is announced with a warning here and flagged on every plan it serves."""

    def __init__(self, connector: Connector, client_name: str, selector: PlanSource) -> None:
        self.connector = connector
        self.client_name = client_name
        self.selector = selector
        self.no_history = not selector.records
        if self.no_history:
            logger.warning("the selector has no history (built from 0 performance records): its plans come from the "
                           "cost model alone until outcomes are recorded; results say so (plan.no_history)")
        self.pushes: list[Any] = []  # futures of background pushes (Client.close waits for them briefly)
        self._rtts: dict[str, tuple[float | None, float]] = {}
        self._lock = threading.Lock()

    def _measure(self, views: Sequence[CommitteeView]) -> dict[str, float | None]:
        """Round trips to every node of `views` (remeasured after RTT_TTL_S)."""
        targets = {(a, n) for v in views for a, n in zip(v.addresses, v.node_ids)}
        now = time.monotonic()
        stale = [t for t in targets if t[0] not in self._rtts or now - self._rtts[t[0]][1] > RTT_TTL_S]
        if stale:
            for address, rtt in measure_rtts(self.connector, sorted(stale)).items():
                self._rtts[address] = (rtt, now)
        return {a: self._rtts[a][0] for a, _ in targets}

    def plans(self, model_id: str, cfg: ModelConfig, table: MembershipTable, work: Work, privacy: str,
              committee: CommitteeView | None, max_error: float | None = None
              ) -> tuple[RequestFeatures, list[tuple[Plan, Placement]]]:
        """The request's features and its runnable plans, best first (the selector's order), on the placements
        hosting the model (or on `committee`): a public request only on plaintext workers; a secret one is offered
        every placement, and plans that would show its prompt are dropped (`unusable`)."""
        hosting = table.choose_committees(model_id)
        open_model = any(v.privacy == node_pb2.PRIVACY_PUBLIC or v.public_weights for v in hosting)
        request = request_features(cfg, model_id, work, secret_prompt=privacy == "secret", open_model=open_model,
                                   max_error=max_error)
        views = [committee] if committee is not None else hosting
        wanted = privacy_code(privacy)
        if not any(v.privacy == wanted for v in views):
            raise not_hosted(model_id, privacy, hosting)
        if wanted == node_pb2.PRIVACY_PUBLIC:  # a public request runs in the clear: never silently on a committee
            views = [v for v in views if v.privacy == wanted]
        places = placements(table, views, self._measure(views))
        if not places:
            raise NetworkError(f"no committee or worker hosting {model_id!r} answered (see `secureinfer network "
                               f"status`)")
        by_key = {_key(p.option): p for p in places}
        try:
            with self._lock:
                ranked = self.selector.plan(request, [p.option for p in places])
        except SelectorError as exc:
            raise NetworkError(f"the selector found no plan for this request: {exc}") from exc
        runnable, dropped = _runnable(ranked, by_key, cfg, request)
        if not runnable:
            raise NetworkError(f"none of the selector's {len(ranked)} plans for {model_id!r} can run on this network "
                               f"for a {privacy} request: {'; '.join(sorted(set(dropped))[:3])}")
        return request, runnable

    def run(self, model_id: str, privacy: str, output: str, program: Program, committee: CommitteeView | None,
            work: Work, *, table: MembershipTable, cfg: ModelConfig,
            max_error: float | None = None, cancel: Cancellation | None = None) -> tuple[Any, ServedPlan]:
        """Run the request on its best plan, falling back to the next placement on a retryable failure; returns
        its value and the plan that served it (`table`: the membership view to plan in; `cfg`: the model's public
        config; `max_error`: the request's accuracy budget; `cancel`: stops it from another thread)."""
        request, ranked = self.plans(model_id, cfg, table, work, privacy, committee, max_error)
        attempts = [(place.view, functools.partial(self._attempt, plan, place, cfg, request, output, program, work,
                                                   cancel))
                    for plan, place in ranked]
        return failover(attempts, none_left=f"no plan could run {model_id!r}")

    def _attempt(self, plan: Plan, place: Placement, cfg: ModelConfig, request: RequestFeatures, output: str,
                 program: Program, work: Work, cancel: Cancellation | None) -> tuple[Any, ServedPlan]:
        secure = plan.mode == "secure"
        spec = SessionSpec(task=node_pb2.TASK_DECODE if cfg.causal else node_pb2.TASK_ENCODE,
                           privacy=node_pb2.PRIVACY_SECRET if secure else node_pb2.PRIVACY_PUBLIC,
                           model_id=request.model, output=output, strategy_json=to_json(plan.strategy))
        io, spec = session_io(spec.privacy, place.view, spec)  # secure: the committee's fixed point
        start = time.monotonic()
        try:
            measured = self.connector.run_measured(place.view, spec, lambda ch: program(ch, cfg, io), cancel=cancel)
        except RequestFailed as exc:
            if exc.retryable:  # the placement failed (a node died, was busy, ran out of time), not the request
                outcome = Outcome(total_s=time.monotonic() - start, ok=False, extra={"code": exc.code.name})
                self._feedback(plan, place, outcome, request, error=str(exc))
            raise
        value, steps = measured.result
        outcome = outcome_of(measured, steps, work)
        self._feedback(plan, place, outcome, request)
        served = ServedPlan(mode=plan.mode, committee_id=place.view.committee_id, node_ids=place.view.node_ids,
                            strategy=plan.strategy, auto=True, no_history=self.no_history,
                            predicted_s=plan.predicted.total_s)
        return value, served

    def _feedback(self, plan: Plan, place: Placement, outcome: Outcome, request: RequestFeatures,
                  error: str | None = None) -> None:
        """Tell the selector, and push the record to a node in the background (the plan's first node if the
        request ran there, else the first seed)."""
        with self._lock:
            self.selector.observe(plan, outcome)
        record = record_for(plan, place, outcome, request, self.client_name, error)
        address, node_id = ((place.view.addresses[0], place.view.node_ids[0]) if outcome.ok
                            else (self.connector.seeds[0], NODE_SAN))
        self.pushes = [f for f in self.pushes if not f.done()]
        self.pushes.append(push_records(self.connector, address, node_id, [record]))

    def wait_pushes(self, timeout_s: float) -> None:
        """Give background pushes up to `timeout_s` to finish (their failures are ignored)."""
        deadline = time.monotonic() + timeout_s
        for future in self.pushes:
            try:
                future.result(max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - fire and forget: a failed push never fails anything
                pass


def _runnable(ranked: list[Plan], by_key: dict[str, Placement], cfg: ModelConfig, request: RequestFeatures
              ) -> tuple[list[tuple[Plan, Placement]], list[str]]:
    """The plans of `ranked` that may run where they say, in order, with their placements, and why the others
    were dropped (each also logged). Without an accuracy budget, plans below the default accuracy are dropped."""
    runnable, dropped = [], []
    for plan in ranked:
        place = by_key.get(_key(plan.option))
        reason = "not an option offered" if place is None else unusable(plan, place, cfg, request)
        if reason is None and request.max_error is None:
            reason = less_accurate(plan.strategy)
        if reason is None:
            runnable.append((plan, place))
            continue
        dropped.append(reason)
        # a privacy reason means the selector proposed what it must not: say so louder
        logger.log(logging.WARNING if reason.startswith("privacy") else logging.DEBUG, "plan %s dropped: %s",
                   plan.arm, reason)
    return runnable, dropped


def _key(option: Option) -> str:
    if isinstance(option, CommitteeOption):
        return "committee:" + option.committee_id + ":" + ",".join(n.node_id for n in option.nodes)
    return "worker:" + option.node.node_id


def selector_from_network(member: Member, *, max_records: int = 100_000, **selector_kwargs: Any) -> Selector:
    """A Selector trained on the performance records of the first seed of `member` that answers (every node's
    history, spread by gossip): read through a node's certificate; a client's may not read them, and gets a
    selector with no history, which plans from the cost model and learns from its own outcomes. Keyword arguments
    go to `Selector` (policy, seed, cost_model)."""
    from secureinfer.selector.selector import Selector  # lazily: the learning stack is heavy

    try:
        history = pull_records(member.connector, max_records=max_records)
    except RecordsDenied as exc:
        logger.warning("the network's performance records are for nodes only (%s): the selector starts without "
                       "history", exc)
        history = []
    return Selector(history, **selector_kwargs)


def work_of(task: str, ids_shape: Sequence[int], gen_tokens: int = 0) -> Work:
    """The Work of a request on token ids of shape (B, T)."""
    return Work(task=task, batch=int(ids_shape[0]), seq_len=int(ids_shape[1]), gen_tokens=gen_tokens)
