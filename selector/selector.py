"""The selector: hard constraints first, then cost model -> meta-learned predictor -> online bandit, per request.

    sel = Selector("secureinfer/lab/data/sweep.sqlite", policy=Policy(forbid_public_weights=True), seed=0)
    plans = sel.plan(request, options)          # ranked, best first; every plan satisfies every hard constraint
    outcome = run(plans[0])                     # the caller serves the first plan (or falls back down the list)
    sel.observe(plans[0], outcome)              # bandit update (+ a RunRecord appended to `record_to`, if given)
    sel.explain(request, options)               # features, every candidate's predictions, why others were dropped

Ranking: for every feasible candidate the predictor (the cost model alone before any data) predicts latency; the
bandit's posterior mean residual corrects it (`expected_s`, used for the deadline and reported in the plan); the
order is by a Thompson sample, log(predicted) + sampled residual. The safe default, the feasible plan with the
smallest expected latency, always stays in the list, and exploration only reorders feasible plans whose expected
latency is within `explore_ratio` of the safe default's (the others follow, by expected latency): exploring can
never pick an infeasible plan, nor one expected to be far slower. The default ratio is 1.5: a plan predicted more
than 50% slower than the safe default is not tried on the strength of a Thompson sample alone (a wider ratio let
noisy millisecond plaintext arms be explored at large regret; benchmarks/selector/README.md has the figures).
Thompson samples of the placement effect are drawn once per placement per planning round (the effect is common
to the placement's arms, so it moves them together and never reorders strategies on one committee).
Empirical priors (`empirical_prior`), measured on the training rows at every retrain (predictor.residual_spread:
the predictor's errors on held-out combinations), each clipped to [PRIOR_SD_MIN, PRIOR_SD_MAX]:
  arm        an arm's prior residual scale is how much the errors differ between the strategies of one unseen
             case, per mode (`arm_prior_sd`; below the config's generic prior for secure strategies), so Thompson
             samples reorder secure strategies only where the predictor's ranking is genuinely uncertain;
  placement  a placement effect's prior sd is the sd of the errors' case means (`placement_prior_sd`; below what
             the config's prior and kappa give), so placements are not shuffled on noise the predictor does not
             make, while one surprising outcome still moves the placement (its prior weight stays weak).
The measured scales on the shipped stores are in benchmarks/selector/README.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from secureinfer.perfstore import RunRecord, Store
from secureinfer.strategy import Strategy

from .bandit import Bandit, BanditConfig
from .cost import CostModel
from .features import CommitteeOption, Option, Outcome, Plan, Prediction, RequestFeatures, SelectorError
from .gbrt import GBRTConfig
from .predictor import Predictor, residual_spread
from .records import median_samples, quiet, read_records, record_of, samples
from .space import AccuracyTable, Candidate, Policy, Rejected, feasible

MIN_TRAIN_ROWS = 20  # fewer measured rows: the cost model alone (calibrated where it can be)
PRIOR_SD_MIN, PRIOR_SD_MAX = 0.05, 0.3  # clip of the empirical priors' scales (log latency)


def option_id(option: Option) -> str:
    """A committee's id, or a worker's node id."""
    return option.committee_id if isinstance(option, CommitteeOption) else option.node.node_id


def placement(option: Option) -> str:
    """The nodes a plan runs on, order-free (the bandit's placement key)."""
    if isinstance(option, CommitteeOption):
        return "+".join(sorted(n.node_id for n in option.nodes))
    return option.node.node_id


@dataclass(frozen=True)
class CandidateView:
    """One candidate as `explain` shows it: its predictions, and its rank or the constraint that removed it."""

    strategy: str
    option: str
    arm: str
    expected_error: float
    cost_model_s: float | None = None
    predictor_s: float | None = None
    bandit_mean: float | None = None  # posterior mean residual (log latency)
    bandit_sample: float | None = None
    expected_s: float | None = None
    rank: int | None = None  # 1 = the plan that would be served
    constraint: str | None = None  # dropped: "privacy" | "placement" | "device" | "policy" | "accuracy" | "deadline"
    reason: str | None = None


@dataclass(frozen=True)
class Explanation:
    """Why this plan: the request, the options, every candidate's predictions and every dropped one's reason."""

    request: RequestFeatures
    options: tuple[Option, ...]
    candidates: tuple[CandidateView, ...]
    predictor_rows: int  # rows the predictor was trained on (0: the cost model alone)
    observations: int  # outcomes the bandit has seen
    arm_prior_sd: dict[str, float] = field(default_factory=dict)  # mode -> the arm effect's prior sd (empirical)
    placement_prior_sd: float | None = None  # the placement effect's prior sd (empirical; None: the config's)

    @property
    def ranked(self) -> list[CandidateView]:
        return sorted((c for c in self.candidates if c.rank is not None), key=lambda c: c.rank or 0)

    @property
    def dropped(self) -> list[CandidateView]:
        return [c for c in self.candidates if c.rank is None]


@dataclass(frozen=True)
class _Scored:
    candidate: Candidate
    error: float
    cost: Prediction
    base: Prediction  # predictor (or cost model) prediction
    mean_resid: float
    sample: float

    @property
    def expected_s(self) -> float:
        return self.base.total_s * math.exp(self.mean_resid)

    @property
    def arm(self) -> str:
        return Plan(self.candidate.strategy, self.candidate.option, self.base).arm


@dataclass
class Selector:
    """Plans requests (module docstring). `source`: a Store, a store file (read read-only), RunRecords, or None."""

    source: Store | str | Path | Iterable[RunRecord] | None = field(default=None, repr=False)
    policy: Policy = field(default_factory=Policy)
    seed: int = 0
    cost_model: CostModel | None = None
    bandit_config: BanditConfig = field(default_factory=BanditConfig)
    gbrt_config: GBRTConfig = field(default_factory=GBRTConfig)
    record_to: Store | None = None  # observe() appends a RunRecord per served request here
    explore_ratio: float = 1.5
    calibrate: bool = True
    max_load_per_cpu: float | None = 1.75  # train only on rows measured below this load (None: every row)
    empirical_prior: bool = True  # arm and placement prior scales from the predictor's held-out errors (docstring)

    def __post_init__(self) -> None:
        if self.explore_ratio < 1.0:
            raise SelectorError(f"explore_ratio must be >= 1; got {self.explore_ratio}")
        self.cost_model = self.cost_model or CostModel()
        self.records: list[RunRecord] = _load(self.source)
        self.observed_records: list[RunRecord] = []
        self.bandit = Bandit(self.bandit_config, self.seed)
        self.predictor = Predictor(self.cost_model, self.gbrt_config)
        self.accuracy = AccuracyTable()
        self.arm_prior_sd: dict[str, float] = {}  # mode -> prior sd of an arm's residual (empty: the config's)
        self.placement_prior_sd: float | None = None  # prior sd of a placement effect (None: the config's)
        self.retrain()

    # --- learning

    def retrain(self) -> None:
        """Recalibrate the cost model, rebuild the accuracy table and refit the predictor on every row known (the
        source's and the observed ones). The bandit's posteriors are kept."""
        rows = [r for r in self.records + self.observed_records if r.status == "ok"]
        if self.max_load_per_cpu is not None:
            rows = quiet(rows, self.max_load_per_cpu)
        data = median_samples(samples(rows))
        if self.calibrate and data:
            self.cost_model.calibrate(data)
        self.accuracy = AccuracyTable.from_records(rows)
        self.predictor = Predictor(self.cost_model, self.gbrt_config)
        if len(data) >= MIN_TRAIN_ROWS:
            self.predictor.fit_samples(data)
            if self.empirical_prior:
                spread = residual_spread(data, self.cost_model, self.gbrt_config)
                self.arm_prior_sd = {m: _clip(sd) for m, sd in spread.within.items()}
                self.placement_prior_sd = None if spread.between is None else _clip(spread.between)

    def arm_beta(self, strategy: Strategy) -> float | None:
        """The inverse-gamma prior scale of this strategy's arm effect: residual sd arm_prior_sd (None: the bandit
        config's)."""
        sd = self.arm_prior_sd.get(strategy.mode)
        return None if sd is None else sd * sd * (self.bandit_config.prior_alpha - 1)

    def placement_beta(self) -> float | None:
        """The inverse-gamma prior scale of a placement effect whose mean has prior sd placement_prior_sd (the
        effect's prior variance is E[sigma^2] / placement_kappa; None: the bandit config's)."""
        sd, c = self.placement_prior_sd, self.bandit_config
        return None if sd is None else sd * sd * (c.prior_alpha - 1) * c.placement_kappa

    def observe(self, plan: Plan, outcome: Outcome) -> None:
        """Update the bandit with a served plan's measured outcome (and record it, if `record_to` is set)."""
        if plan.request is None:
            raise SelectorError("observe needs a plan made by Selector.plan (it carries its request)")
        if outcome.total_s is None or (outcome.ok and not outcome.total_s > 0):
            raise SelectorError(f"an outcome needs a positive total_s; got {outcome.total_s}")
        base = self.predictor.predict(plan.request, plan.option, plan.strategy).total_s
        residual = math.log(max(outcome.total_s, 1e-9) / base)
        self.bandit.update(plan.arm, placement(plan.option), residual, ok=outcome.ok,
                           arm_beta=self.arm_beta(plan.strategy), placement_beta=self.placement_beta())
        record = record_of(plan, outcome, plan.request)
        self.observed_records.append(record)
        if self.record_to is not None:
            self.record_to.insert(record)

    # --- planning

    def _score(self, request: RequestFeatures, options: Sequence[Option], rng: np.random.Generator,
               policy: Policy | None) -> tuple[list[_Scored], list[Rejected]]:
        if not options:
            raise SelectorError("no options: the network offers no committee or worker for this model")
        kept, rejected = feasible(request, options, policy or self.policy, self.accuracy)
        items = [(request, c.option, c.strategy) for c, _ in kept]
        costs = [self.cost_model.predict(*it) for it in items]
        bases = self.predictor.predict_many(items) if self.predictor.fitted else costs
        scored = []
        place_samples: dict[str, float] = {}  # one draw per placement, shared by its arms
        for (c, error), cost, base in zip(kept, costs, bases):
            arm = Plan(c.strategy, c.option, base).arm
            place = placement(c.option)
            mean = self.bandit.mean(arm, place)
            if place not in place_samples:
                place_samples[place] = _sample(self.bandit, "placement", place, rng, self.placement_beta())
            sample = place_samples[place] + _sample(self.bandit, "arm", arm, rng, self.arm_beta(c.strategy))
            s = _Scored(c, error, cost, base, mean, sample)
            if request.deadline_s is not None and s.expected_s > request.deadline_s:
                rejected.append(Rejected(c, "deadline", f"deadline: expected {s.expected_s:.3g} s > "
                                                        f"{request.deadline_s:.3g} s"))
            else:
                scored.append(s)
        return scored, rejected

    def _rank(self, scored: list[_Scored]) -> list[_Scored]:
        default = min(scored, key=lambda s: s.expected_s)
        limit = default.expected_s * self.explore_ratio
        explore = [s for s in scored if s.expected_s <= limit]
        rest = sorted((s for s in scored if s.expected_s > limit), key=lambda s: s.expected_s)
        explore.sort(key=lambda s: math.log(max(s.base.total_s, 1e-12)) + s.sample)
        return explore + rest

    def plan(self, request: RequestFeatures, options: Sequence[Option], *, policy: Policy | None = None
             ) -> list[Plan]:
        """Every feasible plan, best first; raises SelectorError (listing the reasons) when none is feasible.
        `policy`: this model owner's policy (default: the selector's)."""
        scored, rejected = self._score(request, list(options), self.bandit.rng, policy)
        if not scored:
            raise SelectorError(_none_feasible(request, rejected))
        ranked = self._rank(scored)
        default = min(scored, key=lambda s: s.expected_s)
        plans = []
        for s in ranked:
            notes = [f"predicted {s.base.total_s:.4g} s ({s.base.source}), bandit residual mean {s.mean_resid:+.3f}"
                     f" sample {s.sample:+.3f}"]
            if s is default:
                notes.append("safe default: smallest expected latency among feasible plans")
            predicted = Prediction(total_s=s.expected_s, bytes_per_party=s.cost.bytes_per_party,
                                   rounds=s.cost.rounds, error=s.error,
                                   source="bandit" if self.bandit.observations else s.base.source)
            plans.append(Plan(s.candidate.strategy, s.candidate.option, predicted, tuple(notes), request))
        return plans

    def explain(self, request: RequestFeatures, options: Sequence[Option], *, policy: Policy | None = None
                ) -> Explanation:
        """What `plan` would see, as data: every candidate's predictions, rank or removal reason. Draws its
        Thompson samples from a copy of the generator, so explaining does not change later plans."""
        rng = np.random.Generator(type(self.bandit.rng.bit_generator)())
        rng.bit_generator.state = self.bandit.rng.bit_generator.state
        scored, rejected = self._score(request, list(options), rng, policy)
        ranked = self._rank(scored) if scored else []
        views = []
        for i, s in enumerate(ranked):
            views.append(CandidateView(s.candidate.strategy.name, option_id(s.candidate.option), s.arm, s.error,
                                       s.cost.total_s, s.base.total_s if self.predictor.fitted else None,
                                       s.mean_resid, s.sample, s.expected_s, rank=i + 1))
        for r in rejected:
            c = r.candidate
            views.append(CandidateView(c.strategy.name, option_id(c.option),
                                       Plan(c.strategy, c.option, Prediction(0.0)).arm,
                                       self.accuracy.expected_error(request.arch, c.strategy),
                                       constraint=r.constraint, reason=r.reason))
        return Explanation(request, tuple(options), tuple(views), self.predictor.n_train if self.predictor.fitted
                           else 0, self.bandit.observations, dict(self.arm_prior_sd), self.placement_prior_sd)


def _clip(sd: float) -> float:
    return min(max(sd, PRIOR_SD_MIN), PRIOR_SD_MAX)


def _sample(bandit: Bandit, effect: str, key: str, rng: np.random.Generator, beta: float | None = None) -> float:
    """A Thompson sample of a placement's or an arm's effect (prior scale `beta`, None: the config's), drawn from
    `rng` (explain draws from a copy)."""
    saved = bandit.rng
    bandit.rng = rng
    try:
        return bandit.sample_placement(key, beta) if effect == "placement" else bandit.sample_arm(key, beta)
    finally:
        bandit.rng = saved


def _none_feasible(request: RequestFeatures, rejected: list[Rejected]) -> str:
    by_constraint: dict[str, set[str]] = {}
    for r in rejected:
        by_constraint.setdefault(r.constraint, set()).add(r.reason)
    reasons = "; ".join(f"{k} ({len(v)} reason(s)): " + " | ".join(sorted(v)[:3]) for k, v in by_constraint.items())
    return (f"no plan satisfies the hard constraints of request for {request.model!r} "
            f"(secret_prompt={request.secret_prompt}, open_model={request.open_model}, "
            f"max_error={request.max_error}, deadline_s={request.deadline_s}): {reasons or 'no candidates'}")


def _load(source: Store | str | Path | Iterable[RunRecord] | None) -> list[RunRecord]:
    if source is None:
        return []
    if isinstance(source, Store):
        return source.query(status="ok")
    if isinstance(source, (str, Path)):
        return read_records(source)
    return list(source)

