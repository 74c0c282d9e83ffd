"""selector/evalnet.py: network cases from two hosts' rows (never mixed), the default placement of the fixed
baseline, held-out training rows, and the policies' placement-aware choices on a store whose answers are known."""

from __future__ import annotations

import pytest

from secureinfer.perfstore import RunRecord, run_key
from secureinfer.selector import evalnet, evaluate
from secureinfer.selector.evalcases import RequestKind
from secureinfer.selector.evaluate import EvalConfig
from secureinfer.selector.features import CommitteeOption, Plan, Prediction
from secureinfer.selector.policies import Toolkit
from secureinfer.strategy import SecureStrategy, to_json

H200 = "cuda:0 (NVIDIA H200)"
CPU, CUDA = SecureStrategy(profile="lean", device="cpu"), SecureStrategy(profile="lean", device="cuda")
SECRET = (RequestKind("secret", secret_prompt=True, open_model=False),)
# (host, device, strategy) -> seconds: on the GPU host the CPU parties win (tiny model), the 2-core box is slowest.
TRUTH = {("gpu", H200, CUDA): 1.0, ("gpu", "cpu", CPU): 0.5, ("box", "cpu", CPU): 2.0}
SPEED = {("gpu", H200): 38000.0, ("gpu", "cpu"): 1000.0, ("box", "cpu"): 40.0}
LINKS = {"local": (0.0, None), "metro": (2e-3, 12.5e6)}


def row(model: str, host: str, device: str, strategy, link: str, total_s: float) -> RunRecord:
    lat, bw = LINKS[link]
    return RunRecord(key=run_key(m=model, h=host, d=device, l=link), timestamp=0.0, model=model, arch="gpt2",
                     n_params=10_000, n_layers=2, hidden=16, vocab=32, seq_len=8, batch=1, gen_tokens=2,
                     task="generate", device=device, cpu_count=2, matmul_gflops=SPEED[(host, device)],
                     memory_bytes=2**34, host=host, latency_s=lat, bandwidth_bytes_per_s=bw, mode="secure",
                     strategy_name=strategy.name, strategy_json=to_json(strategy), total_s=total_s,
                     max_abs_err=1e-3, rounds=10, bytes_per_party_max=100)


def store() -> list[RunRecord]:
    rows = []
    for m in ("m1", "m2"):
        for (host, dev, s), t in TRUTH.items():
            for link, slow in (("local", 1.0), ("metro", 1.5)):
                if host == "box" or link == "local":  # the GPU host measured only the local link
                    rows.append(row(m, host, dev, s, link, t * slow))
    return rows


def test_network_cases_options_and_default_order():
    cases = evalnet.network_cases(store())
    assert sorted(c.group for c in cases) == [("m1", "box@local+gpu@local"), ("m1", "box@metro+gpu@local"),
                                              ("m2", "box@local+gpu@local"), ("m2", "box@metro+gpu@local")]
    case = next(c for c in cases if c.group == ("m1", "box@metro+gpu@local"))
    ids = [o.committee_id for o in case.options]
    assert ids == ["gpu/cuda@local", "gpu/cpu@local", "box/cpu@metro"]  # fastest slowest member first
    assert all(isinstance(o, CommitteeOption) for o in case.options)
    assert [n.device for n in case.options[1].nodes] == ["cpu"] * 3 and case.options[1].nodes[0].matmul_gflops == 1000
    assert {(c.host, c.strategy.name, c.total_s) for c in case.candidates} == {
        ("gpu", CUDA.name, 1.0), ("gpu", CPU.name, 0.5), ("box", CPU.name, 3.0)}  # one host per candidate
    req = evalnet.network_requests([case], EvalConfig(kinds=SECRET, budgets=(None,)))[0]
    placed = evalnet.default_placement(case, req, CPU.name)
    assert (placed.host, placed.total_s) == ("gpu", 0.5)  # the fastest option that runs CPU parties


def test_training_rows_leave_the_model_network_out():
    case = next(c for c in evalnet.network_cases(store()) if c.group == ("m1", "box@metro+gpu@local"))
    train = evaluate.training_rows(store(), case.model, dict(case.network))
    held = {(r.host, r.latency_s) for r in store() if r.model == "m1"} - {(r.host, r.latency_s) for r in train
                                                                            if r.model == "m1"}
    assert held == {("box", 2e-3), ("gpu", 0.0)} and len(train) == len(store()) - 3


class Truth:
    """Predicts the measured latency of a (host, strategy), from the option's nodes."""

    def predict_many(self, items):
        out = []
        for _, option, s in items:
            host = option.nodes[0].node_id.split("/")[0]
            dev = H200 if s.device == "cuda" else "cpu"
            slow = 1.5 if option.link.latency_s and host == "box" else 1.0
            out.append(Prediction(TRUTH[(host, dev, s)] * slow, error=1e-3))
        return out


class FirstOption:
    """Plans CUDA on the first option, then CPU parties on the slowest (a poor placement), to check the mapping."""

    def __init__(self) -> None:
        self.observed = []

    def plan(self, request, options):
        return [Plan(CUDA, options[-1], Prediction(1.0), request=request),  # CUDA on the 2-core box: unmeasured
                Plan(CPU, options[-1], Prediction(1.0), request=request)]

    def observe(self, plan, outcome):
        self.observed.append((plan.option.committee_id, outcome.total_s))


def test_policies_place_and_count_misses():
    planner = FirstOption()
    toolkit = Toolkit(cost_model=lambda t, s: Truth(), predictor=lambda t, s: Truth(), selector=lambda t, s: planner)
    cfg = EvalConfig(kinds=SECRET, budgets=(None,), passes=1, groups=(("m1", "box@metro+gpu@local"),))
    report = evalnet.evaluate_network(store(), cfg, toolkit=toolkit)
    by = {c.policy: c for c in report.choices}
    assert by["oracle"].strategy == f"{CPU.name}@gpu"
    assert by["cost_model"].strategy == f"{CPU.name}@gpu" and by["cost_model"].regret == 0.0
    # fixed: trained on the other three networks, where CPU parties on the GPU host won; placed there by default
    assert by["fixed"].strategy == f"{CPU.name}@gpu"
    assert by["selector"].strategy == f"{CPU.name}@box" and by["selector"].miss == "unmeasured"
    assert by["selector"].regret == pytest.approx(3.0 / 0.5 - 1)
    assert planner.observed == [("box/cpu@metro", 3.0)]
