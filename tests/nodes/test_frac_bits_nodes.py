"""Fixed-point precision of a hosted model over real gRPC: an owner publishes at frac_bits=16, every party encodes,
holds and runs the model at f=16, its record advertises it, the SDK decodes at it, and a request naming another
precision is INVALID_ARGUMENT before its session starts.

Three daemons (n0, n1, n2) host the tiny GPT-2 as shares at the default f=18 (c-secret, from the shared fixture), and
"tiny16" (the same GPT-2, as shares) and "bert16" (a tiny BERT, public weights) at f=16, published through the SDK.
Accuracy: f=16 has a 4x coarser ulp than f=18, so the plaintext tolerance is 4x the f=18 one (TOL16); secure outputs
use randomized truncations, so the network and the in-process session at f=16 agree within 2 x TOL16, not bit for
bit. That the nodes really computed at f=16 is checked on their byte counts: each truncation's bytes depend on f.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import torch

from secureinfer import strategy
from secureinfer.client import Client, ModelOwner, NetworkError, RequestFailed
from secureinfer.client.auto import Placement, unusable
from secureinfer.mpc.models import session
from secureinfer.mpc.party import EngineConfig
from secureinfer.mpc.ring import FixedPoint
from secureinfer.net.membership import CommitteeView
from secureinfer.net.wire import config_to_json
from secureinfer.plaintext import reference as plaintext
from secureinfer.selector.features import CommitteeOption, LinkFeatures, NodeFeatures, Plan, Prediction, \
    RequestFeatures
from secureinfer.v1 import node_pb2

from .committee import PUBLIC, SECRET, Net, running_committee
from .netutil import LoopThread, Pki, finish, open_message, tiny_config, tiny_params

Code = grpc.StatusCode
F16 = strategy.SecureStrategy(frac_bits=16)
AT16 = EngineConfig(fxp=FixedPoint(16))
TOL16 = {"gpt2": 4 * 3e-3, "bert": 4 * 5e-4}  # 4x the f=18 tolerances of tests/mpc/models/test_secure_models.py
IDS = torch.tensor([[2, 5, 7, 3, 11], [4, 3, 9, 1, 6]])


def bert() -> tuple[Any, dict[str, torch.Tensor]]:
    cfg = tiny_config(arch="bert", act="gelu", type_vocab_size=2, norm_eps=1e-12, bos_token_id=None,
                      eos_token_ids=())
    return cfg, tiny_params(cfg, seed=3)


@pytest.fixture(scope="module")
def net(pki: Pki, loop: LoopThread) -> Iterator[Net]:
    """The shared committee (tiny at f=18), plus tiny16 (shares) and bert16 (public weights) published at f=16."""
    with running_committee(pki, loop, peer_wait_s=2.0, gossip=True, batch_window_s=0.05) as running:
        with ModelOwner(pki.identity("olivia"), [running.cluster.address("n0")], timeout_s=60) as owner:
            owner.publish("tiny16", running.cfg, running.params, nodes=SECRET, frac_bits=16)
            cfg, params = bert()
            owner.publish("bert16", cfg, params, nodes=SECRET, frac_bits=16, public_weights=True)
        yield running


@pytest.fixture(scope="module")
def client(net: Net, pki: Pki) -> Iterator[Client]:
    with Client(pki.identity("alice"), [net.cluster.address("n0")], timeout_s=60) as alice:
        alice.wait_for_model("tiny")
        yield alice


def close(name: str, got: torch.Tensor, want: torch.Tensor, tol: float) -> None:
    diff = (got - want).abs().max().item()
    print(f"{name}: max abs diff {diff:.2e} (tolerance {tol:g})")
    assert diff <= tol, name


def sent_by_nodes(net: Net) -> list[int]:
    """What each node has sent to its peers in finished sessions so far (its own metrics), once none runs."""
    net.run(net.cluster.wait_idle(SECRET, within_s=5.0))
    return [int(net.cluster.daemons[n].metrics.registry.get_sample_value("secureinfer_bytes_sent_total",
                                                                         {"peer_kind": "party"})) for n in SECRET]


def measured(net: Net, run: Any) -> tuple[Any, list[int]]:
    before = sent_by_nodes(net)
    out = run()
    return out, [b - a for a, b in zip(before, sent_by_nodes(net))]


def list_models(net: Net, node: str) -> dict[tuple[str, str], node_pb2.HostedModel]:
    async def go() -> node_pb2.ListModelsReply:
        return await net.cluster.inference("alice", node).ListModels(node_pb2.ListModelsRequest(), timeout=10)

    return {(m.model_id, m.committee_id): m for m in net.run(go()).models}


def refused(net: Net, first: node_pb2.ClientMessage, node: str = "n0") -> Any:
    async def go() -> Any:
        who = "olivia" if first.open.task == node_pb2.TASK_PUBLISH else "alice"
        call = net.cluster.inference(who, node).Session(timeout=10)
        await call.write(first)
        await call.done_writing()
        return await finish(call)

    out = net.run(go())
    assert not any(m.HasField("accepted") for m in out.received), "refused only after accepting"
    return out


# ------------------------------------------------------------------------------------------------ records


def test_records_and_committee_views_advertise_the_precision(net: Net, client: Client) -> None:
    committee_of = {}
    for index, node in enumerate(SECRET):
        held = {key[0]: m for key, m in list_models(net, node).items()}
        assert held["olivia/tiny16"].frac_bits == 16 and held["olivia/bert16"].frac_bits == 16
        assert held["olivia/tiny16"].party_index == index and held["olivia/bert16"].public_weights
        committee_of[node] = held["olivia/tiny16"].committee_id
    assert list_models(net, "n0")["olivia/tiny", "c-secret"].frac_bits == 18  # default publishes stay at 18
    assert list_models(net, "n0")["olivia/tiny", "c-public"].frac_bits == 0  # a plaintext worker has no fixed point
    assert len(set(committee_of.values())) == 1
    [view] = client.wait_for_model("tiny16")
    assert view.frac_bits == 16 and view.committee_id == committee_of["n0"]
    assert [v.frac_bits for v in client.committees("tiny")] == [18]
    assert [(v.frac_bits, v.public_weights) for v in client.wait_for_model("bert16")] == [(16, True)]


# ------------------------------------------------------------------------------------------------ accuracy


def test_logits_at_f16_match_plaintext_and_the_in_process_session(net: Net, client: Client) -> None:
    want = plaintext.gpt2_forward(net.cfg, net.params, IDS)
    local, report16 = session.secure_logits(net.cfg, net.params, IDS, config=AT16)
    _, report18 = session.secure_logits(net.cfg, net.params, IDS)
    got, sent16 = measured(net, lambda: client.logits("tiny16", IDS))  # no strategy: the committee's precision
    asked = client.logits("tiny16", IDS, strategy=F16)
    _, sent18 = measured(net, lambda: client.logits("tiny", IDS))
    close("f=16 network vs plaintext", got, want, TOL16["gpt2"])
    close("f=16 network (strategy) vs plaintext", asked, want, TOL16["gpt2"])
    close("f=16 network vs in-process f=16", got, local, 2 * TOL16["gpt2"])
    # The nodes ran at f=16: their bytes differ from the f=18 session's exactly as the in-process parties' do.
    assert report16.bytes_per_party != report18.bytes_per_party
    assert [a - b for a, b in zip(sent16, sent18)] == \
        [a - b for a, b in zip(report16.bytes_per_party, report18.bytes_per_party)]


def test_generation_and_batched_requests_at_f16(net: Net, client: Client) -> None:
    prompt = IDS[:, :3]
    want = plaintext.greedy_generate(net.cfg, net.params, prompt, 4)
    local, _ = session.secure_generate(net.cfg, net.params, prompt, 4, config=AT16)
    got = client.generate("tiny16", prompt, 4, strategy=F16)
    assert torch.equal(got.tokens, want) and torch.equal(local.tokens, want)
    close("f=16 generation logits, network vs in-process", got.logits, local.logits, 2 * TOL16["gpt2"])
    batched = client.logits("tiny16", IDS, strategy=strategy.SecureStrategy(frac_bits=16, batch_requests=True))
    close("f=16 batched logits vs plaintext", batched, plaintext.gpt2_forward(net.cfg, net.params, IDS),
          TOL16["gpt2"])


def test_public_weights_bert_at_f16(net: Net, client: Client) -> None:
    cfg, params = bert()
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    want = plaintext.sentence_embedding(cfg, params, IDS, mask)
    local, _ = session.secure_encode(cfg, params, IDS, mask, public_weights=True, config=AT16)
    got = client.embed("bert16", IDS, mask, strategy=strategy.SecureStrategy(frac_bits=16, public_weights=True))
    close("bert16 embedding vs plaintext", got, want, TOL16["bert"])
    close("bert16 embedding vs in-process f=16", got, local, 2 * TOL16["bert"])


# ------------------------------------------------------------------------------------------------ refusals


def test_a_strategy_at_another_precision_is_refused_naming_both(net: Net, client: Client) -> None:
    with pytest.raises(NetworkError, match=r"frac_bits=18.*held at: 16"):  # the SDK finds no committee at 18
        client.logits("tiny16", IDS, strategy=strategy.SecureStrategy())
    with pytest.raises(NetworkError, match=r"frac_bits=16.*held at: 18"):
        client.logits("tiny", IDS, strategy=F16)
    [view16] = client.committees("tiny16")
    with pytest.raises(RequestFailed) as info:  # a named committee: the nodes refuse it
        client.logits("tiny16", IDS, committee=view16, strategy=strategy.SecureStrategy())
    assert info.value.code == Code.INVALID_ARGUMENT
    assert "frac_bits=18" in info.value.details and "frac_bits=16" in info.value.details, info.value.details
    for index, node in enumerate(SECRET):
        out = refused(net, open_message(net.cluster, SECRET, index, committee_id="c-secret",
                                        strategy_json=strategy.to_json(F16)), node)
        assert out.code == Code.INVALID_ARGUMENT, out
        assert "frac_bits=16" in out.details and "frac_bits=18" in out.details, out.details
    out = refused(net, open_message(net.cluster, SECRET, 0, committee_id=view16.committee_id, model_id="olivia/tiny16",
                                    fractional_bits=18))
    assert out.code == Code.INVALID_ARGUMENT and "frac_bits=18" in out.details and "frac_bits=16" in out.details, out
    net.run(net.cluster.wait_idle(SECRET, within_s=5.0))
    assert torch.equal(client.generate("tiny16", IDS[:, :3], 2).tokens,
                       plaintext.greedy_generate(net.cfg, net.params, IDS[:, :3], 2))  # still serving


PUBLISH_REFUSALS = {
    "below the range": (SECRET, 11, "frac_bits must be an integer in [12, 24]"),
    "above the range": (SECRET, 25, "frac_bits must be an integer in [12, 24]"),
    "on a plaintext worker": (PUBLIC, 16, "floating point"),
}


@pytest.mark.parametrize("case", sorted(PUBLISH_REFUSALS))
def test_publishing_at_a_bad_precision_is_invalid_argument(net: Net, pki: Pki, case: str) -> None:
    nodes, bits, message = PUBLISH_REFUSALS[case]
    first = open_message(net.cluster, nodes, 0, task=node_pb2.TASK_PUBLISH, model_id="bad-bits",
                         committee_id="c-bits", model_config_json=config_to_json(net.cfg), fractional_bits=bits)
    out = refused(net, first)
    assert out.code == Code.INVALID_ARGUMENT and message in out.details, out
    with ModelOwner(pki.identity("olivia"), [net.cluster.address("n0")], timeout_s=60) as owner:
        with pytest.raises(ValueError, match=message.split(" [")[0]):
            owner.publish("bad-bits", net.cfg, net.params, nodes=nodes, frac_bits=bits,
                          privacy="secret" if len(nodes) == 3 else "public")


# ------------------------------------------------------------------------------------------------ autoselect


def test_autoselect_keeps_plans_at_the_committees_precision() -> None:
    """The plan filter passes a secure plan exactly when its frac_bits is the committee's (no network)."""
    cfg = tiny_config()
    nodes = tuple(NodeFeatures(n, "cpu", 2, 40.0, 2**33, n) for n in SECRET)
    option = CommitteeOption("c", nodes, LinkFeatures())
    request = RequestFeatures.for_model(cfg, model="tiny", seq_len=3, secret_prompt=True, open_model=False)
    for held in (16, 18, 20):
        place = Placement(option, CommitteeView("c", SECRET, ("a:1", "b:1", "c:1"), node_pb2.PRIVACY_SECRET,
                                                frac_bits=held))
        for bits in (12, 16, 18, 20, 24):
            chosen = strategy.SecureStrategy(frac_bits=bits)
            reason = unusable(Plan(chosen, option, Prediction(1.0), request=request), place, cfg, request)
            if bits == held:
                assert reason is None, (held, bits, reason)
            else:
                assert reason is not None and f"frac_bits={held}" in reason, (held, bits, reason)
