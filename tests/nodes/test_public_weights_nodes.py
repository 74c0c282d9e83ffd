"""Public-weights committees over real gRPC: an owner publishes an open model's weights in the clear to all three
parties of a secure committee, and requests with SecureStrategy(public_weights=True) run there with the prompt still
secret (one-hot shares) and only the client opening the output.

Three daemons (n0, n1, n2) host a tiny GPT-2 as secret shares (committee c-secret) and with public weights (c-open),
and a tiny BERT both ways too. Accuracy: secure outputs are fixed point with randomized truncations, so two runs never
agree bit for bit; every output is checked against float64 plaintext with the secret-weights tests' tolerances (TOL)
and against the in-process public-weights session (serving's own three threads) within 2 x TOL. Bytes are each node's
own count of what it sent in the session (its metrics), and the saving is asserted exactly: 16 bytes per dense-layer
output element and the embedding's resharing (tests/mpc/models/test_public_weights.py derives them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
import torch

from secureinfer import strategy
from secureinfer.client import Client, ModelOwner, NetworkError, RequestFailed
from secureinfer.client.connection import SessionSpec
from secureinfer.models.sampling import SamplingConfig
from secureinfer.mpc.comm import Channel
from secureinfer.mpc.models import serving, session
from secureinfer.mpc.party import EngineConfig
from secureinfer.mpc.protocols import trunc
from secureinfer.net.membership import CommitteeView
from secureinfer.net.wire import config_to_json
from secureinfer.plaintext import reference as plaintext
from secureinfer.v1 import node_pb2

from .committee import PUBLIC, SECRET, Net, publish, running_committee
from .netutil import LoopThread, Pki, finish, open_message, tiny_config, tiny_params

Code = grpc.StatusCode
PUBW = strategy.SecureStrategy(public_weights=True)
TOL = {"bert": 5e-4, "gpt2": 3e-3}  # as tests/mpc/models/test_secure_models.py
IDS = torch.tensor([[2, 5, 7, 3, 11], [4, 3, 9, 1, 6]])
SAVED_PER_TRUNCATED = trunc.bytes_per_element(18) - trunc.bytes_per_element(18, replicated=True)  # 16
SAVED_PER_EMBEDDED = 3 * 8  # the secret one-hot product's resharing: one ring element per party


@pytest.fixture(scope="module")
def net(pki: Pki, loop: LoopThread) -> Iterator[Net]:
    """The shared committee (tiny GPT-2 as shares on c-secret, in the clear on n0), plus the GPT-2 with public
    weights on c-open and a tiny BERT ("bert") with public weights on c-open and as shares on c-secret."""
    with running_committee(pki, loop, peer_wait_s=2.0, gossip=True) as running:
        publish(running.olivia, running.view(SECRET, "c-open"), running.cfg, running.params, public_weights=True)
        cfg, params = bert()
        publish(running.olivia, running.view(SECRET, "c-open"), cfg, params, model_id="bert", public_weights=True)
        publish(running.olivia, running.view(SECRET), cfg, params, model_id="bert")
        yield running


def bert() -> tuple[Any, dict[str, torch.Tensor]]:
    cfg = tiny_config(arch="bert", act="gelu", type_vocab_size=2, norm_eps=1e-12, bos_token_id=None,
                      eos_token_ids=())
    return cfg, tiny_params(cfg, seed=3)


def open_view(net: Net) -> CommitteeView:
    return CommitteeView("c-open", SECRET, tuple(net.cluster.address(n) for n in SECRET), node_pb2.PRIVACY_SECRET,
                         public_weights=True)


def sent_by_nodes(net: Net) -> list[float]:
    """What each node has sent in finished sessions so far (its own metrics), once no session runs."""
    net.run(net.cluster.wait_idle(SECRET, within_s=5.0))
    return [net.cluster.daemons[n].metrics.registry.get_sample_value("secureinfer_bytes_sent_total",
                                                                     {"peer_kind": "party"}) for n in SECRET]


def measured(net: Net, run: Callable[[], Any]) -> tuple[Any, list[int]]:
    """`run()`'s result and the bytes each node sent for it."""
    before = sent_by_nodes(net)
    out = run()
    return out, [int(b - a) for a, b in zip(before, sent_by_nodes(net))]


def logits(net: Net, view: CommitteeView, ids: torch.Tensor, chosen: strategy.Strategy | None = None
           ) -> torch.Tensor:
    """Decoder logits of every position (one forward) through the SDK's session plumbing."""
    spec = SessionSpec(task=node_pb2.TASK_DECODE, privacy=node_pb2.PRIVACY_SECRET, model_id="olivia/tiny", output="all",
                       strategy_json=strategy.to_json(chosen) if chosen is not None else "")

    def program(channel: Channel) -> torch.Tensor:
        return serving.client_logits(channel, net.cfg, EngineConfig(), ids, (ids.shape[1],))[0]

    return net.alice.run_session(view, spec, program, timeout_s=60)


def dense_outputs(cfg: Any, tokens: int, head_rows: int = 0) -> int:
    """Output elements of every dense layer over `tokens` positions (+ the LM head on `head_rows`)."""
    qkv = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim
    return cfg.n_layers * tokens * (qkv + cfg.hidden + cfg.intermediate + cfg.hidden) + head_rows * cfg.vocab_size


def close(name: str, got: torch.Tensor, want: torch.Tensor, tol: float) -> None:
    diff = (got - want).abs().max().item()
    print(f"{name}: max abs diff {diff:.2e} (tolerance {tol:g})")
    assert diff <= tol, name


# ------------------------------------------------------------------------------------------------ records


def test_each_party_records_the_open_committee_as_public_weights(net: Net, pki: Pki) -> None:
    for index, node in enumerate(SECRET):
        reply = net.run(list_models(net, node))
        held = {(m.model_id, m.committee_id): m for m in reply.models}
        assert held["olivia/tiny", "c-open"].public_weights and held["olivia/bert", "c-open"].public_weights
        assert not held["olivia/tiny", "c-secret"].public_weights and not held["olivia/bert", "c-secret"].public_weights
        assert held["olivia/tiny", "c-open"].party_index == index
        assert held["olivia/tiny", "c-open"].privacy == node_pb2.PRIVACY_SECRET
    with Client(pki.identity("alice"), [net.cluster.address("n0")], timeout_s=60) as client:
        for _ in range(60):  # gossip brings every party's record to the seed
            views = {v.committee_id: v for v in client.committees("tiny")}
            if {"c-open", "c-secret"} <= set(views):
                break
            net.run(_sleep(0.25))
        assert views["c-open"].public_weights and not views["c-secret"].public_weights


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def list_models(net: Net, node: str) -> node_pb2.ListModelsReply:
    return await net.cluster.inference("alice", node).ListModels(node_pb2.ListModelsRequest(), timeout=5)


# ------------------------------------------------------------------------------------------------ results and bytes


def test_public_weights_logits_match_the_in_process_session_and_send_less(net: Net) -> None:
    want = plaintext.gpt2_forward(net.cfg, net.params, IDS)
    local, report = session.secure_logits(net.cfg, net.params, IDS, public_weights=True)
    public, public_bytes = measured(net, lambda: logits(net, open_view(net), IDS, PUBW))
    secret, secret_bytes = measured(net, lambda: logits(net, net.view(SECRET), IDS))
    close("network public weights vs plaintext", public, want, TOL["gpt2"])
    close("network secret weights vs plaintext", secret, want, TOL["gpt2"])
    close("network vs in-process public weights", public, local, 2 * TOL["gpt2"])
    print(f"bytes per node: secret weights {secret_bytes}, public weights {public_bytes}; in-process public "
          f"{report.bytes_per_party}")
    tokens = IDS.numel()
    saved = SAVED_PER_TRUNCATED * dense_outputs(net.cfg, tokens, head_rows=tokens) + \
        SAVED_PER_EMBEDDED * tokens * net.cfg.hidden
    assert sum(secret_bytes) - sum(public_bytes) == saved
    assert all(p < s for p, s in zip(public_bytes, secret_bytes))
    # The nodes' counts are the in-process parties' per-step bytes plus the same session overhead in both modes.
    _, secret_report = session.secure_logits(net.cfg, net.params, IDS)
    overhead = [n - r for n, r in zip(public_bytes, report.bytes_per_party)]
    assert overhead == [n - r for n, r in zip(secret_bytes, secret_report.bytes_per_party)]


def test_open_committee_default_and_secret_weights_requests(net: Net) -> None:
    """No strategy: the committee's way (public weights, the same bytes as asking for them); SecureStrategy() with
    public_weights=False: the secret-weights protocol on trivially shared open weights (the shares committee's bytes,
    node for node)."""
    want = plaintext.gpt2_forward(net.cfg, net.params, IDS)
    _, asked = measured(net, lambda: logits(net, open_view(net), IDS, PUBW))
    default, default_bytes = measured(net, lambda: logits(net, open_view(net), IDS))
    assert default_bytes == asked
    close("open committee, no strategy", default, want, TOL["gpt2"])
    shared, shared_bytes = measured(net, lambda: logits(net, open_view(net), IDS, strategy.SecureStrategy()))
    _, shares_bytes = measured(net, lambda: logits(net, net.view(SECRET), IDS, strategy.SecureStrategy()))
    assert shared_bytes == shares_bytes
    assert all(a < b for a, b in zip(asked, shares_bytes))
    close("open committee, secret-weights protocol", shared, want, TOL["gpt2"])


def test_public_weights_generation_matches_plaintext_and_in_process(net: Net) -> None:
    prompt = IDS[:, :3]
    want = plaintext.greedy_generate(net.cfg, net.params, prompt, 4, eos_token_ids=())
    local, _ = session.secure_generate(net.cfg, net.params, prompt, 4, eos_token_ids=(), public_weights=True)
    spec = SessionSpec(task=node_pb2.TASK_DECODE, privacy=node_pb2.PRIVACY_SECRET, model_id="olivia/tiny", output="last",
                       strategy_json=strategy.to_json(PUBW))

    def program(channel: Channel) -> serving.Generation:
        results, _ = serving.client_generate_many(channel, net.cfg, EngineConfig(), [prompt], 4, SamplingConfig(),
                                                  torch.tensor([], dtype=torch.int64))
        return results[0]

    got = net.alice.run_session(open_view(net), spec, program, timeout_s=60)
    assert torch.equal(got.tokens, want) and torch.equal(local.tokens, want)
    close("generation logits, network vs in-process", got.logits, local.logits, 2 * TOL["gpt2"])


def test_sdk_embed_with_public_weights(net: Net, pki: Pki) -> None:
    cfg, params = bert()
    ids = torch.tensor([[2, 5, 7, 3, 11, 4], [4, 3, 9, 1, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    want = plaintext.sentence_embedding(cfg, params, ids, mask)
    local, _ = session.secure_encode(cfg, params, ids, mask, public_weights=True)
    with Client(pki.identity("alice"), [net.cluster.address("n0")], timeout_s=60) as client:
        for _ in range(60):
            if any(v.public_weights for v in client.committees("bert")):
                break
            net.run(_sleep(0.25))
        got, sent = measured(net, lambda: client.embed("bert", ids, mask, strategy=PUBW))  # finds c-open itself
        hidden = client.embed("bert", ids, mask, output="hidden", strategy=PUBW)
    close("bert embedding, network public weights vs plaintext", got, want, TOL["bert"])
    close("bert embedding, network vs in-process", got, local, 2 * TOL["bert"])
    real = mask.bool()
    close("bert hidden (real tokens)", hidden[real], plaintext.bert_forward(cfg, params, ids, mask)[real],
          TOL["bert"])
    assert sent[0] > 0


def test_sdk_owner_publishes_public_weights(net: Net, pki: Pki) -> None:
    with ModelOwner(pki.identity("olivia"), [net.cluster.address("n0")], timeout_s=60) as owner:
        with pytest.raises(ValueError, match="secure committees"):
            owner.publish("open-gpt2", net.cfg, net.params, privacy="public", public_weights=True)
        views = owner.publish("open-gpt2", net.cfg, net.params, nodes=SECRET, public_weights=True)
        owner.publish("closed-gpt2", net.cfg, net.params, nodes=SECRET)
    assert len(views) == 1 and views[0].public_weights is False  # the owner's choice of committee, before records
    with Client(pki.identity("alice"), [net.cluster.address("n0")], timeout_s=60) as client:
        found = client.committees("open-gpt2")
        assert [v.public_weights for v in found] == [True]
        out = client.logits("open-gpt2", IDS, strategy=PUBW)
        close("SDK-published open model", out, plaintext.gpt2_forward(net.cfg, net.params, IDS), TOL["gpt2"])
        with pytest.raises(NetworkError, match="public weights"):  # hosted, but only as secret shares
            client.logits("closed-gpt2", IDS, strategy=PUBW)


# ------------------------------------------------------------------------------------------------ refusals


def refused(net: Net, first: node_pb2.ClientMessage, node: str = "n0") -> Any:
    async def go() -> Any:
        call = net.cluster.inference("alice" if first.open.task != node_pb2.TASK_PUBLISH else "olivia",
                                     node).Session(timeout=10)
        await call.write(first)
        await call.done_writing()
        return await finish(call)

    out = net.run(go())
    assert not any(m.HasField("accepted") for m in out.received), "refused only after accepting"
    return out


def test_public_weights_on_a_shares_committee_is_invalid_argument(net: Net, pki: Pki) -> None:
    for model in ("olivia/tiny", "olivia/bert"):
        task = node_pb2.TASK_DECODE if model == "olivia/tiny" else node_pb2.TASK_ENCODE
        for index, node in enumerate(SECRET):
            out = refused(net, open_message(net.cluster, SECRET, index, committee_id="c-secret", model_id=model,
                                            task=task, strategy_json=strategy.to_json(PUBW)), node)
            assert out.code == Code.INVALID_ARGUMENT, out
            assert "public_weights" in out.details and "secret shares" in out.details, out.details
    with Client(pki.identity("alice"), [net.cluster.address("n0")], timeout_s=60) as client:
        with pytest.raises(RequestFailed) as info:
            client.logits("tiny", IDS, committee=net.view(SECRET), strategy=PUBW)
        assert info.value.code == Code.INVALID_ARGUMENT
        assert "secret shares" in info.value.details
    net.run(net.cluster.wait_idle(SECRET, within_s=5.0))


def test_public_weights_on_a_plaintext_worker_is_invalid_argument(net: Net) -> None:
    out = refused(net, open_message(net.cluster, PUBLIC, 0, committee_id="c-public", output="last",
                                    strategy_json=strategy.to_json(PUBW)))
    assert out.code == Code.INVALID_ARGUMENT and "PlaintextStrategy" in out.details, out


@pytest.mark.parametrize("case", ["request sets the publish flag", "publish flag to a worker"])
def test_misplaced_public_weights_flag_is_invalid_argument(net: Net, case: str) -> None:
    if case == "request sets the publish flag":
        first = open_message(net.cluster, SECRET, 0, committee_id="c-open", output="last", public_weights=True)
    else:
        first = open_message(net.cluster, PUBLIC, 0, committee_id="c-public", task=node_pb2.TASK_PUBLISH,
                             model_config_json=config_to_json(net.cfg), public_weights=True)
    out = refused(net, first)
    assert out.code == Code.INVALID_ARGUMENT and "public_weights" in out.details, out


def test_publishing_open_weights_of_wrong_shapes_is_invalid_argument(net: Net) -> None:
    params = dict(net.params)
    name = sorted(params)[0]
    params[name] = torch.zeros(3, 3, dtype=torch.float64)
    with pytest.raises(RequestFailed) as info:
        publish(net.olivia, net.view(SECRET, "c-bad"), net.cfg, params, model_id="bad", public_weights=True)
    assert info.value.code == Code.INVALID_ARGUMENT and "shape" in info.value.details, info.value
    net.run(net.cluster.wait_idle(SECRET, within_s=5.0))
    reply = net.run(list_models(net, "n1"))
    assert "bad" not in {m.model_id for m in reply.models}


def test_secret_committee_still_serves_plain_requests(net: Net) -> None:
    """The shares committee next to the open one is unchanged: no strategy, secret weights, within tolerance."""
    out = logits(net, net.view(SECRET), IDS)
    close("shares committee", out, plaintext.gpt2_forward(net.cfg, net.params, IDS), TOL["gpt2"])
