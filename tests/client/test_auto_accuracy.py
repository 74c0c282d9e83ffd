"""strategy="auto" without an accuracy budget: a plan is dropped when its strategy is expected to be less accurate
than the default profile (accurate), judged at the default fixed point (the committee's is the owner's choice)."""

from __future__ import annotations

from secureinfer.client.auto import less_accurate
from secureinfer.strategy import PlaintextStrategy, SecureStrategy


def test_only_strategies_as_accurate_as_the_default_profile_pass() -> None:
    passing = [SecureStrategy(), SecureStrategy(frac_bits=14), SecureStrategy(public_weights=True),
               PlaintextStrategy(precision="fp64"), PlaintextStrategy(precision="fp32")]
    dropped = [SecureStrategy(profile="lean"), SecureStrategy(profile="fast", frac_bits=24),
               PlaintextStrategy(precision="bf16"), PlaintextStrategy(precision="fp16", device="cuda"),
               PlaintextStrategy(quantization="int8")]
    assert [less_accurate(s) for s in passing] == [None] * len(passing)
    for strategy in dropped:
        reason = less_accurate(strategy)
        assert reason is not None and reason.startswith("accuracy:") and "max_error=" in reason, strategy
        assert strategy.name in reason
