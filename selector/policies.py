"""The policies the held-out evaluations compare, written once for both (evaluate.py per combination, evalnet.py on
a network of options).

Every policy chooses one feasible measured candidate per request (a strategy where it ran, with its measured
latency); what differs between the two evaluations is an `Arena`: how a case offers its candidates to a model, how a
plan maps to a measured candidate, and where a selector-less client runs a fixed strategy.

  oracle      the fastest feasible measured candidate (the reference; regret 0)
  random      a uniformly random feasible candidate
  fixed       the single best strategy on the training data (lowest mean log latency ratio to the oracle where it
              could be placed), at the arena's placement; where it cannot be (a secret request and a plaintext
              strategy, a tight accuracy budget), the next strategy of the same training ranking
  cost_model  the analytic cost model (calibrated on the training rows) ranks every offered candidate
  predictor   the offline meta-learned predictor alone (MetaInf-style: predict once, never explore)
  selector    the full selector (predictor + online bandit): its own ranked plan, the first plan that is a feasible
              measured candidate runs, and its measured outcome is fed back (observe), so it learns online

A model-based policy whose own first choice was not a feasible measured candidate counts a top miss, by kind:
"unmeasured" (the store has no row of it), or the constraint it broke as measured ("accuracy": measured error over
the budget although predicted within it; "privacy" would be a bug). Its next choice then runs, as a caller falls back
down the ranked plan.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from secureinfer.strategy import Strategy, StrategyError, check_allowed

from .evalcases import EvalRequest, feasible, why_infeasible
from .features import Option, Outcome, Plan, Prediction, RequestFeatures, SelectorError, WorkerOption


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


class Measured(Protocol):
    """A strategy measured where it ran: median latency, error vs plaintext, every latency sample, traffic."""

    @property
    def name(self) -> str: ...

    @property
    def strategy(self) -> Strategy: ...

    @property
    def total_s(self) -> float: ...

    @property
    def error(self) -> float | None: ...

    @property
    def samples(self) -> tuple[float, ...]: ...

    @property
    def bytes_per_party(self) -> float | None: ...

    @property
    def rounds(self) -> int | None: ...


class MeasuredCase(Protocol):
    """A case of an evaluation: its measured candidates (evalcases.Case, evalnet.NetCase)."""

    @property
    def candidates(self) -> Sequence[Measured]: ...


class Arena(Protocol):
    """What differs between the evaluations: how a case offers its candidates and options, how a plan maps to a
    measured candidate, where a fixed strategy runs, and the training cases of the fixed baseline."""

    def offers(self, case: Any) -> list[tuple[Option, Measured]]:
        """Every measured candidate with the option it runs on, for the scored policies to rank."""
        ...

    def options(self, case: Any) -> list[Option]:
        """The options the full selector plans on."""
        ...

    def measured(self, case: Any, plan: Plan) -> Measured | None:
        """The measured candidate a plan stands for, or None if the case has no row of it."""
        ...

    def placements(self, case: Any, request: EvalRequest) -> dict[str, Measured]:
        """Strategy name -> the feasible measured candidate a selector-less client would run it as."""
        ...

    def fixed_fallback(self, allowed: list[Any]) -> tuple[Any, str]:
        """What the fixed baseline runs where no strategy of its ranking can be placed, and the miss it counts."""
        ...

    def training_mix(self, rows: list[Any]) -> tuple[Sequence[Any], list[EvalRequest]]:
        """The cases and the request mix of training rows (the fixed baseline's ranking is learnt on them)."""
        ...


def oracle(request: EvalRequest, case: MeasuredCase) -> Any:
    """The fastest feasible measured candidate of the case (ties: by name)."""
    return min((c for c in case.candidates if feasible(request, c)), key=lambda c: (c.total_s, c.name))


def fixed_ranking(arena: Arena, cases: Sequence[Any], requests: Sequence[EvalRequest]) -> list[str]:
    """Strategy names, best first, by mean log latency ratio to the oracle of the strategy at its placement over the
    training requests where it could be placed (ties: the one placed more often first)."""
    logs: dict[str, list[float]] = defaultdict(list)
    for req in requests:
        case = cases[req.case]
        best = oracle(req, case).total_s
        for name, cand in arena.placements(case, req).items():
            logs[name].append(math.log(cand.total_s / best))
    return sorted(logs, key=lambda n: (statistics.fmean(logs[n]), -len(logs[n]), n))


def miss_kind(request: EvalRequest, cand: Measured) -> str:
    """The constraint a measured candidate breaks for the request: privacy, accuracy or deadline."""
    why = why_infeasible(request, cand)
    if "budget" in why:
        return "accuracy"
    return "deadline" if "deadline" in why else "privacy"


def privacy_ok(strategy: Strategy, f: RequestFeatures) -> bool:
    """Whether the request's privacy policy allows the strategy (what a model may believe it can run)."""
    try:
        check_allowed(strategy, secret_prompt=f.secret_prompt, open_model=f.open_model)
    except StrategyError:
        return False
    return True


def safe_default(allowed: list[Any]) -> Any:
    """The fallback when a model's plans match no feasible measured candidate: the most accurate feasible one."""
    return min(allowed, key=lambda c: (c.error if c.error is not None else math.inf, c.total_s, c.name))


class Chooser:
    """Chooses one feasible candidate per request; may learn from the outcome."""

    name = ""

    def choose(self, request: EvalRequest, case: Any, allowed: list[Any]) -> tuple[Any, str]:
        """The candidate to run among `allowed` (the feasible measured ones) and its top miss ('' if none)."""
        raise NotImplementedError

    def observe(self, chosen: Measured, latency_s: float) -> None:
        """The served candidate's latency (one of its measured samples)."""
        return None


class Random(Chooser):
    name = "random"

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)  # evaluation sampling, not secret randomness

    def choose(self, request, case, allowed):
        return self.rng.choice(allowed), ""


class Fixed(Chooser):
    """One strategy everywhere: the first of the training ranking the arena can place for the request."""

    name = "fixed"

    def __init__(self, ranking: list[str], arena: Arena) -> None:
        self.ranking, self.arena = ranking, arena

    def choose(self, request, case, allowed):
        placed = self.arena.placements(case, request)
        name = next((n for n in self.ranking if n in placed), None)
        return (placed[name], "") if name is not None else self.arena.fixed_fallback(allowed)


class Scored(Chooser):
    """Ranks the offered candidates by a model's predicted latency (cost model, offline predictor)."""

    def __init__(self, name: str, scorer: Scorer, arena: Arena) -> None:
        self.name, self.scorer, self.arena = name, scorer, arena
        self._memo: dict[tuple, list[tuple[Prediction, Measured]]] = {}  # a replayed request: the same predictions

    def _predictions(self, request: EvalRequest, case: Any) -> list[tuple[Prediction, Measured]]:
        key = (request.case, request.kind, request.features.max_error)
        if key not in self._memo:
            offers = self.arena.offers(case)
            items = [(request.features, option, c.strategy) for option, c in offers]
            many = getattr(self.scorer, "predict_many", None)
            preds = many(items) if many else [self.scorer.predict(*it) for it in items]
            self._memo[key] = [(p, c) for p, (_, c) in zip(preds, offers)]
        return self._memo[key]

    def choose(self, request, case, allowed):
        f = request.features
        # What the model believes it may run: the privacy policy, and its own error prediction within the budget.
        believed = [(p, c) for p, c in self._predictions(request, case) if privacy_ok(c.strategy, f)
                    and (f.max_error is None or p.error <= f.max_error)]
        ranked = [c for _, c in sorted(believed, key=lambda pc: (pc[0].total_s, pc[1].name))]
        pick = next((c for c in ranked if c in allowed), None)
        if pick is None:  # nothing it believes feasible was: the most accurate feasible one
            return safe_default(allowed), "none-feasible"
        return pick, "" if ranked[0] is pick else miss_kind(request, ranked[0])


class Online(Chooser):
    """The full selector: its ranked plans, the first feasible measured one runs, the outcome is observed."""

    name = "selector"

    def __init__(self, planner: Planner, arena: Arena) -> None:
        self.planner, self.arena = planner, arena
        self._last: Plan | None = None

    def choose(self, request, case, allowed):
        self._last, miss = None, ""
        try:
            plans = self.planner.plan(request.features, self.arena.options(case))
        except SelectorError:  # it found no plan within its own constraint estimates
            return safe_default(allowed), "no-plan"
        for plan in plans:
            cand = self.arena.measured(case, plan)
            if cand is None or isinstance(plan.option, WorkerOption) != (cand.strategy.mode == "plaintext"):
                miss = miss or "unmeasured"
            elif cand not in allowed:
                miss = miss or miss_kind(request, cand)
            else:
                self._last = plan
                return cand, miss
        return safe_default(allowed), "none-feasible"  # no plan of the selector is a feasible measured one

    def observe(self, chosen, latency_s):
        if self._last is not None:  # the safe default was not the selector's plan: nothing to learn from
            self.planner.observe(self._last, Outcome(total_s=latency_s, bytes_per_party=chosen.bytes_per_party,
                                                     rounds=chosen.rounds, error=chosen.error))


def build(names: Sequence[str], arena: Arena, train: list[Any], toolkit: Toolkit | None, seed: int) -> list[Chooser]:
    """The policies `names` (oracle aside) for one fold, trained on its rows `train`."""
    out: list[Chooser] = []
    for name in names:
        if name == "random":
            out.append(Random(seed))
        elif name == "fixed":
            out.append(Fixed(fixed_ranking(arena, *arena.training_mix(train)), arena))
        elif toolkit is None:
            raise SelectorError(f"policy {name!r} needs the selector's models (a Toolkit)")
        elif name == "cost_model":
            out.append(Scored(name, toolkit.cost_model(train, seed), arena))
        elif name == "predictor":
            out.append(Scored(name, toolkit.predictor(train, seed), arena))
        else:
            out.append(Online(toolkit.selector(train, seed), arena))
    return out
