"""The evaluation's ground truth: cases (one request shape on one machine over one link) and the measured outcome of
every strategy the store holds for them, plus the request mix asked of each case (the evaluations use these).

A case groups the store's rows by request shape (model, seq_len, batch, gen_tokens), hardware (the host label) and
link. Secure rows carry the link they were measured over; plaintext rows were measured on one worker with no network,
so each plaintext row joins every link of its shape and host, with the client-worker hop added (`plaintext_hop_s`:
one round trip per forward plus the prompt and output bytes over the link's bandwidth).

    cases = cases_from_records(open_store("secureinfer/lab/data/sweep.sqlite").query(status="ok"))
    requests = request_mix(cases, kinds=KINDS, budgets=(None, 0.01))
    feasible(requests[0], cases[requests[0].case].candidates[0])     # privacy policy and accuracy budget
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from secureinfer.strategy import Strategy, StrategyError, check_allowed, from_json

from .features import CommitteeOption, LinkFeatures, NodeFeatures, RequestFeatures, SelectorError, WorkerOption
from .records import host_cpu_gflops, node_of, request_of

# Named links of the sweep (secureinfer/lab/bench/sweep/grid.py's LINKS), so groups read "metro" rather than numbers.
LINK_NAMES: dict[tuple[float, float | None], str] = {
    (0.0, None): "local", (1e-4, 125e6): "lan", (2e-3, 12.5e6): "metro", (2e-2, 12.5e6): "wan", (5e-2, 2.5e6): "slow",
}
TOKEN_BYTES = 8  # one int64 token id on the client-worker hop
VALUE_BYTES = 4  # one float32 output value (embeddings, logits row)


@dataclass(frozen=True)
class RequestKind:
    """A class of request by its privacy policy: may the prompt be seen, may the weights be seen."""

    name: str
    secret_prompt: bool
    open_model: bool


KINDS: tuple[RequestKind, ...] = (
    RequestKind("secret", secret_prompt=True, open_model=False),  # closed model, private prompt: secure only
    RequestKind("secret-open-model", secret_prompt=True, open_model=True),  # secure, public weights allowed
    RequestKind("open", secret_prompt=False, open_model=True),  # plaintext workers allowed
)


@dataclass(frozen=True)
class Candidate:
    """One strategy measured in a case: latency in seconds (median over repeats, hop included), error vs plaintext."""

    strategy: Strategy
    total_s: float
    error: float | None  # max abs error vs the float64 reference; None: not measured (tokens-only strategies)
    samples: tuple[float, ...]  # every measured latency (repeats), hop included
    bytes_per_party: float | None = None
    rounds: int | None = None

    @property
    def name(self) -> str:
        return self.strategy.name


@dataclass(frozen=True)
class Case:
    """One request shape on one machine over one link, with every measured strategy."""

    model: str
    hardware: str  # host label of the rows
    link_name: str
    features: RequestFeatures  # the shape; privacy and budget fields are set per request (request_mix)
    node: NodeFeatures
    link: LinkFeatures
    candidates: tuple[Candidate, ...]

    @property
    def group(self) -> tuple[str, str, str]:
        """The held-out unit of the evaluation: (model, hardware, link)."""
        return (self.model, self.hardware, self.link_name)

    @property
    def label(self) -> str:
        f = self.features
        return f"{self.model}:{f.seq_len}:{f.batch}:{f.gen_tokens} on {self.hardware} @{self.link_name}"

    def options(self) -> list[CommitteeOption | WorkerOption]:
        """The network this case stands for: one committee of three copies of its node, one plaintext worker."""
        nodes = tuple(dataclasses.replace(self.node, node_id=f"{self.node.node_id}-{i}") for i in range(3))
        committee = CommitteeOption(committee_id=f"{self.hardware}@{self.link_name}", nodes=nodes, link=self.link)
        return [committee, WorkerOption(node=self.node, link=self.link)]


@dataclass(frozen=True)
class EvalRequest:
    """One request of the mix: a case (index), its privacy class and accuracy budget, as selector features."""

    case: int
    kind: str
    features: RequestFeatures


def link_name(latency_s: float, bandwidth: float | None) -> str:
    """The sweep's name for a link, or a description of an unnamed one."""
    for (lat, bw), name in LINK_NAMES.items():
        if abs(latency_s - lat) < 1e-12 and bw == bandwidth:
            return name
    bw_text = "unlimited" if bandwidth is None else f"{bandwidth * 8 / 1e6:g}Mbit"
    return f"{latency_s * 1e3:g}ms/{bw_text}"


def plaintext_hop_s(features: RequestFeatures, link: LinkFeatures) -> float:
    """Client-worker network time of a plaintext request: one round trip per forward, the prompt and the outputs
    over the link (a logits row per forward, since the client samples; an encoder's embedding). The sweep measured
    plaintext rows on the worker alone."""
    forwards = max(features.gen_tokens, 1)
    width = features.vocab * forwards if features.gen_tokens else features.hidden
    out = features.batch * width * VALUE_BYTES
    size = features.batch * features.seq_len * TOKEN_BYTES + out
    transfer = size / link.bandwidth_bytes_per_s if link.bandwidth_bytes_per_s else 0.0
    return forwards * 2 * link.latency_s + transfer


def _features(row: Any, shapes: Callable[[str], dict[str, int]] | None) -> RequestFeatures:
    """The row's request shape (records.request_of: head counts and MLP width of the sweep's models); `shapes` may
    override those by model name."""
    features = dataclasses.replace(request_of(row), secret_prompt=True, open_model=False)
    return dataclasses.replace(features, **shapes(row.model)) if shapes else features


def _candidate(rows: Sequence[Any], hop_s: float) -> Candidate:
    samples = tuple(sorted(r.total_s + hop_s for r in rows))
    errors = [r.max_abs_err for r in rows if r.max_abs_err is not None]
    nbytes = [r.bytes_per_party_max for r in rows if r.bytes_per_party_max is not None]
    rounds = [r.rounds for r in rows if r.rounds is not None]
    return Candidate(strategy=from_json(rows[0].strategy_json), total_s=statistics.median(samples),
                     error=max(errors) if errors else None, samples=samples,
                     bytes_per_party=statistics.median(nbytes) if nbytes else None,
                     rounds=int(statistics.median(rounds)) if rounds else None)


def _node_row(groups: Sequence[Sequence[Any]]) -> Any:
    """The row whose node stands for a case's machine: a GPU row where the host measured any (its CPU strategies
    are then priced at the host's CPU speed, NodeFeatures.gflops_for), else the first row."""
    flat = [r for rows in groups for r in rows]
    return next((r for r in flat if r.device.startswith("cuda")), flat[0])


def cases_from_records(records: Iterable[Any], *,
                       shapes: Callable[[str], dict[str, int]] | None = None) -> list[Case]:
    """Cases from store rows (RunRecord): rows with status 'ok' and a latency; plaintext rows join every link their
    shape and host were measured over in secure mode ('local' if none). `shapes` may add RequestFeatures' optional
    shape fields (n_heads, n_kv_heads, intermediate) by model name."""
    secure: dict[tuple, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    plain: dict[tuple, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    rows = list(records)
    for r in rows:
        if r.status != "ok" or r.total_s is None:
            continue
        shape = (r.model, r.seq_len, r.batch, r.gen_tokens, r.host)
        if r.mode == "secure":
            secure[(*shape, r.latency_s or 0.0, r.bandwidth_bytes_per_s)][r.strategy_name].append(r)
        else:
            plain[shape][r.strategy_name].append(r)
    links: dict[tuple, set[tuple[float, float | None]]] = defaultdict(set)
    for key in secure:
        links[key[:5]].add(key[5:])
    for shape in plain:
        if not links[shape]:  # measured only in plaintext: a local client
            links[shape].add((0.0, None))
    cpu = host_cpu_gflops(rows)
    cases = []
    for shape in sorted(links, key=str):
        for lat, bw in sorted(links[shape], key=lambda x: (x[0], x[1] or 0.0)):
            by_strategy = {**secure.get((*shape, lat, bw), {})}
            first = next(iter(by_strategy.values()), None) or next(iter(plain[shape].values()))
            node_row = _node_row([*by_strategy.values(), *plain.get(shape, {}).values()])
            features, link = _features(first[0], shapes), LinkFeatures(lat, bw)
            hop = plaintext_hop_s(features, link)
            cands = [_candidate(rows, 0.0) for rows in by_strategy.values()]
            cands += [_candidate(rows, hop) for rows in plain.get(shape, {}).values()]
            cases.append(Case(model=shape[0], hardware=shape[4], link_name=link_name(lat, bw), features=features,
                              node=node_of(node_row, cpu_gflops=cpu.get(shape[4], 0.0)), link=link,
                              candidates=tuple(sorted(cands, key=lambda c: c.name))))
    return cases


def request_mix(cases: Sequence[Case], kinds: Sequence[RequestKind] = KINDS,
                budgets: Sequence[float | None] = (None,)) -> list[EvalRequest]:
    """Every case asked as every kind of request under every accuracy budget; requests no measured strategy can
    serve (e.g. a secret request on a model measured only in plaintext) are left out."""
    out = []
    for i, case in enumerate(cases):
        for kind in kinds:
            for budget in budgets:
                feats = dataclasses.replace(case.features, secret_prompt=kind.secret_prompt,
                                            open_model=kind.open_model, max_error=budget)
                req = EvalRequest(case=i, kind=kind.name, features=feats)
                if any(feasible(req, c) for c in case.candidates):
                    out.append(req)
    return out


def why_infeasible(request: EvalRequest | RequestFeatures, candidate: Candidate) -> str:
    """'' if the candidate satisfies the request's hard constraints as measured, else why not."""
    f = request.features if isinstance(request, EvalRequest) else request
    try:
        check_allowed(candidate.strategy, secret_prompt=f.secret_prompt, open_model=f.open_model)
    except StrategyError as exc:
        return str(exc)
    if f.max_error is not None:
        if candidate.error is None:
            return "its error was not measured, so it cannot be shown to meet the accuracy budget"
        if candidate.error > f.max_error:
            return f"measured error {candidate.error:.3g} is above the budget {f.max_error:g}"
    if f.deadline_s is not None and candidate.total_s > f.deadline_s:
        return f"measured {candidate.total_s:.3g} s is past the deadline {f.deadline_s:g} s"
    return ""


def feasible(request: EvalRequest | RequestFeatures, candidate: Candidate) -> bool:
    """True if the candidate satisfies the request's privacy policy, accuracy budget and deadline as measured."""
    return not why_infeasible(request, candidate)


def strategy_key(strategy: Strategy) -> str:
    """A strategy's name with the device index dropped ('cuda:0' and 'cuda' are the same device class here)."""
    return dataclasses.replace(strategy, device=strategy.device.split(":")[0]).name


def parse_budgets(text: str) -> tuple[float | None, ...]:
    """'none,0.01' -> (None, 0.01): accuracy budgets of the request mix."""
    out: list[float | None] = []
    for part in (p.strip() for p in text.split(",")):
        if part.lower() in ("none", "any", ""):
            out.append(None)
            continue
        try:
            value = float(part)
        except ValueError as exc:
            raise SelectorError(f"an accuracy budget is 'none' or a positive number; got {part!r}") from exc
        if not value > 0:
            raise SelectorError(f"an accuracy budget must be > 0; got {part!r}")
        out.append(value)
    return tuple(out)
