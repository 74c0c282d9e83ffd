"""The strategy space and its hard constraints (selector/space.py)."""

from __future__ import annotations

import pytest

from secureinfer.selector.features import CommitteeOption, RequestFeatures, SelectorError
from secureinfer.selector.space import (AccuracyTable, Candidate, Policy, check, enumerate_candidates, feasible,
                                        hosting, prior_error)
from secureinfer.strategy import PlaintextStrategy, SecureStrategy

from .conftest import H200, committee, cpu_node, gpu_node, tiny_gpt2, worker


def _names(cands) -> set[str]:
    return {c.strategy.name for c in cands}


def test_enumeration_per_option():
    cpu, gpu = committee("c", ("a", "b", "c")), committee("g", ("x", "y", "z"), gpu=True)
    mixed = CommitteeOption("m", (cpu_node("p"), gpu_node("q"), gpu_node("r")))
    req = tiny_gpt2()
    assert len(enumerate_candidates(req, [cpu])) == 3 * 2 * 2  # profiles x frac_bits x weight mode
    assert len(enumerate_candidates(req, [gpu])) == 24 and "secure-lean-f16-pubw-cuda" in _names(
        enumerate_candidates(req, [gpu]))
    assert all(c.strategy.device == "cpu" for c in enumerate_candidates(req, [mixed]))  # GPU only if all three
    plain = _names(enumerate_candidates(req, [worker("w", gpu=True)]))
    assert {"plain-fp16-cuda", "plain-bf16-static-graphs-cuda", "plain-fp32-spec-early_exit4-cpu"} <= plain
    bert = RequestFeatures(model="b", arch="bert", n_params=1, n_layers=2, hidden=64, vocab=256, seq_len=8)
    assert _names(enumerate_candidates(bert, [worker("w")])) == {"plain-fp64-cpu", "plain-fp32-cpu", "plain-bf16-cpu"}


def test_privacy_constraints():
    acc = AccuracyTable()
    c, w = committee("c", ("a", "b", "c")), worker("w")
    secret = tiny_gpt2(secret_prompt=True, open_model=True)
    closed_public_prompt = tiny_gpt2(secret_prompt=False, open_model=False)
    open_public = tiny_gpt2(secret_prompt=False, open_model=True)
    rej, _ = check(secret, Candidate(PlaintextStrategy(), w), Policy(), acc)
    assert rej.constraint == "privacy" and "fewer than three" in rej.reason
    rej, _ = check(closed_public_prompt, Candidate(PlaintextStrategy(), w), Policy(), acc)
    assert rej.constraint == "privacy" and "closed model" in rej.reason
    rej, _ = check(closed_public_prompt, Candidate(SecureStrategy(public_weights=True), c), Policy(), acc)
    assert rej.constraint == "privacy" and "public_weights" in rej.reason
    assert check(open_public, Candidate(PlaintextStrategy(), w), Policy(), acc)[0] is None
    assert check(secret, Candidate(SecureStrategy(public_weights=True), c), Policy(), acc)[0] is None


def test_the_strategy_check_sees_the_options_hosting():
    """space.check asks secureinfer.strategy.misfit where the candidate would run: a GPU node runs CPU parties, a
    strategy off the enumeration (CUDA on CPU nodes, plaintext on a committee) is removed with the check's reason."""
    acc, public = AccuracyTable(), tiny_gpt2(secret_prompt=False, open_model=True)
    cpu, gpu = committee("c", ("a", "b", "c")), committee("g", ("x", "y", "z"), gpu=True)
    where = hosting(gpu, SecureStrategy(device="cuda"))
    assert where.secure and where.node_ids == ("x", "y", "z") and where.devices == (H200,) * 3
    assert (where.frac_bits, where.public_weights, where.batching) == (None, None, None)  # options do not say
    assert hosting(gpu, SecureStrategy()).devices == ("cpu",) * 3
    assert check(public, Candidate(SecureStrategy(), gpu), Policy(), acc)[0] is None
    rej, _ = check(public, Candidate(SecureStrategy(device="cuda"), cpu), Policy(), acc)
    assert rej.constraint == "device" and rej.reason.startswith("device: ") and "cpu, cpu, cpu" in rej.reason
    rej, _ = check(public, Candidate(PlaintextStrategy(), cpu), Policy(), acc)
    assert rej.constraint == "placement" and "one plaintext worker" in rej.reason
    rej, _ = check(public, Candidate(SecureStrategy(), worker("w")), Policy(), acc)
    assert rej.constraint == "privacy" and "three distinct" in rej.reason


def test_policy_and_accuracy_constraints():
    acc = AccuracyTable({("gpt2", "secure-fast-f18"): 0.09})
    c = committee("c", ("a", "b", "c"), gpu=True)
    req = tiny_gpt2(max_error=0.05, open_model=True)
    kept, rejected = feasible(req, [c], Policy(allowed_devices=("cuda",), forbid_public_weights=True,
                                               allowed_profiles=("fast", "lean")), acc)
    names = {k.strategy.name for k, _ in kept}
    assert names and all(n.startswith("secure-lean") and n.endswith("cuda") and "pubw" not in n for n in names)
    reasons = {r.constraint for r in rejected}
    assert reasons == {"policy", "accuracy"}
    fast = [r for r in rejected if r.candidate.strategy.name == "secure-fast-f18-cuda"][0]
    assert fast.constraint == "accuracy" and "0.09" in fast.reason  # the measured error, not the prior
    only = Policy(allowed_nodes=frozenset({"a", "b"}))
    kept, rejected = feasible(tiny_gpt2(open_model=True), [c], only, acc)
    assert kept == [] and all(r.constraint == "policy" and "node(s) c" in r.reason for r in rejected)
    assert feasible(tiny_gpt2(), [c], Policy(allowed_modes=("plaintext",)), acc)[0] == []


def test_priors_and_policy_validation():
    assert prior_error(SecureStrategy(profile="accurate", frac_bits=16)) == pytest.approx(
        4 * prior_error(SecureStrategy(profile="accurate")))
    assert prior_error(PlaintextStrategy(precision="fp64")) < prior_error(PlaintextStrategy(precision="bf16"))
    assert prior_error(PlaintextStrategy(quantization="int8")) >= 0.5
    with pytest.raises(SelectorError, match="allowed_modes"):
        Policy(allowed_modes=("quantum",))
    with pytest.raises(SelectorError, match="allowed_devices"):
        Policy(allowed_devices=("tpu",))
