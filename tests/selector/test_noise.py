"""Noise robustness of the selector: a placement's Thompson sample is shared by its arms (it never reorders strategies
on one committee), training targets are one median per measured configuration, and exploration is bounded."""

from __future__ import annotations

import dataclasses

from secureinfer.selector.bandit import BanditConfig
from secureinfer.selector.records import median_samples
from secureinfer.selector.selector import Selector
from secureinfer.strategy import SecureStrategy

from .conftest import committee, tiny_gpt2


def test_placement_sample_never_reorders_one_committees_strategies(cost_model):
    """A placement prior ~100x wider than the arms' (and every plan within explore_ratio): were the placement effect
    drawn per plan, its noise would shuffle the strategies; drawn once per placement, the order follows the
    predictions up to the arms' own tiny noise."""
    cfg = BanditConfig(placement_kappa=1e-4, prior_kappa=1e6)
    sel = Selector(None, seed=3, cost_model=cost_model, bandit_config=cfg, explore_ratio=1e6)
    opts = [committee("c", ("a", "b", "c"))]
    for _ in range(5):
        plans = sel.plan(tiny_gpt2(), opts)
        predicted = [p.predicted.total_s for p in plans]
        assert len(plans) >= 6 and max(predicted) > 1.05 * min(predicted)
        assert all(a <= b * 1.01 for a, b in zip(predicted, predicted[1:]))  # f16/f18 near-ties may swap


def test_explore_ratio_default_keeps_slow_plans_out_of_exploration(cost_model):
    """With the default ratio (1.5), no plan predicted more than 1.5x the safe default's is ever served first."""
    sel = Selector(None, seed=0, cost_model=cost_model)
    assert sel.explore_ratio == 1.5
    opts = [committee("lan", ("a", "b", "c")), committee("wan", ("d", "e", "f"), latency_s=0.02)]
    for _ in range(20):
        plans = sel.plan(tiny_gpt2(), opts)
        best = min(p.predicted.total_s for p in plans)
        assert plans[0].predicted.total_s <= 1.5 * best * (1 + 1e-9)


def test_median_samples_one_target_per_configuration():
    """Three repeats of one configuration (one measured under load) train as their median; another link stays apart."""
    opt = committee("c", ("a", "b", "c"))
    other = dataclasses.replace(opt, link=dataclasses.replace(opt.link, latency_s=0.02))
    s, r = SecureStrategy(profile="lean"), tiny_gpt2()
    data = [(r, opt, s, 1.0), (r, opt, s, 50.0), (r, opt, s, 1.2), (r, other, s, 3.0)]
    out = sorted(median_samples(data), key=lambda x: x[3])
    assert [t for *_, t in out] == [1.2, 3.0] and out[0][1] == opt and out[1][1] == other
