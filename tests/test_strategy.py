"""Strategies are checked on construction, round-trip through JSON, and refuse what a request may not use."""

from __future__ import annotations

import pytest

from secureinfer.strategy import PlaintextStrategy, SecureStrategy, StrategyError, check_allowed, from_json, to_json


@pytest.mark.parametrize("strategy", [
    SecureStrategy(),
    SecureStrategy(profile="lean", frac_bits=16, public_weights=True, batch_requests=True, device="cuda:1"),
    PlaintextStrategy(),
    PlaintextStrategy(precision="bf16", quantization="int8", static_cache=True, batch_requests=True,
                      cuda_graphs=True, speculation="early_exit", speculation_tokens=3, device="cuda"),
])
def test_json_round_trip_keeps_everything(strategy):
    again = from_json(to_json(strategy))
    assert again == strategy and type(again) is type(strategy)
    assert again.name == strategy.name


@pytest.mark.parametrize("make, message", [
    (lambda: SecureStrategy(profile="turbo"), "profile"),
    (lambda: SecureStrategy(frac_bits=40), "frac_bits"),
    (lambda: SecureStrategy(device="tpu"), "device"),
    (lambda: PlaintextStrategy(precision="fp8"), "precision"),
    (lambda: PlaintextStrategy(cuda_graphs=True, static_cache=True), "CUDA"),
    (lambda: PlaintextStrategy(cuda_graphs=True, device="cuda"), "static_cache"),
    (lambda: PlaintextStrategy(precision="fp16"), "CPU"),
    (lambda: PlaintextStrategy(speculation="magic"), "speculation"),
    (lambda: PlaintextStrategy(speculation_tokens=0), "speculation_tokens"),
])
def test_malformed_strategies_are_refused(make, message):
    with pytest.raises(StrategyError, match=message):
        make()


@pytest.mark.parametrize("text, message", [
    ("not json", "not JSON"),
    ('{"mode": "quantum"}', "mode"),
    ('{"mode": "secure", "profile": "fast", "speed": 9}', "unknown"),
    ('[1, 2]', "mode"),
])
def test_malformed_json_is_refused(text, message):
    with pytest.raises(StrategyError, match=message):
        from_json(text)


def test_secret_requests_never_run_in_plaintext():
    with pytest.raises(StrategyError, match="never runs in plaintext"):
        check_allowed(PlaintextStrategy(), secret_prompt=True, open_model=True)
    with pytest.raises(StrategyError, match="closed model"):
        check_allowed(PlaintextStrategy(), secret_prompt=False, open_model=False)
    with pytest.raises(StrategyError, match="public_weights"):
        check_allowed(SecureStrategy(public_weights=True), secret_prompt=True, open_model=False)
    check_allowed(SecureStrategy(public_weights=True), secret_prompt=True, open_model=True)
    check_allowed(PlaintextStrategy(), secret_prompt=False, open_model=True)
    check_allowed(SecureStrategy(), secret_prompt=False, open_model=False)
