"""Execution strategies in OpenSession: a public session with a PlaintextStrategy decodes on the fast plaintext
decoder (same greedy tokens as plaintext.py), and strategies that do not fit the request are INVALID_ARGUMENT.

Three daemons (n0, n1, n2) host a tiny GPT-2 as a secret committee; n0 also hosts it as an open model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2

from secureinfer import strategy
from secureinfer.client import Client
from secureinfer.client.connection import RequestFailed, SessionSpec
from secureinfer.models.sampling import SamplingConfig
from secureinfer.mpc.comm import Channel
from secureinfer.mpc.models import serving
from secureinfer.mpc.party import EngineConfig
from secureinfer.net.membership import CommitteeView
from secureinfer.plaintext import serving as plain_serving, reference as plaintext
from secureinfer.v1 import node_pb2

from .committee import PUBLIC, SECRET, Net, running_committee
from .netutil import LoopThread, Pki, finish, open_message

Code = grpc.StatusCode
FAST = strategy.PlaintextStrategy(precision="fp32", static_cache=True)
PROMPT = torch.tensor([[2, 5, 7], [4, 3, 9]])


@pytest.fixture(scope="module")
def net(pki: Pki, loop: LoopThread) -> Iterator[Net]:
    with running_committee(pki, loop, peer_wait_s=2.0) as running:
        yield running


def generate(net: Net, view: CommitteeView, prompt: torch.Tensor, max_new_tokens: int,
             strategy_json: str = "", prompts: int = 1) -> list[serving.Generation]:
    """Greedy generations (the same prompt `prompts` times, with resets between) through the SDK's sessions."""
    secret = view.privacy == node_pb2.PRIVACY_SECRET
    spec = SessionSpec(task=node_pb2.TASK_DECODE, privacy=view.privacy, model_id="olivia/tiny", output="last",
                       strategy_json=strategy_json)
    eos = torch.tensor(net.cfg.eos_token_ids, dtype=torch.int64)

    def program(channel: Channel) -> list[serving.Generation]:
        results, _ = serving.client_generate_many(channel, net.cfg, EngineConfig(), [prompt] * prompts,
                                                  max_new_tokens, SamplingConfig(), eos, None,
                                                  serving.SECRET if secret else serving.PUBLIC)
        return results

    return net.alice.run_session(view, spec, program, timeout_s=60)


def assert_alive(net: Net, nodes: tuple[str, ...] = SECRET) -> None:
    """Every node is SERVING, holds no session, and n0 serves a good public generation."""
    for node in nodes:
        assert net.cluster.run(net.cluster.health(node)) == health_pb2.HealthCheckResponse.SERVING, node
    net.cluster.run(net.cluster.wait_idle(nodes, within_s=5.0))
    got = generate(net, net.view(PUBLIC), PROMPT, 4)[0]
    assert torch.equal(got.tokens, plaintext.greedy_generate(net.cfg, net.params, PROMPT, 4))


def refused(net: Net, nodes: tuple[str, ...], **fields: Any) -> Any:
    message = open_message(net.cluster, nodes, 0, committee_id="c-secret" if len(nodes) == 3 else "c-public",
                           output="last", **fields)

    async def go() -> Any:
        call = net.cluster.inference("alice", "n0").Session(timeout=10)
        await call.write(message)
        await call.done_writing()
        return await finish(call)

    return net.cluster.run(go())


def test_public_generation_with_a_plaintext_strategy_equals_plaintext_greedy(net: Net, monkeypatch) -> None:
    calls: list[tuple[int, ...]] = []
    step = plain_serving._FastSteps.step

    def spy(self: Any, ids: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(ids.shape))
        return step(self, ids)

    monkeypatch.setattr(plain_serving._FastSteps, "step", spy)
    want = plaintext.greedy_generate(net.cfg, net.params, PROMPT, 5, eos_token_ids=())
    cfg = dataclasses.replace(net.cfg, eos_token_ids=())  # full length: every step decodes
    net_full = dataclasses.replace(net, cfg=cfg)
    results = generate(net_full, net.view(PUBLIC), PROMPT, 5, strategy.to_json(FAST), prompts=2)
    for got in results:  # the second one after a reset: the decoder prefills again
        assert torch.equal(got.tokens, want)
    assert calls == ([(2, 3)] + [(2, 1)] * 4) * 2, calls  # served by the fast decoder: prefill, then decode steps
    reference = generate(net_full, net.view(PUBLIC), PROMPT, 5)[0]  # today's path (fp64)
    assert torch.allclose(results[0].logits, reference.logits, atol=1e-4)
    assert len(calls) == 10  # the session without a strategy did not use the fast decoder
    assert_alive(net)


def test_sdk_generate_with_a_strategy(net: Net, pki: Pki) -> None:
    with Client(pki.identity("alice"), [net.cluster.address("n0")], timeout_s=60) as client:
        client.wait_for_model("tiny", "public", timeout_s=15)  # the SDK reads the model's config from the records
        got = client.generate("tiny", PROMPT, 4, privacy="public", committee=net.view(PUBLIC), strategy=FAST)
        assert torch.equal(got.tokens, plaintext.greedy_generate(net.cfg, net.params, PROMPT, 4))
        out = client.logits("tiny", PROMPT, privacy="public", committee=net.view(PUBLIC), strategy=FAST)
        assert torch.allclose(out, plaintext.gpt2_forward(net.cfg, net.params, PROMPT), atol=1e-9)
        with pytest.raises(RequestFailed) as info:
            client.generate("tiny", PROMPT, 2, privacy="secret", committee=net.view(SECRET), strategy=FAST)
        assert info.value.code == Code.INVALID_ARGUMENT
    assert_alive(net)


@pytest.mark.parametrize("text", ["{not json", "[]", '{"mode": "turbo"}', '{"mode": "plaintext", "precision": "fp8"}',
                                  '{"mode": "plaintext", "warp": true}'])
def test_malformed_strategy_json_is_invalid_argument(net: Net, text: str) -> None:
    out = refused(net, PUBLIC, strategy_json=text)
    assert out.code == Code.INVALID_ARGUMENT, out
    assert "strategy" in out.details
    assert not any(m.HasField("accepted") for m in out.received)
    assert_alive(net)


def test_plaintext_strategy_on_a_secret_session_is_invalid_argument(net: Net) -> None:
    out = refused(net, SECRET, strategy_json=strategy.to_json(FAST))
    assert out.code == Code.INVALID_ARGUMENT, out
    assert "secret" in out.details and "plaintext" in out.details, out.details
    assert not any(m.HasField("accepted") for m in out.received)
    assert_alive(net)


@pytest.mark.parametrize("case", ["secure on public", "device mismatch", "speculation"])
def test_strategies_that_do_not_fit_a_public_session(net: Net, case: str) -> None:
    chosen = {"secure on public": strategy.SecureStrategy(profile="lean"),
              "device mismatch": strategy.PlaintextStrategy(device="cuda"),
              "speculation": strategy.PlaintextStrategy(speculation="early_exit")}[case]
    out = refused(net, PUBLIC, strategy_json=strategy.to_json(chosen))
    assert out.code == Code.INVALID_ARGUMENT, out
    expected = {"secure on public": "PlaintextStrategy", "device mismatch": "device",
                "speculation": "speculati"}[case]
    assert expected in out.details, out.details
    assert_alive(net)
