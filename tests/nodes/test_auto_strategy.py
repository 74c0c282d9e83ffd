"""strategy="auto" end to end over real gRPC: the client asks a selector, runs the plan, reports the outcome to the
selector and to the network (visible from another node), never runs a secret prompt in plaintext whatever the
selector says, and falls back to the next placement when one fails.

Three daemons (n0, n1, n2) host a tiny GPT-2 as a secret committee; n0 also hosts it as an open model.
"""

from __future__ import annotations

import json
import time
import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
import torch

from secureinfer.client import (Client, InvalidRequest, ModelNotFound, NetworkError, PlannedTensor, ServedPlan,
                                selector_from_network)
from secureinfer.client.auto import AutoRunner, Work
from secureinfer.plaintext import reference as plaintext
from secureinfer.selector.cost import CostModel
from secureinfer.selector.features import CommitteeOption, Outcome, Plan, Prediction, WorkerOption
from secureinfer.selector.selector import Selector
from secureinfer.selector.space import Policy
from secureinfer.strategy import PlaintextStrategy, SecureStrategy
from secureinfer.v1 import node_pb2

from .committee import PUBLIC, SECRET, Net, publish, running_committee
from .netutil import LoopThread, Pki, tiny_config, wait_until

PROMPT = torch.tensor([[2, 5, 7], [4, 3, 9]])
SPREAD_S = 15.0


@pytest.fixture(scope="module")
def net(pki: Pki, loop: LoopThread) -> Iterator[Net]:
    with running_committee(pki, loop, peer_wait_s=2.0, gossip=True) as running:
        yield running


@pytest.fixture(scope="module")
def costs() -> CostModel:
    """One cost model for the module's selectors: its op tables are measured once (seconds), then cached."""
    return CostModel()


def client(net: Net, pki: Pki, selector: Any, name: str = "alice") -> Client:
    made = Client(pki.identity(name), [net.cluster.address("n0")], timeout_s=60, selector=selector)
    made.wait_for_model("tiny", "public", timeout_s=15)
    made.wait_for_model("tiny", "secret", timeout_s=15)
    return made


def sessions(net: Net, node: str, privacy: str) -> float:
    """Sessions of this privacy a node has finished (any status: refused ones count too)."""
    total = 0.0
    for metric in net.cluster.daemons[node].metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "secureinfer_sessions_total" and sample.labels.get("privacy") == privacy:
                total += sample.value
    return total


def records_at(net: Net, node: str, before: set[str]) -> list[Any]:
    """The rows the SDK reported that a node holds, but for those whose keys are in `before`; none names a client
    (nor the certificate that reported it)."""
    rows = net.cluster.daemons[node].records.store.query()
    found = [r for r in rows if r.key not in before and r.env_json and json.loads(r.env_json).get("source") == "sdk"]
    for r in found:
        assert not {"client", "reported_by"} & set(json.loads(r.env_json)), r.env_json
    return found


def keys_at(net: Net, node: str) -> set[str]:
    return net.cluster.daemons[node].records.store.keys()


class StandIn:
    """A test-only selector with a fixed ranking: `order(request, options)` gives (strategy, option) pairs."""

    def __init__(self, order: Callable[[Any, list[Any]], list[tuple[Any, Any]]], records: tuple[Any, ...] = ()
                 ) -> None:
        self.order = order
        self.records = list(records)  # what it was built from (none: the client flags its plans no_history)
        self.requests: list[Any] = []
        self.observed: list[tuple[Plan, Outcome]] = []

    def plan(self, request: Any, options: list[Any]) -> list[Plan]:
        self.requests.append(request)
        return [Plan(s, o, Prediction(total_s=1.0), request=request) for s, o in self.order(request, options)]

    def observe(self, plan: Plan, outcome: Outcome) -> None:
        self.observed.append((plan, outcome))


def worker(options: list[Any], node: str = "n0") -> WorkerOption:
    return next(o for o in options if isinstance(o, WorkerOption) and o.node.node_id == node)


def committee(options: list[Any]) -> CommitteeOption:
    return next(o for o in options if isinstance(o, CommitteeOption))


def test_public_request_runs_the_selectors_plan_and_the_outcome_reaches_another_node(net: Net, pki: Pki,
                                                                                      costs: CostModel) -> None:
    selector = Selector(None, policy=Policy(allowed_modes=("plaintext",)), seed=0, cost_model=costs)
    before = keys_at(net, "n2")
    with client(net, pki, selector) as alice:
        got = alice.generate("tiny", PROMPT, 4, privacy="public", strategy="auto")
        (plan,) = selector.observed_records  # the selector's own row of what it observed
    assert got.tokens.shape[0] == 2 and 1 <= got.tokens.shape[1] <= 4
    assert int(got.tokens.min()) >= 0 and int(got.tokens.max()) < net.cfg.vocab_size
    assert plan.mode == "plaintext" and plan.status == "ok" and selector.bandit.observations == 1
    wait_until(lambda: len(records_at(net, "n2", before)) == 1, SPREAD_S, "alice's record reaching n2")
    row = records_at(net, "n2", before)[0]  # pushed to n0 (the worker that served it), spread by gossip
    env = json.loads(row.env_json)
    assert "client" not in env and env["node_ids"] == ["n0"] and env["source"] == "sdk"  # no client identity
    assert (row.model, row.task, row.batch, row.seq_len, row.mode) == ("olivia/tiny", "generate", 2, 3, "plaintext")
    assert row.gen_tokens == got.tokens.shape[1] and row.strategy_name == plan.strategy_name
    assert row.total_s > 0 and row.prefill_s is not None and 0 < row.prefill_s < row.total_s
    assert (row.per_token_s is not None) == (row.gen_tokens > 1)
    assert 0 <= row.latency_s < 0.5  # half a measured loopback round trip


@pytest.mark.slow  # the first secure plan measures the cost model's op tables (seconds on a busy box)
def test_secret_request_runs_on_the_committee_and_reports_bytes_and_rounds(net: Net, pki: Pki,
                                                                           costs: CostModel) -> None:
    selector = Selector(None, seed=1, cost_model=costs)
    public_before = sessions(net, "n0", "public")
    before, started = keys_at(net, "n1"), time.time()
    with client(net, pki, selector, "bob") as bob:
        planner = AutoRunner(bob.connector, bob.identity.name, selector)  # what bob's requests are planned with
        request, ranked = planner.plans("olivia/tiny", net.cfg, bob.membership(), _work(), "secret", None)
        assert request.secret_prompt and ranked
        assert all(p.mode == "secure" and len(set(p.node_ids)) == 3 for p, _ in ranked)
        out = bob.logits("tiny", PROMPT, strategy="auto")
    assert out.shape == (2, 3, net.cfg.vocab_size)
    # any secure profile: the largest prior error (the "fast" profile, 0.2) with a margin
    assert torch.allclose(out, plaintext.gpt2_forward(net.cfg, net.params, PROMPT), atol=0.5)
    assert sessions(net, "n0", "public") == public_before
    # rows carry no client name: bob's is the one that finished after this test began (an earlier test's record
    # may still be spreading)
    def bobs() -> list[Any]:
        return [r for r in records_at(net, "n1", before) if r.timestamp >= started]

    wait_until(lambda: len(bobs()) == 1, SPREAD_S, "bob's record reaching n1")
    row = bobs()[0]
    assert row.mode == "secure" and row.task == "logits" and json.loads(row.env_json)["node_ids"] == list(SECRET)
    assert row.rounds and row.rounds > 10 and row.bytes_per_party_max and row.bytes_per_party_max > 1000
    assert row.bytes_per_party_sum >= 3 * row.bytes_per_party_max // 2  # three parties sent, the busiest the most


def _work() -> Work:
    return Work(task="logits", batch=2, seq_len=3)


def test_a_secret_request_never_gets_a_plaintext_plan_whatever_the_selector_says(net: Net, pki: Pki, caplog) -> None:
    rogue = StandIn(lambda r, opts: [(PlaintextStrategy(precision="fp32"), worker(opts)),
                                     (SecureStrategy(profile="accurate"), committee(opts))])
    public_before = sessions(net, "n0", "public")
    with client(net, pki, rogue) as alice, caplog.at_level(logging.WARNING, logger="secureinfer.client.auto"):
        alice.generate("tiny", PROMPT, 2, strategy="auto")  # privacy="secret" by default
        (request,) = rogue.requests
        assert request.secret_prompt and request.open_model and request.gen_tokens == 2
        assert [p.mode for p, _ in rogue.observed] == ["secure"]  # the plaintext plan was dropped, never run
        assert any("dropped: privacy" in m for m in caplog.messages)
        only_plain = StandIn(lambda r, opts: [(PlaintextStrategy(precision="fp32"), worker(opts))])
        alice.use_selector(only_plain)
        with pytest.raises(NetworkError, match="none of the selector's 1 plans"):
            alice.generate("tiny", PROMPT, 2)  # a selector on the client: "auto" is the default
        assert only_plain.observed == []
    assert sessions(net, "n0", "public") == public_before  # no public session was even opened


def test_a_failed_placement_falls_back_to_the_next_and_both_outcomes_are_recorded(net: Net, pki: Pki) -> None:
    net.cluster.start("n3", seeds=(net.cluster.address("n0"),), peer_wait_s=2.0)
    publish(net.olivia, net.view(("n3",), committee_id="c-n3"), net.cfg, net.params)

    def order(request: Any, options: list[Any]) -> list[tuple[Any, Any]]:
        net.cluster.stop("n3")  # after the client measured every node: the first attempt finds n3 gone
        plain = PlaintextStrategy(precision="fp32")
        return [(plain, worker(options, "n3")), (plain, worker(options, "n0"))]

    standin = StandIn(order)
    before = keys_at(net, "n1")
    with client(net, pki, standin) as alice:
        wait_until(lambda: any(v.node_ids == ("n3",) for v in alice.committees("tiny", "public")), 10.0, "n3 seen")
        got = alice.generate("tiny", PROMPT, 3, privacy="public")
    assert torch.equal(got.tokens, plaintext.greedy_generate(net.cfg, net.params, PROMPT, 3))
    assert [(p.node_ids, o.ok) for p, o in standin.observed] == [(("n3",), False), (("n0",), True)]

    def failed() -> list[Any]:
        return [r for r in records_at(net, "n1", before) if r.status == "error"]

    wait_until(lambda: len(failed()) == 1, SPREAD_S, "the failed attempt's record on n1")
    assert "UNAVAILABLE" in failed()[0].error and json.loads(failed()[0].env_json)["node_ids"] == ["n3"]


def test_selector_from_network_learns_from_every_nodes_records(net: Net, pki: Pki, costs: CostModel) -> None:
    """Read through a node's certificate, the selector learns every node's records; a client's may not read them
    and gets a selector without history (it still plans, from the cost model)."""
    with client(net, pki, None, "bob") as bob:
        with pytest.raises(ValueError, match='strategy="auto" needs a selector'):
            bob.logits("tiny", PROMPT, strategy="auto")
        wait_until(lambda: len(net.cluster.daemons["n0"].records.store) >= 2, SPREAD_S, "records on the seed")
        before = net.cluster.daemons["n0"].records.store.keys()
        with client(net, pki, None, "n4") as operator:  # a node's certificate: an operator's selector
            selector = selector_from_network(operator, seed=3, cost_model=costs)
        assert before <= {r.key for r in selector.records} <= net.cluster.daemons["n0"].records.store.keys()
        assert not selector_from_network(bob, seed=3, cost_model=costs).records
        bob.use_selector(selector)
        bob.logits("tiny", PROMPT, privacy="public")
        assert selector.bandit.observations == 1


def test_unusable_plans_are_named_and_a_secret_prompt_only_ever_passes_on_three_secure_parties() -> None:
    """Every strategy of the selector's space on every kind of placement: what the client would run (no network)."""
    cfg = tiny_config()
    from secureinfer.client.auto import Placement, unusable
    from secureinfer.net.membership import CommitteeView
    from secureinfer.selector.features import LinkFeatures, NodeFeatures, RequestFeatures
    from secureinfer.selector.space import plaintext_strategies, secure_strategies

    nodes = tuple(NodeFeatures(n, "cpu", 2, 40.0, 2**33, n) for n in SECRET)
    shares = Placement(CommitteeOption("c", nodes, LinkFeatures()),
                       CommitteeView("c", SECRET, ("a:1", "b:1", "c:1"), node_pb2.PRIVACY_SECRET))
    open_w = Placement(shares.option, CommitteeView("c", SECRET, ("a:1", "b:1", "c:1"), node_pb2.PRIVACY_SECRET,
                                                    public_weights=True))
    work = Placement(WorkerOption(nodes[0]), CommitteeView("w", ("n0",), ("a:1",), node_pb2.PRIVACY_PUBLIC))
    strategies = secure_strategies(True, ("cpu", "cuda")) + plaintext_strategies(True, ("cpu", "cuda"))
    for secret in (True, False):
        request = RequestFeatures.for_model(cfg, model="tiny", seq_len=3, gen_tokens=2, secret_prompt=secret,
                                            open_model=True)
        for place in (shares, open_w, work):
            for chosen in strategies:
                reason = unusable(Plan(chosen, place.option, Prediction(1.0), request=request), place, cfg,
                                  request)
                if secret and (chosen.mode == "plaintext" or place is work):
                    assert reason is not None, (chosen.name, place.view.committee_id)
                if reason is None:  # what passes is exactly what the nodes execute
                    assert chosen.device == "cpu" and not chosen.batch_requests
                    if chosen.mode == "secure":
                        assert chosen.frac_bits == 18 and chosen.public_weights == place.view.public_weights
                    else:
                        assert place is work and chosen.speculation == "none" and not secret
    plain = PlaintextStrategy(precision="fp32")
    secret_request = RequestFeatures.for_model(cfg, model="tiny", seq_len=3, secret_prompt=True, open_model=True)
    reasons = {name: unusable(Plan(s, p.option, Prediction(1.0)), p, cfg, secret_request) for name, s, p in [
        ("plain", plain, work), ("bits", SecureStrategy(frac_bits=16), shares),
        ("cuda", SecureStrategy(device="cuda"), shares), ("pubw", SecureStrategy(public_weights=True), shares)]}
    assert reasons["plain"].startswith("privacy") and "fractional bits" in reasons["bits"]
    assert reasons["cuda"].startswith("device") and reasons["pubw"].startswith("public weights")
    closed_on_open = unusable(Plan(SecureStrategy(), open_w.option, Prediction(1.0)), open_w, cfg, secret_request)
    assert closed_on_open.startswith("planning preference") and "public_weights" in closed_on_open
    with pytest.raises(ValueError, match="committees are secure, workers public"):  # no plan on a mismatched pair
        Placement(WorkerOption(nodes[0]), shares.view)


# ------------------------------------------------------------------------------------------------ what auto keeps


def test_auto_keeps_the_default_accuracy_unless_the_request_sets_a_budget(net: Net, pki: Pki) -> None:
    def lean_first(request: Any, options: list[Any]) -> list[tuple[Any, Any]]:
        return [(SecureStrategy(profile="lean"), committee(options)),
                (SecureStrategy(profile="accurate"), committee(options))]

    standin = StandIn(lean_first)
    with client(net, pki, standin) as alice:
        default = alice.logits("tiny", PROMPT)  # a selector on the client: "auto"
        loose = alice.logits("tiny", PROMPT, max_error=0.1)
        with pytest.raises(InvalidRequest, match="max_error is the accuracy budget"):
            alice.logits("tiny", PROMPT, strategy=SecureStrategy(), max_error=0.1)
        alice.use_selector(StandIn(lambda r, opts: [(SecureStrategy(profile="lean"), committee(opts))]))
        with pytest.raises(NetworkError, match="less accurate than the default profile .* set max_error="):
            alice.logits("tiny", PROMPT)
    assert [r.max_error for r in standin.requests] == [None, 0.1]  # the budget reaches the selector
    assert [p.strategy.profile for p, _ in standin.observed] == ["accurate", "lean"]
    assert default.plan.strategy == SecureStrategy(profile="accurate") and loose.plan.strategy.profile == "lean"


@pytest.mark.slow  # ranks secure plans: the cost model measures its op tables (seconds on a busy box)
def test_the_selectors_secret_plans_are_as_accurate_as_the_default_without_a_budget(net: Net, pki: Pki,
                                                                                    costs: CostModel) -> None:
    selector = Selector(None, seed=4, cost_model=costs)
    with client(net, pki, selector, "bob") as bob:
        planner = AutoRunner(bob.connector, bob.identity.name, selector)
        _, default = planner.plans("olivia/tiny", net.cfg, bob.membership(), _work(), "secret", None)
        _, loose = planner.plans("olivia/tiny", net.cfg, bob.membership(), _work(), "secret", None, max_error=0.5)
    assert default and {p.strategy.profile for p, _ in default} == {"accurate"}
    assert {"fast", "lean"} <= {p.strategy.profile for p, _ in loose}


def test_a_public_request_never_runs_on_a_committee_with_or_without_a_selector(net: Net, pki: Pki) -> None:
    publish(net.olivia, net.view(SECRET, committee_id="c-closed"), net.cfg, net.params, model_id="closed")
    secure_before = sessions(net, "n1", "secret")
    standin = StandIn(lambda r, opts: [(SecureStrategy(), committee(opts))])
    refusals = []
    for selector in (standin, None):
        with client(net, pki, selector) as alice:
            alice.wait_for_model("closed", "secret", timeout_s=15)
            with pytest.raises(ModelNotFound) as info:
                alice.generate("closed", PROMPT, 2, privacy="public")
        refusals.append(info.value)
    assert standin.requests == [] and sessions(net, "n1", "secret") == secure_before  # nothing ran anywhere
    assert [str(r) for r in refusals] == [str(refusals[0])] * 2
    assert refusals[0].code == grpc.StatusCode.NOT_FOUND and "privacy='secret'" in str(refusals[0])


def test_a_selector_without_history_says_so(net: Net, pki: Pki, caplog) -> None:
    plan = StandIn(lambda r, opts: [(SecureStrategy(), committee(opts))])
    with caplog.at_level(logging.WARNING, logger="secureinfer.client.auto"), client(net, pki, plan) as alice:
        fresh = alice.generate("tiny", PROMPT, 2)
    assert any("no history" in m and "0 performance records" in m for m in caplog.messages)
    assert fresh.plan.no_history and fresh.plan.auto
    caplog.clear()
    trained = StandIn(plan.order, records=("a record",))
    with caplog.at_level(logging.WARNING, logger="secureinfer.client.auto"), client(net, pki, trained) as alice:
        seasoned = alice.generate("tiny", PROMPT, 2)
    assert not seasoned.plan.no_history and not any("no history" in m for m in caplog.messages)


def test_every_result_carries_the_plan_that_served_it(net: Net, pki: Pki) -> None:
    with client(net, pki, None) as alice:
        secret = alice.generate("tiny", PROMPT, 2)
        public = alice.logits("tiny", PROMPT, privacy="public")
        named = alice.logits("tiny", PROMPT, strategy=SecureStrategy(profile="fast"))
    assert secret.plan == ServedPlan("secure", "c-secret", SECRET, None, profile="accurate")
    assert public.plan == ServedPlan("plaintext", "c-public", PUBLIC, None)
    assert named.plan == ServedPlan("secure", "c-secret", SECRET, SecureStrategy(profile="fast"))
    want = plaintext.gpt2_forward(net.cfg, net.params, PROMPT)
    diff = public - want  # a PlannedTensor is a tensor: operations give plain tensors
    assert isinstance(public, PlannedTensor) and type(diff) is torch.Tensor and diff.abs().max().item() <= 1e-12
    with client(net, pki, StandIn(lambda r, opts: [(PlaintextStrategy(precision="fp32"), worker(opts))])) as alice:
        auto = alice.generate("tiny", PROMPT, 2, privacy="public")
    assert auto.plan == ServedPlan("plaintext", "c-public", PUBLIC, PlaintextStrategy(precision="fp32"), auto=True,
                                   no_history=True, predicted_s=1.0)
