"""Held-out evaluation of the selector against its baselines, as regret to the oracle (issue 6).

Leave one group out: for every (model, hardware, link) combination in the store, train on every other row and ask
the held-out combination's requests (each case x each request kind x each accuracy budget, selector/evalcases.py).
Every policy chooses one strategy per request among the strategies measured for that case that satisfy its hard
constraints as measured (so constraints are never traded for speed, and the figures compare latency choices only);
its latency is the measured one. The policies:

  oracle      the fastest feasible measured strategy (the reference; regret 0)
  random      a uniformly random feasible strategy
  fixed       the single best strategy on the training data (lowest mean log latency ratio to the oracle where it
              was feasible), applied everywhere it is feasible; where it is not (a secret request and a plaintext
              strategy, a tight accuracy budget), the next strategy of the same training ranking
  cost_model  the analytic cost model (calibrated on the training rows) ranks the feasible strategies
  predictor   the offline meta-learned predictor alone (MetaInf-style: predict once, never explore)
  selector    the full selector (predictor + online bandit): its own ranked plan, the first plan that is a feasible
              measured strategy runs, and the case's measured outcome is fed back (observe), so it learns online
              while the held-out requests are replayed `passes` times

Regret of a request = chosen latency / oracle latency - 1. A model-based policy whose own first choice was not a
feasible measured strategy counts a top miss, by kind: "unmeasured" (the store has no row of it for the case), or the
constraint it broke as measured ("accuracy": measured error over the budget although predicted within it;
"privacy" would be a bug). Its next choice then runs, as a caller falls back down the ranked plan.

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
from typing import Any, Callable, Iterable, Protocol, Sequence

from secureinfer.strategy import Strategy

from .evalcases import KINDS, Candidate, Case, EvalRequest, RequestKind, cases_from_records, feasible, request_mix
from .features import Option, Outcome, Plan, Prediction, RequestFeatures, SelectorError, WorkerOption

POLICIES = ("random", "fixed", "cost_model", "predictor", "selector")
HOLDOUTS = ("combo", "model")
WITHIN = 0.10  # "within 10% of the oracle"


class Scorer(Protocol):
    """Predicts a plan's cost: the cost model and the offline predictor."""

    def predict(self, request: RequestFeatures, option: Option, strategy: Strategy) -> Prediction: ...


class Planner(Protocol):
    """The full selector: ranked plans for a request, and feedback from served requests."""

    def plan(self, request: RequestFeatures, options: Sequence[Option]) -> list[Plan]: ...

    def observe(self, plan: Plan, outcome: Outcome) -> None: ...


@dataclass(frozen=True)
class Toolkit:
    """How the model-based policies are built from a fold's training rows (the real selector, or test doubles)."""

    cost_model: Callable[[list[Any], int], Scorer]  # (training rows, seed)
    predictor: Callable[[list[Any], int], Scorer]
    selector: Callable[[list[Any], int], Planner]


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


# --- the baselines

def _oracle(request: EvalRequest, case: Case) -> Candidate:
    return min((c for c in case.candidates if feasible(request, c)), key=lambda c: (c.total_s, c.name))


def fixed_ranking(cases: Sequence[Case], requests: Sequence[EvalRequest]) -> list[str]:
    """Strategy names, best first, by mean log latency ratio to the oracle over the training requests where each
    was feasible (ties: the one feasible more often first)."""
    logs: dict[str, list[float]] = defaultdict(list)
    for req in requests:
        case = cases[req.case]
        best = _oracle(req, case).total_s
        for cand in case.candidates:
            if feasible(req, cand):
                logs[cand.name].append(math.log(cand.total_s / best))
    return sorted(logs, key=lambda n: (statistics.fmean(logs[n]), -len(logs[n]), n))


class _Policy:
    """Chooses one feasible candidate per request; may learn from the outcome."""

    name = ""

    def choose(self, request: EvalRequest, case: Case, allowed: list[Candidate]) -> tuple[Candidate, str]:
        raise NotImplementedError

    def observe(self, request: EvalRequest, case: Case, chosen: Candidate, latency_s: float) -> None:
        return None


class _Random(_Policy):
    name = "random"

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)  # evaluation sampling, not secret randomness

    def choose(self, request, case, allowed):
        return self.rng.choice(allowed), ""


class _Fixed(_Policy):
    name = "fixed"

    def __init__(self, ranking: list[str]) -> None:
        self.rank = {n: i for i, n in enumerate(ranking)}

    def choose(self, request, case, allowed):
        return min(allowed, key=lambda c: (self.rank.get(c.name, len(self.rank)), c.name)), ""


def _option_for(case: Case, strategy: Strategy) -> Option:
    committee, worker = case.options()
    return committee if strategy.mode == "secure" else worker


class _Scored(_Policy):
    """Ranks the feasible candidates by a model's predicted latency (cost model, offline predictor)."""

    def __init__(self, name: str, scorer: Scorer) -> None:
        self.name, self.scorer = name, scorer
        self._memo: dict[tuple, dict[str, Prediction]] = {}  # the same request replayed: the same predictions

    def _predictions(self, request: EvalRequest, case: Case) -> dict[str, Prediction]:
        key = (request.case, request.kind, request.features.max_error)
        if key not in self._memo:
            items = [(request.features, _option_for(case, c.strategy), c.strategy) for c in case.candidates]
            many = getattr(self.scorer, "predict_many", None)
            preds = many(items) if many else [self.scorer.predict(*it) for it in items]
            self._memo[key] = {c.name: p for c, p in zip(case.candidates, preds)}
        return self._memo[key]

    def choose(self, request, case, allowed):
        f = request.features
        preds = self._predictions(request, case)
        # What the model believes it may run: the privacy policy, and its own error prediction within the budget.
        believed = [c for c in case.candidates if _privacy_ok(c.strategy, f)
                    and (f.max_error is None or preds[c.name].error <= f.max_error)]
        ranked = sorted(believed, key=lambda c: (preds[c.name].total_s, c.name))
        pick = next((c for c in ranked if c in allowed), None)
        if pick is None:  # nothing it believes feasible was: the most accurate feasible one
            return _safe_default(allowed), "none-feasible"
        return pick, "" if ranked[0] is pick else _miss_kind(request, ranked[0])


def _miss_kind(request: EvalRequest, cand: Candidate) -> str:
    """The constraint a measured candidate breaks for the request: privacy, accuracy or deadline."""
    from .evalcases import why_infeasible

    why = why_infeasible(request, cand)
    if "budget" in why:
        return "accuracy"
    return "deadline" if "deadline" in why else "privacy"


def _privacy_ok(strategy: Strategy, f: RequestFeatures) -> bool:
    from secureinfer.strategy import StrategyError, check_allowed

    try:
        check_allowed(strategy, secret_prompt=f.secret_prompt, open_model=f.open_model)
    except StrategyError:
        return False
    return True


def _safe_default(allowed: list[Candidate]) -> Candidate:
    """The fallback when a model's plans match no feasible measured strategy: the most accurate feasible one."""
    return min(allowed, key=lambda c: (c.error if c.error is not None else math.inf, c.total_s, c.name))


def strategy_key(strategy: Strategy) -> str:
    """A strategy's name with the device index dropped ('cuda:0' and 'cuda' are the same device class here)."""
    return dataclasses.replace(strategy, device=strategy.device.split(":")[0]).name


class _Online(_Policy):
    """The full selector: its ranked plans, the first feasible measured one runs, the outcome is observed."""

    name = "selector"

    def __init__(self, planner: Planner) -> None:
        self.planner = planner
        self._last: Plan | None = None

    def choose(self, request, case, allowed):
        measured = {strategy_key(c.strategy): c for c in case.candidates}
        self._last = None
        miss = ""
        try:
            plans = self.planner.plan(request.features, case.options())
        except SelectorError:  # it found no plan within its own constraint estimates
            return _safe_default(allowed), "no-plan"
        for plan in plans:
            cand = measured.get(strategy_key(plan.strategy))
            if cand is None or isinstance(plan.option, WorkerOption) != (cand.strategy.mode == "plaintext"):
                miss = miss or "unmeasured"
            elif cand not in allowed:
                miss = miss or _miss_kind(request, cand)
            else:
                self._last = plan
                return cand, miss
        return _safe_default(allowed), "none-feasible"  # no plan of the selector is a feasible measured one

    def observe(self, request, case, chosen, latency_s):
        if self._last is not None:  # the safe default was not the selector's plan: nothing to learn from
            self.planner.observe(self._last, Outcome(total_s=latency_s, bytes_per_party=chosen.bytes_per_party,
                                                     rounds=chosen.rounds, error=chosen.error))


# --- folds

def _group_of(case: Case, holdout: str) -> tuple[str, ...]:
    return (case.model,) if holdout == "model" else case.group


def _training_rows(records: Sequence[Any], held: tuple[str, ...], holdout: str) -> list[Any]:
    """Every row but the held-out group's: its secure rows, and its model's plaintext rows on its hardware (those
    are part of every link's cases of that model and hardware)."""
    from .evalcases import link_name

    def held_out(r: Any) -> bool:
        if holdout == "model":
            return r.model == held[0]
        model, hardware, link = held
        if r.model != model or r.host != hardware:
            return False
        return r.mode == "plaintext" or link_name(r.latency_s or 0.0, r.bandwidth_bytes_per_s) == link

    return [r for r in records if not held_out(r)]


def _policies(config: EvalConfig, train: list[Any], toolkit: Toolkit | None, seed: int) -> list[_Policy]:
    out: list[_Policy] = []
    for name in config.policies:
        if name == "random":
            out.append(_Random(seed))
        elif name == "fixed":
            cases = cases_from_records(train)
            out.append(_Fixed(fixed_ranking(cases, request_mix(cases, config.kinds, config.budgets))))
        elif toolkit is None:
            raise SelectorError(f"policy {name!r} needs the selector's models (a Toolkit)")
        elif name == "cost_model":
            out.append(_Scored("cost_model", toolkit.cost_model(train, seed)))
        elif name == "predictor":
            out.append(_Scored("predictor", toolkit.predictor(train, seed)))
        else:
            out.append(_Online(toolkit.selector(train, seed)))
    return out


def _replay(policy: _Policy, stream: list[tuple[int, EvalRequest]], cases: Sequence[Case], group: tuple[str, ...],
            rng: random.Random) -> list[Choice]:
    out = []
    for replay, req in stream:
        case = cases[req.case]
        allowed = [c for c in case.candidates if feasible(req, c)]
        best = _oracle(req, case)
        chosen, miss = policy.choose(req, case, allowed)
        policy.observe(req, case, chosen, rng.choice(chosen.samples))
        out.append(Choice(policy.name, group, case.label, req.kind, req.features.max_error, replay, chosen.name,
                          chosen.total_s, best.total_s, best.name, miss))
    return out


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
    report = EvalReport(config, [], groups)
    for fold, group in enumerate(groups):
        train = _training_rows(records, group, config.holdout)
        if not train:
            report.skipped_groups["/".join(group)] = "nothing left to train on"
            continue
        seed = config.seed * 1000 + fold
        order = random.Random(seed)
        stream = [(p, req) for p in range(config.passes) for req in order.sample(by_group[group], len(by_group[group]))]
        if progress:
            progress(f"fold {fold + 1}/{len(groups)} {'/'.join(group)}: {len(train)} training rows, "
                     f"{len(stream)} requests")
        for p, r in stream:
            best = _oracle(r, cases[r.case])
            report.choices.append(Choice("oracle", group, cases[r.case].label, r.kind, r.features.max_error, p,
                                         best.name, best.total_s, best.total_s, best.name))
        for policy in _policies(config, train, toolkit, seed):
            report.choices += _replay(policy, stream, cases, group, random.Random(seed + 1))
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
    op tables (measured once, about a second per profile) are shared by every fold."""
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
