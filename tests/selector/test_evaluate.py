"""selector/evaluate.py, evalcases.py and evalreport.py: regret to the oracle on a synthetic store whose answers are
known, the baselines, the online replay, and the outputs (table, JSON, PNG)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from secureinfer.perfstore import RunRecord, run_key
from secureinfer.selector import evalcases, evalreport, evaluate
from secureinfer.selector.evalcases import Candidate, RequestKind, cases_from_records, feasible, request_mix
from secureinfer.selector.evaluate import EvalConfig
from secureinfer.selector.features import LinkFeatures, Plan, Prediction, SelectorError
from secureinfer.selector.policies import Toolkit
from secureinfer.strategy import PlaintextStrategy, SecureStrategy, to_json

ACC, FAST = SecureStrategy(profile="accurate"), SecureStrategy(profile="fast")
PLAIN = PlaintextStrategy(precision="fp32")
METRO = (2e-3, 12.5e6)
SECRET = (RequestKind("secret", secret_prompt=True, open_model=False),)
# Measured latency (s) per (link, strategy): fast wins on the local link, accurate on metro.
TRUTH = {("local", "secure-accurate-f18-cpu"): 2.0, ("local", "secure-fast-f18-cpu"): 1.0,
         ("metro", "secure-accurate-f18-cpu"): 1.5, ("metro", "secure-fast-f18-cpu"): 3.0}
ERRORS = {"secure-accurate-f18-cpu": 1e-3, "secure-fast-f18-cpu": 0.05, "plain-fp32-cpu": 1e-6}


def row(model: str, strategy, link: tuple[float, float | None], total_s: float, error: float | None) -> RunRecord:
    return RunRecord(
        key=run_key(m=model, s=strategy.name, l=link), timestamp=0.0, model=model, arch="gpt2", n_params=10_000,
        n_layers=2, hidden=16, vocab=32, seq_len=8, batch=1, gen_tokens=2, task="generate", device="cpu",
        cpu_count=2, matmul_gflops=40.0, memory_bytes=2**34, host="box", latency_s=link[0],
        bandwidth_bytes_per_s=link[1], mode=strategy.mode, strategy_name=strategy.name,
        strategy_json=to_json(strategy), total_s=total_s, max_abs_err=error, rounds=100 if strategy.mode == "secure"
        else None, bytes_per_party_max=1000 if strategy.mode == "secure" else None)


def synthetic(models=("m1", "m2")) -> list[RunRecord]:
    rows = []
    for m in models:
        for (link, name), t in TRUTH.items():
            rows.append(row(m, ACC if "accurate" in name else FAST, (0.0, None) if link == "local" else METRO, t,
                            ERRORS[name]))
        rows.append(row(m, PLAIN, (0.0, None), 0.01, ERRORS["plain-fp32-cpu"]))
    return rows


def test_cases_join_plaintext_rows_to_every_link_with_the_hop():
    cases = cases_from_records(synthetic(("m1",)))
    assert [c.group for c in cases] == [("m1", "box", "local"), ("m1", "box", "metro")]
    metro = cases[1]
    by_name = {c.name: c for c in metro.candidates}
    assert set(by_name) == {"secure-accurate-f18-cpu", "secure-fast-f18-cpu", "plain-fp32-cpu"}
    # one round trip per forward (2 forwards), prompt ids (8 x 8 B) and a logits row per forward (2 x 32 x 4 B)
    hop = 2 * 2 * 2e-3 + (8 * 8 + 2 * 32 * 4) / 12.5e6
    assert evalcases.plaintext_hop_s(metro.features, LinkFeatures(*METRO)) == pytest.approx(hop)
    assert by_name["plain-fp32-cpu"].total_s == pytest.approx(0.01 + hop)
    assert {c.name: c.total_s for c in cases[0].candidates}["plain-fp32-cpu"] == pytest.approx(0.01)
    assert by_name["secure-fast-f18-cpu"].total_s == 3.0  # secure rows: measured over the link already


def test_feasibility_is_privacy_then_budget():
    case = cases_from_records(synthetic(("m1",)))[0]
    reqs = request_mix([case], budgets=(None, 0.01))
    names = {(r.kind, r.features.max_error): {c.name for c in case.candidates if feasible(r, c)} for r in reqs}
    assert names[("secret", None)] == names[("secret-open-model", None)] == \
        {"secure-accurate-f18-cpu", "secure-fast-f18-cpu"}
    assert names[("secret", 0.01)] == {"secure-accurate-f18-cpu"}  # fast's measured error 0.05 is over budget
    assert names[("open", None)] == {"secure-accurate-f18-cpu", "secure-fast-f18-cpu", "plain-fp32-cpu"}
    unmeasured = Candidate(PLAIN, 0.01, None, (0.01,))
    by = {(r.kind, r.features.max_error): r for r in reqs}
    assert "not measured" in evalcases.why_infeasible(by[("open", 0.01)], unmeasured)
    assert "never runs in plaintext" in evalcases.why_infeasible(by[("secret", None)], unmeasured)
    assert evalcases.why_infeasible(by[("open", None)], unmeasured) == ""
    assert evalcases.parse_budgets("none, 0.01") == (None, 0.01)
    with pytest.raises(SelectorError):
        evalcases.parse_budgets("-1")


def test_training_rows_leave_the_group_out():
    rows = synthetic()
    train = evaluate.training_rows(rows, "m1", {"box": "metro"})
    assert not [r for r in train if r.model == "m1" and (r.latency_s == METRO[0] or r.mode == "plaintext")]
    assert len(train) == len(rows) - 3  # m1's two metro rows and its plaintext row
    assert {r.model for r in evaluate.training_rows(rows, "m1")} == {"m2"}


def test_fixed_baseline_regret_is_known():
    """Trained on m1@local, m2@local and m2@metro, the best fixed strategy is fast (2 of 3 oracle wins); on the
    held-out m1@metro it costs 3.0 s against the oracle's 1.5 s: regret exactly 1."""
    cfg = EvalConfig(kinds=SECRET, budgets=(None,), passes=2, policies=("random", "fixed"),
                     groups=(("m1", "box", "metro"),))
    report = evaluate.evaluate(synthetic(), cfg)
    fixed = [c for c in report.choices if c.policy == "fixed"]
    assert len(fixed) == 2 and {c.strategy for c in fixed} == {"secure-fast-f18-cpu"}
    assert all(c.oracle_strategy == "secure-accurate-f18-cpu" and c.regret == pytest.approx(1.0) for c in fixed)
    s = report.summary("fixed")
    assert (s["median_s"], s["oracle_median_s"], s["median_ratio"]) == (3.0, 1.5, 2.0)
    assert s["within_10pct"] == 0.0 and s["mean_regret"] == pytest.approx(1.0)
    assert report.summary("oracle")["median_ratio"] == 1.0
    assert {c.regret for c in report.choices if c.policy == "random"} <= {0.0, 1.0}


class TableScorer:
    """Predicts the measured latency (or its inverse: the worst first), on any link."""

    def __init__(self, invert: bool = False) -> None:
        self.invert = invert

    def predict(self, request, option, strategy):
        if strategy.mode == "plaintext":
            return Prediction(0.01, error=1e-6)
        link = "metro" if option.link.latency_s else "local"
        t = TRUTH[(link, strategy.name)]
        return Prediction(1 / t if self.invert else t, error=ERRORS[strategy.name])


class GreedyPlanner:
    """Prefers fast until it has seen an outcome; then the best observed mean latency (observe is exercised)."""

    def __init__(self) -> None:
        self.seen: dict[str, list[float]] = {}

    def plan(self, request, options):
        committee = options[0]
        order = sorted((FAST, ACC), key=lambda s: (sum(self.seen.get(s.name, [0.0])) /
                                                   len(self.seen.get(s.name, [1])), s is ACC))
        if not self.seen:
            order = [FAST, ACC]
        return [Plan(s, committee, Prediction(1.0), request=request) for s in order]

    def observe(self, plan, outcome):
        self.seen.setdefault(plan.strategy.name, []).append(outcome.total_s)


def test_model_policies_and_online_replay():
    toolkit = Toolkit(cost_model=lambda train, seed: TableScorer(),
                      predictor=lambda train, seed: TableScorer(invert=True),
                      selector=lambda train, seed: GreedyPlanner())
    cfg = EvalConfig(kinds=SECRET, budgets=(None,), passes=3, groups=(("m1", "box", "metro"),))
    report = evaluate.evaluate(synthetic(), cfg, toolkit=toolkit)
    assert report.summary("cost_model")["mean_regret"] == 0.0  # perfect predictions pick the oracle
    assert report.summary("predictor")["mean_regret"] == pytest.approx(1.0)  # inverted ones the worst
    online = sorted((c for c in report.choices if c.policy == "selector"), key=lambda c: c.replay)
    # First request: fast (regret 1); it observes 3.0 s, then prefers accurate (unseen, mean 0) and keeps it.
    assert [c.strategy for c in online] == ["secure-fast-f18-cpu"] + ["secure-accurate-f18-cpu"] * 2
    assert [c.top_miss for c in online] == [False] * 3
    assert report.summary("selector")["median_ratio"] == 1.0
    with pytest.raises(SelectorError, match="needs the selector"):
        evaluate.evaluate(synthetic(), cfg)  # model policies without a toolkit
    with pytest.raises(SelectorError, match="unknown policies"):
        EvalConfig(policies=("oracle2",))
    with pytest.raises(SelectorError, match="no requests for held-out groups"):
        evaluate.evaluate(synthetic(), EvalConfig(policies=("fixed",), groups=(("m9", "box", "local"),)))


def test_top_misses_say_why():
    """Under a 0.01 budget the planner's first plan (fast, measured error 0.05) breaks the budget as measured: it is
    a miss of kind accuracy, and the next plan (accurate) runs; the store has no plaintext row for m1 on metro."""
    toolkit = Toolkit(cost_model=lambda train, seed: TableScorer(), predictor=lambda train, seed: TableScorer(),
                      selector=lambda train, seed: GreedyPlanner())
    cfg = EvalConfig(kinds=SECRET, budgets=(0.01,), passes=1, groups=(("m1", "box", "metro"),))
    report = evaluate.evaluate(synthetic(), cfg, toolkit=toolkit)
    (online,) = [c for c in report.choices if c.policy == "selector"]
    assert (online.strategy, online.miss, online.regret) == ("secure-accurate-f18-cpu", "accuracy", 0.0)
    assert report.summary("selector")["misses_accuracy"] == 1 and report.summary("cost_model")["top_misses"] == 0

    class NoPlan(GreedyPlanner):
        def plan(self, request, options):
            raise SelectorError("nothing fits")

    toolkit = dataclasses.replace(toolkit, selector=lambda train, seed: NoPlan())
    report = evaluate.evaluate(synthetic(), cfg, toolkit=toolkit)
    (online,) = [c for c in report.choices if c.policy == "selector"]
    assert (online.strategy, online.miss) == ("secure-accurate-f18-cpu", "no-plan")  # the most accurate feasible


def test_outputs_table_json_plot(tmp_path):
    toolkit = Toolkit(cost_model=lambda train, seed: TableScorer(), predictor=lambda train, seed: TableScorer(),
                      selector=lambda train, seed: GreedyPlanner())
    report = evaluate.evaluate(synthetic(), EvalConfig(passes=1), toolkit=toolkit)
    assert len(report.groups) == 4
    table = evalreport.report_table(report)
    for label in evalreport.LABELS.values():
        assert label in table
    assert "target: full selector median within 10%" in table and "-- open requests" in table
    evalreport.write_json(report, tmp_path / "e.json", command="secureinfer selector eval", choices=True)
    doc = json.loads((tmp_path / "e.json").read_text())
    assert set(doc["summary"]) == {"oracle", *evaluate.POLICIES}
    assert doc["command"] == "secureinfer selector eval" and len(doc["choices"]) == len(report.choices)
    assert set(doc["targets"]) >= {"selector_vs_oracle_median_ratio", "selector_below_fixed_median"}
    for s in doc["summary"].values():
        assert s["n"] > 0 and math.isfinite(s["median_ratio"]) and s["median_ratio"] >= 1.0
    evalreport.write_plot(report, tmp_path / "e.png")
    assert (tmp_path / "e.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
