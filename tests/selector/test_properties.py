"""The property test: over many random requests and networks (option sets, links, devices, owner policies,
accuracy budgets, deadlines, and bandit histories), no plan ever violates the request's privacy, its accuracy
budget, its deadline, or the model owner's policy; and when no plan is returned, none was feasible."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from secureinfer.selector.cost import CostModel
from secureinfer.selector.features import CommitteeOption, Outcome, RequestFeatures, SelectorError, WorkerOption
from secureinfer.selector.selector import Selector
from secureinfer.selector.space import Policy
from secureinfer.strategy import SecureStrategy, check_allowed

from .conftest import committee, worker

POOL = tuple(f"n{i}" for i in range(7))


@pytest.fixture(scope="module")
def trained(op_tables, sweep_records) -> Selector:
    """A selector trained on the sweep rows (predictor fitted), shared by the examples."""
    return Selector(sweep_records, seed=0, cost_model=CostModel(_tables=op_tables))


@st.composite
def requests(draw) -> RequestFeatures:
    arch = draw(st.sampled_from(["gpt2", "llama", "bert"]))
    hidden = draw(st.sampled_from([32, 64, 128]))
    gen = 0 if arch == "bert" else draw(st.integers(1, 6))
    return RequestFeatures(
        model=f"m-{arch}", arch=arch, n_params=hidden * hidden * 20, n_layers=draw(st.integers(1, 3)),
        hidden=hidden, vocab=draw(st.sampled_from([64, 256])), seq_len=draw(st.integers(1, 48)),
        batch=draw(st.integers(1, 3)), gen_tokens=gen, task="embed" if arch == "bert" else "generate",
        secret_prompt=draw(st.booleans()), open_model=draw(st.sampled_from([True, True, False])),
        max_error=draw(st.sampled_from([None, None, 1e-5, 1e-3, 1e-2, 0.1, 1.0])),
        deadline_s=draw(st.sampled_from([None, None, None, 0.01, 0.5, 5.0, 100.0])), n_heads=4, intermediate=2 * hidden)


@st.composite
def networks(draw) -> list:
    options: list = []
    for i in range(draw(st.sampled_from([0, 1, 2, 2, 3, 3]))):
        names = tuple(draw(st.permutations(POOL))[:3])
        options.append(committee(f"c{i}", names, gpu=draw(st.booleans()),
                                 latency_s=draw(st.sampled_from([0.0, 1e-4, 2e-3, 2e-2])),
                                 bandwidth=draw(st.sampled_from([None, 125e6, 12.5e6]))))
    for i in range(draw(st.integers(0, 2))):
        options.append(worker(draw(st.sampled_from(POOL)), gpu=draw(st.booleans()),
                              latency_s=draw(st.sampled_from([1e-4, 2e-2]))))
    return options


@st.composite
def policies(draw) -> Policy:
    if draw(st.booleans()):
        return Policy()
    both = [("secure", "plaintext")] * 3
    modes = draw(st.sampled_from(both + [("secure",), ("plaintext",)]))
    devices = draw(st.sampled_from([("cpu", "cuda")] * 3 + [("cpu",), ("cuda",)]))
    profiles = draw(st.sampled_from([None, None, None, ("lean",), ("accurate", "fast")]))
    nodes = draw(st.sampled_from([None, None, None, frozenset(POOL[:4]), frozenset(POOL[2:])]))
    return Policy(allowed_modes=modes, allowed_devices=devices, allowed_profiles=profiles,
                  forbid_public_weights=draw(st.booleans()), allowed_nodes=nodes,
                  min_frac_bits=draw(st.sampled_from([0, 0, 18])))


def _assert_allowed(plan, request: RequestFeatures, options: list, policy: Policy, sel: Selector) -> None:
    s, option = plan.strategy, plan.option
    assert option in options
    if request.secret_prompt:
        assert s.mode == "secure" and isinstance(option, CommitteeOption)
        assert len({n.node_id for n in option.nodes}) == 3
    if not request.open_model:
        assert isinstance(s, SecureStrategy) and not s.public_weights
    check_allowed(s, secret_prompt=request.secret_prompt, open_model=request.open_model)
    assert isinstance(option, CommitteeOption) == (s.mode == "secure")
    assert isinstance(option, WorkerOption) == (s.mode == "plaintext")
    assert policy.violation(s, option) is None
    nodes = option.nodes if isinstance(option, CommitteeOption) else (option.node,)
    if s.device.startswith("cuda"):
        assert all(n.device.startswith("cuda") for n in nodes)
    if request.max_error is not None:
        assert sel.accuracy.expected_error(request.arch, s) <= request.max_error
        assert plan.predicted.error <= request.max_error
    if request.deadline_s is not None:
        assert plan.predicted.total_s <= request.deadline_s


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(request=requests(), options=networks(), policy=policies(),
       history=st.lists(st.floats(0.1, 20.0), max_size=4))
def test_no_plan_ever_violates_a_hard_constraint(trained, request, options, policy, history):
    sel = trained
    try:
        plans = sel.plan(request, options, policy=policy)
    except SelectorError as exc:
        if options:  # nothing feasible: explain agrees, and the message gives reasons
            assert sel.explain(request, options, policy=policy).ranked == []
            assert "no plan satisfies" in str(exc)
        event("no feasible plan")
        return
    assert plans
    event("plans")
    for factor in history:  # outcomes far from the predictions move the bandit; exploration must stay feasible
        sel.observe(plans[0], Outcome(total_s=plans[0].predicted.total_s * factor))
        try:
            plans = sel.plan(request, options, policy=policy)
        except SelectorError as exc:  # slow outcomes can push every plan past the deadline, and only that
            assert request.deadline_s is not None and "deadline" in str(exc)
            assert sel.explain(request, options, policy=policy).ranked == []
            event("infeasible after slow outcomes (deadline)")
            return
    for plan in plans:
        _assert_allowed(plan, request, options, policy, sel)
