"""Selector.plan / observe / retrain / explain (selector/selector.py) and the bandit (selector/bandit.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from secureinfer.perfstore import open_store
from secureinfer.selector import Selector as Exported
from secureinfer.selector.bandit import NIG, Bandit, BanditConfig
from secureinfer.selector.features import Outcome, RequestFeatures, SelectorError
from secureinfer.selector.selector import Selector, placement
from secureinfer.selector.space import Policy
from secureinfer.strategy import from_json

from .conftest import committee, tiny_gpt2, worker


def test_cold_start_ranks_by_the_cost_model_and_explains(cost_model):
    sel = Exported(None, seed=0, cost_model=cost_model)
    near, far = committee("near", ("a", "b", "c")), committee("far", ("d", "e", "f"), latency_s=0.02)
    request = tiny_gpt2(secret_prompt=False, open_model=True)
    plans = sel.plan(request, [far, near, worker("w", gpu=True)])
    assert plans[0].mode == "plaintext" and plans[0].request == request  # an open model, public prompt: GPU worker
    default = [p for p in plans if any("safe default" in n for n in p.notes)]
    assert len(default) == 1 and default[0].predicted.total_s == min(p.predicted.total_s for p in plans)
    secure = [p for p in plans if p.mode == "secure"]
    assert secure[0].option.committee_id == "near"
    assert all(p.predicted.total_s > 0 and p.predicted.source == "cost_model" for p in plans)
    ex = sel.explain(request, [far, near, worker("w", gpu=True)])  # what the next plan() will rank, as data
    assert [c.arm for c in ex.ranked] == [p.arm for p in sel.plan(request, [far, near, worker("w", gpu=True)])]
    assert ex.predictor_rows == 0
    assert {c.constraint for c in ex.dropped} == set()  # open model, public prompt: nothing is dropped
    closed = sel.explain(tiny_gpt2(), [near, worker("w")])
    reasons = {c.strategy: c.reason for c in closed.dropped}
    assert "never runs on fewer than three" in reasons["plain-fp32-cpu"]
    assert "public_weights" in reasons["secure-lean-f18-pubw-cpu"]
    assert all(c.cost_model_s and c.bandit_sample is not None for c in closed.ranked)


def test_explain_does_not_change_later_plans(cost_model):
    opts = [committee("a", ("a", "b", "c")), committee("b", ("d", "e", "f"))]
    one, two = Selector(None, seed=3, cost_model=cost_model), Selector(None, seed=3, cost_model=cost_model)
    one.explain(tiny_gpt2(), opts)
    assert [p.arm for p in one.plan(tiny_gpt2(), opts)] == [p.arm for p in two.plan(tiny_gpt2(), opts)]


def test_no_feasible_plan_raises_with_reasons(cost_model):
    sel = Selector(None, cost_model=cost_model)
    with pytest.raises(SelectorError, match="never runs on fewer than three"):
        sel.plan(tiny_gpt2(), [worker("w")])  # a secret prompt and only a worker
    with pytest.raises(SelectorError, match="deadline"):
        sel.plan(tiny_gpt2(deadline_s=1e-4), [committee("c", ("a", "b", "c"))])
    with pytest.raises(SelectorError, match="accuracy"):
        sel.plan(tiny_gpt2(max_error=1e-9), [committee("c", ("a", "b", "c"))])
    with pytest.raises(SelectorError, match="policy"):
        sel.plan(tiny_gpt2(), [committee("c", ("a", "b", "c"))], policy=Policy(allowed_devices=("cuda",)))
    with pytest.raises(SelectorError, match="no options"):
        sel.plan(tiny_gpt2(), [])


def test_observe_records_outcomes_and_retrain_uses_them(cost_model, sweep_records):
    store = open_store(":memory:")
    sel = Selector(sweep_records, seed=0, cost_model=cost_model, record_to=store)
    assert sel.predictor.fitted and sel.predictor.n_train >= 200
    opts = [committee("c", ("a", "b", "c"))]
    plan = sel.plan(tiny_gpt2(), opts)[0]
    assert plan.predicted.source == "predictor"
    sel.observe(plan, Outcome(total_s=plan.predicted.total_s * 2, rounds=1400, bytes_per_party=1e6))
    rows = store.query()
    assert len(rows) == 1 and rows[0].strategy_name == plan.strategy.name and rows[0].total_s > 0
    assert from_json(rows[0].strategy_json) == plan.strategy and rows[0].mode == "secure"
    assert sel.bandit.mean(plan.arm, placement(plan.option)) > 0.3  # the outcome was twice the prediction
    before = sel.predictor.n_train
    sel.retrain()
    assert sel.predictor.n_train == before + 1
    with pytest.raises(SelectorError, match="made by Selector.plan"):
        sel.observe(plan.__class__(plan.strategy, plan.option, plan.predicted), Outcome(total_s=1.0))
    with pytest.raises(SelectorError, match="positive total_s"):
        sel.observe(plan, Outcome(total_s=0.0))


def test_exploration_stays_near_the_safe_default(cost_model):
    """Thompson samples reorder plans within explore_ratio of the safe default; slower plans follow by expected
    latency and never come first."""
    sel = Selector(None, seed=0, cost_model=cost_model, explore_ratio=1.5)
    opts = [committee("lan", ("a", "b", "c")), committee("wan", ("d", "e", "f"), latency_s=0.02)]
    for _ in range(30):
        plans = sel.plan(tiny_gpt2(), opts)
        assert plans[0].option.committee_id == "lan"
        tail = [p.predicted.total_s for p in plans if p.option.committee_id == "wan"]
        assert tail == sorted(tail)
        sel.observe(plans[0], Outcome(total_s=plans[0].predicted.total_s))


def test_failed_outcome_counts_as_slow(cost_model):
    sel = Selector(None, cost_model=cost_model)
    plan = sel.plan(tiny_gpt2(), [committee("c", ("a", "b", "c"))])[0]
    sel.observe(plan, Outcome(total_s=plan.predicted.total_s, ok=False))
    assert sel.bandit.mean(plan.arm, placement(plan.option)) > 1.0


def test_nig_posterior_and_forgetting():
    c = BanditConfig(discount=0.5)
    stats = NIG()
    for _ in range(50):
        stats.add(0.7)
    mu, kappa, alpha, _ = stats.posterior(c, c.prior_kappa)
    assert mu == pytest.approx(0.7 * 50 / 52) and kappa == 52 and alpha == 27
    rng = np.random.default_rng(0)
    samples = [stats.sample(c, c.prior_kappa, rng) for _ in range(2000)]
    assert abs(np.mean(samples) - mu) < 0.02 and np.std(samples) < 0.1
    for _ in range(10):
        stats.decay(0.5)
    assert abs(stats.mean(c, c.prior_kappa)) < 0.05  # forgotten: back to the prior mean 0
    b = Bandit(BanditConfig(), seed=1)
    for _ in range(20):
        b.update("arm", "place", 0.0)
    b.update("arm", "place", math.log(5.0))  # a change point restarts the placement at once
    assert b.resets >= 1 and b.mean("arm", "place") > 0.8
    with pytest.raises(ValueError):
        BanditConfig(discount=0.0)


def test_arm_prior_scale_narrows_thompson_samples():
    """A fresh arm's Thompson samples spread with its prior scale: sd = sqrt(beta / (alpha - 1) / kappa0) on
    average over sigma^2 (here beta 0.0064: an sd of 0.08 in log latency, against the config's 0.22)."""
    c = BanditConfig()
    wide, narrow = Bandit(c, seed=0), Bandit(c, seed=0)
    sd_wide = np.std([wide.sample_arm("x") for _ in range(4000)])
    sd_narrow = np.std([narrow.sample_arm("x", arm_beta=0.08 ** 2) for _ in range(4000)])
    print(f"fresh arm's sample sd: config prior {sd_wide:.3f}, arm_beta 0.0064 {sd_narrow:.3f}")
    assert sd_narrow < 0.5 * sd_wide
    assert 0.03 < sd_narrow < 0.1


def test_empirical_priors_from_the_store(cost_model, sweep_records):
    """The selector sets the arm prior per mode from its predictor's held-out within-case spread (secure
    strategies are ordered reliably: small sd; millisecond plaintext timings less so) and the placement prior from
    the between-case spread, all within the clip; explain reports them; with empirical_prior=False the config's
    priors stay."""
    sel = Selector(sweep_records, seed=0, cost_model=cost_model)
    sd = sel.arm_prior_sd
    print(f"empirical arm prior sd: {sd}")
    assert set(sd) == {"secure", "plaintext"}
    assert 0.05 <= sd["secure"] <= 0.15 and sd["secure"] < sd["plaintext"] <= 0.3
    secure_plan = sel.plan(tiny_gpt2(), [committee("c", ("a", "b", "c"))])[0]
    assert sel.arm_beta(secure_plan.strategy) == pytest.approx(sd["secure"] ** 2)
    ex = sel.explain(tiny_gpt2(), [committee("c", ("a", "b", "c"))])
    assert ex.arm_prior_sd == sd and ex.placement_prior_sd == sel.placement_prior_sd
    assert 0.05 <= sel.placement_prior_sd <= 0.3
    c = sel.bandit_config  # a fresh placement's mean has prior variance E[sigma^2] / kappa = placement_prior_sd^2
    assert sel.placement_beta() / (c.prior_alpha - 1) / c.placement_kappa == pytest.approx(sel.placement_prior_sd ** 2)
    off = Selector(sweep_records, seed=0, cost_model=cost_model, empirical_prior=False)
    assert off.arm_prior_sd == {} and off.arm_beta(secure_plan.strategy) is None and off.placement_beta() is None


def test_request_features_for_a_model_config():
    from secureinfer.models.config import ModelConfig

    cfg = ModelConfig(arch="llama", vocab_size=96, hidden=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                      intermediate=48, max_positions=64, norm_eps=1e-5, act="silu", rope_theta=10000.0)
    r = RequestFeatures.for_model(cfg, model="t", seq_len=6, gen_tokens=3, max_error=0.1)
    assert (r.task, r.n_heads, r.n_kv_heads, r.intermediate, r.max_error) == ("generate", 4, 2, 48, 0.1)
    assert r.n_params > 96 * 32
    with pytest.raises(SelectorError, match="max_error"):
        RequestFeatures.for_model(cfg, model="t", seq_len=6, max_error=0.0)
