"""Held-out evaluation of the selector against its baselines, as regret to the oracle, one combination at a time.

Leave one group out: for every (model, hardware, link) combination in the store, train on every other row and ask
the held-out combination's requests (each case x each request kind x each accuracy budget, selector/evalcases.py).
Every policy (selector/policies.py: oracle, random, fixed, cost_model, predictor, selector) chooses one strategy per
request among the strategies measured for that case that satisfy its hard constraints as measured (so constraints
are never traded for speed, and the figures compare latency choices only); its latency is the measured one. A case
offers one committee (its secure strategies) and one worker (its plaintext ones); the fixed baseline runs its
strategy where it was measured; the full selector learns online while the held-out requests are replayed `passes`
times. Regret of a request = chosen latency / oracle latency - 1.

    report = evaluate(records, EvalConfig(), toolkit=default_toolkit())
    print(report_table(report))            # selector/evalreport.py: table, JSON, PNG
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from secureinfer.strategy import Strategy

from . import policies
from .evalcases import (KINDS, Candidate, Case, EvalRequest, RequestKind, cases_from_records, feasible, link_name,
                        request_mix, strategy_key)
from .features import Option, Plan, Prediction, RequestFeatures, SelectorError
from .policies import Chooser, Scorer, Toolkit, oracle

POLICIES = ("random", "fixed", "cost_model", "predictor", "selector")
HOLDOUTS = ("combo", "model")
WITHIN = 0.10  # "within 10% of the oracle"


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate: request mix, replay passes, seed, policies, and the held-out unit."""

    kinds: tuple[RequestKind, ...] = KINDS
    budgets: tuple[float | None, ...] = (None, 0.01)
    passes: int = 3
    seed: int = 0
    policies: tuple[str, ...] = POLICIES
    holdout: str = "combo"  # "combo": (model, hardware, link); "model": every combination of a model at once
    groups: tuple[tuple[str, ...], ...] | None = None  # only these held-out groups (None: all)

    def __post_init__(self) -> None:
        unknown = set(self.policies) - set(POLICIES)
        if unknown:
            raise SelectorError(f"unknown policies {sorted(unknown)}; known: {', '.join(POLICIES)}")
        if self.holdout not in HOLDOUTS:
            raise SelectorError(f"holdout must be one of {HOLDOUTS}; got {self.holdout!r}")
        if self.passes < 1:
            raise SelectorError(f"passes must be >= 1; got {self.passes}")
        if not self.kinds or not self.budgets:
            raise SelectorError("the request mix needs at least one kind and one budget")


@dataclass(frozen=True)
class Choice:
    """One policy's answer to one replayed request."""

    policy: str
    group: tuple[str, ...]
    case: str
    kind: str
    budget: float | None
    replay: int  # pass index
    strategy: str
    latency_s: float
    oracle_s: float
    oracle_strategy: str
    miss: str = ""  # why the policy's own first choice did not run: "", "unmeasured", "accuracy", "privacy", ...

    @property
    def top_miss(self) -> bool:
        return bool(self.miss)

    @property
    def regret(self) -> float:
        return self.latency_s / self.oracle_s - 1.0


@dataclass
class EvalReport:
    """Every choice of every policy, the summary per policy, and how the evaluation was set up."""

    config: EvalConfig
    choices: list[Choice]
    groups: list[tuple[str, ...]]
    skipped_groups: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    unit: str = ""  # what one held-out group is, when not config.holdout (evalnet: "model, network")

    def summary(self, policy: str, kind: str | None = None, *, hardware: str | None = None,
                replay: int | None = None) -> dict[str, float]:
        """n, median latency and the oracle's, their ratio, mean/median regret, share within 10%, top misses; of
        every request, or only those of one kind, one hardware (host label) or one replay pass."""
        rows = [c for c in self.choices if c.policy == policy and (kind is None or c.kind == kind)
                and (hardware is None or c.group[1:2] == (hardware,)) and (replay is None or c.replay == replay)]
        if not rows:
            return {"n": 0}
        lat = [c.latency_s for c in rows]
        orc = [c.oracle_s for c in rows]
        reg = [c.regret for c in rows]
        return {"n": len(rows), "median_s": statistics.median(lat), "oracle_median_s": statistics.median(orc),
                "median_ratio": statistics.median(lat) / statistics.median(orc),
                "mean_regret": statistics.fmean(reg), "median_regret": statistics.median(reg),
                "geomean_ratio": math.exp(statistics.fmean(math.log1p(r) for r in reg)),
                "within_10pct": sum(r <= WITHIN + 1e-12 for r in reg) / len(reg),
                "top_misses": sum(c.top_miss for c in rows),
                **{f"misses_{k}": sum(c.miss == k for c in rows) for k in sorted({c.miss for c in rows} - {""})}}

    def policies(self) -> list[str]:
        return [p for p in ("oracle", *POLICIES) if any(c.policy == p for c in self.choices)]


# --- the per-combination arena and the folds

class CombinationArena:
    """A case is one machine over one link: one committee runs its secure strategies, one worker its plaintext ones;
    a fixed strategy runs where it was measured."""

    def __init__(self, config: EvalConfig) -> None:
        self.config = config

    def offers(self, case: Case) -> list[tuple[Option, Candidate]]:
        committee, worker = case.options()
        return [(committee if c.strategy.mode == "secure" else worker, c) for c in case.candidates]

    def options(self, case: Case) -> list[Option]:
        return case.options()

    def measured(self, case: Case, plan: Plan) -> Candidate | None:
        return {strategy_key(c.strategy): c for c in case.candidates}.get(strategy_key(plan.strategy))

    def placements(self, case: Case, request: EvalRequest) -> dict[str, Candidate]:
        return {c.name: c for c in case.candidates if feasible(request, c)}

    def fixed_fallback(self, allowed: list[Candidate]) -> tuple[Candidate, str]:
        """No strategy of the ranking was measured feasibly here: the first feasible one by name."""
        return min(allowed, key=lambda c: c.name), ""

    def training_mix(self, rows: list[Any]) -> tuple[list[Case], list[EvalRequest]]:
        cases = cases_from_records(rows)
        return cases, request_mix(cases, self.config.kinds, self.config.budgets)


def _group_of(case: Case, holdout: str) -> tuple[str, ...]:
    return (case.model,) if holdout == "model" else case.group


def training_rows(records: Sequence[Any], model: str, links: dict[str, str] | None = None) -> list[Any]:
    """Every row but the held-out ones: `model`'s rows on each host of `links` at that host's link and its plaintext
    rows on those hosts (they are part of every link's cases of that model and host); every row of `model` if
    `links` is None."""

    def held_out(r: Any) -> bool:
        if r.model != model:
            return False
        if links is None:
            return True
        if r.host not in links:
            return False
        return r.mode == "plaintext" or link_name(r.latency_s or 0.0, r.bandwidth_bytes_per_s) == links[r.host]

    return [r for r in records if not held_out(r)]


def request_stream(requests: Sequence[EvalRequest], passes: int, seed: int) -> list[tuple[int, EvalRequest]]:
    """(pass, request): the held-out requests in a seeded random order, `passes` times."""
    order = random.Random(seed)
    return [(p, req) for p in range(passes) for req in order.sample(requests, len(requests))]


def replay_fold(report: EvalReport, group: tuple[str, ...], stream: list[tuple[int, EvalRequest]],
                cases: Sequence[Any], fold_policies: Sequence[Chooser], seed: int) -> None:
    """Every policy's (and the oracle's) choice for every replayed request of one held-out group, into `report`."""
    for p, r in stream:
        best = oracle(r, cases[r.case])
        report.choices.append(Choice("oracle", group, cases[r.case].label, r.kind, r.features.max_error, p,
                                     best.name, best.total_s, best.total_s, best.name))
    for policy in fold_policies:
        rng = random.Random(seed + 1)  # which measured sample a served request observes
        for p, r in stream:
            case = cases[r.case]
            allowed = [c for c in case.candidates if feasible(r, c)]
            best = oracle(r, case)
            chosen, miss = policy.choose(r, case, allowed)
            policy.observe(chosen, rng.choice(chosen.samples))
            report.choices.append(Choice(policy.name, group, case.label, r.kind, r.features.max_error, p,
                                         chosen.name, chosen.total_s, best.total_s, best.name, miss))


def evaluate(records: Iterable[Any], config: EvalConfig = EvalConfig(), *, toolkit: Toolkit | None = None,
             progress: Callable[[str], None] | None = None) -> EvalReport:
    """Leave-one-group-out evaluation of every policy in `config` on the store rows `records` (RunRecord)."""
    start = time.perf_counter()
    records = [r for r in records if r.status == "ok" and r.total_s is not None]
    cases = cases_from_records(records)
    requests = request_mix(cases, config.kinds, config.budgets)
    by_group: dict[tuple[str, ...], list[EvalRequest]] = defaultdict(list)
    for req in requests:
        by_group[_group_of(cases[req.case], config.holdout)].append(req)
    groups = sorted(by_group) if config.groups is None else [tuple(g) for g in config.groups]
    missing = [g for g in groups if g not in by_group]
    if missing:
        raise SelectorError(f"no requests for held-out groups {missing}; known: {sorted(by_group)}")
    report, arena = EvalReport(config, [], groups), CombinationArena(config)
    for fold, group in enumerate(groups):
        train = training_rows(records, group[0], None if config.holdout == "model" else {group[1]: group[2]})
        if not train:
            report.skipped_groups["/".join(group)] = "nothing left to train on"
            continue
        seed = config.seed * 1000 + fold
        stream = request_stream(by_group[group], config.passes, seed)
        if progress:
            progress(f"fold {fold + 1}/{len(groups)} {'/'.join(group)}: {len(train)} training rows, "
                     f"{len(stream)} requests")
        replay_fold(report, group, stream, cases, policies.build(config.policies, arena, train, toolkit, seed), seed)
    report.seconds = time.perf_counter() - start
    return report


class _WithAccuracy:
    """A latency model plus the selector's accuracy knowledge (space.AccuracyTable from the same training rows), so
    the cost-model-alone and predictor-alone policies apply the accuracy budget as the selector does."""

    def __init__(self, scorer: Any, accuracy: Any) -> None:
        self.scorer, self.accuracy = scorer, accuracy

    def predict_many(self, items: Sequence[tuple[RequestFeatures, Option, Strategy]]) -> list[Prediction]:
        if hasattr(self.scorer, "predict_many"):
            preds = self.scorer.predict_many(items)
        else:
            preds = [self.scorer.predict(*it) for it in items]
        return [dataclasses.replace(p, error=self.accuracy.expected_error(r.arch, s))
                for p, (r, _, s) in zip(preds, items)]

    def predict(self, request: RequestFeatures, option: Option, strategy: Strategy) -> Prediction:
        return self.predict_many([(request, option, strategy)])[0]


def default_toolkit(**selector_kwargs: Any) -> Toolkit:
    """The real models, one set per fold: selector.py's Selector built from the fold's training rows (it calibrates
    cost.py's CostModel on them and fits predictor.py's Predictor), whose calibrated cost model and fitted predictor
    are also the cost-model-alone and predictor-alone policies (the same models, without the bandit). The engine's
    op tables (opcosts.py, measured once per profile) are shared by every fold."""
    from .cost import CostModel
    from .selector import Selector
    from .space import AccuracyTable

    tables: dict = {}  # OpKey -> op costs, filled lazily by the first cost model and reused
    built: list[tuple[list[Any], int, Any]] = []  # the current fold's (training rows, seed, Selector)

    def selector(train: list[Any], seed: int) -> Any:
        if not built or built[0][0] is not train or built[0][1] != seed:
            built[:] = [(train, seed, Selector(train, seed=seed, cost_model=CostModel(_tables=tables),
                                               **selector_kwargs))]
        return built[0][2]

    def cost_model(train: list[Any], seed: int) -> Scorer:
        return _WithAccuracy(selector(train, seed).cost_model, AccuracyTable.from_records(train))

    def predictor(train: list[Any], seed: int) -> Scorer:
        sel = selector(train, seed)
        if not sel.predictor.fitted:
            raise SelectorError(f"the predictor needs training rows; this fold has {len(train)}")
        return _WithAccuracy(sel.predictor, AccuracyTable.from_records(train))

    return Toolkit(cost_model=cost_model, predictor=predictor, selector=selector)
