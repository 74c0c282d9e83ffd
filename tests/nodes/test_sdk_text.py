"""The SDK's text story over real gRPC: the tokenizer named when publishing (a packaged model's) encodes text for
generate, stream and embed, a tokenizer object can be given per request, a model without one gives an error saying
how to supply one, and publishing more committees than the network has nodes for says how many are needed.

Three daemons (n0, n1, n2, gossiping) host a tiny GPT-2 as a secret committee and in the clear on n0; this module
publishes more models through `ModelOwner`: tiny GPT-2 and BERT configurations with the packaged tokenizers'
vocabularies, in the clear on n0 (tokenization is the client's, whatever the privacy).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
import torch

from secureinfer.client import Client, InvalidRequest, ModelOwner, NotEnoughNodes
from secureinfer.client.text import until_eos
from secureinfer.models.checkpoint import load_tokenizer, packaged_checkpoint
from secureinfer.models.config import ModelConfig
from secureinfer.plaintext import reference as plaintext

from .committee import SECRET, Net, running_committee
from .netutil import LoopThread, Pki, tiny_config, tiny_params

SMOL, MINILM = "SmolLM2-135M-Instruct", "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def net(pki: Pki, loop: LoopThread) -> Iterator[Net]:
    with running_committee(pki, loop, peer_wait_s=2.0, gossip=True) as running:
        yield running


@pytest.fixture(scope="module")
def texts_models(net: Net, pki: Pki) -> dict[str, tuple[ModelConfig, dict[str, torch.Tensor]]]:
    """A GPT-2 with SmolLM2's vocabulary and a BERT with MiniLM's, published in the clear to n0 with their
    packaged tokenizers named."""
    smol = tiny_config(vocab_size=49152, max_positions=16)
    bert = ModelConfig(arch="bert", vocab_size=30522, hidden=8, n_layers=1, n_heads=2, n_kv_heads=2, head_dim=4,
                       intermediate=16, max_positions=16, norm_eps=1e-12, act="gelu", type_vocab_size=2,
                       pad_token_id=0)
    models = {"smol": (smol, tiny_params(smol, seed=4)), "bert": (bert, tiny_params(bert, seed=5))}
    with ModelOwner(pki.identity("olivia"), [net.cluster.address("n0")], timeout_s=60) as owner:
        owner.publish("smol", *models["smol"], privacy="public", nodes=("n0",), tokenizer=SMOL)
        owner.publish("bert", *models["bert"], privacy="public", nodes=("n0",), tokenizer=MINILM)
    return models


def client(net: Net, pki: Pki) -> Client:
    return Client(pki.identity("alice"), [net.cluster.address("n0")], timeout_s=60)


class Letters:
    """A test tokenizer for the tiny model's 13 tokens: letters a-k are ids 2-12."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) - ord("a") + 2 for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i - 2 + ord("a")) for i in ids)


def test_text_in_generate_and_stream_uses_the_tokenizer_named_at_publish(net: Net, pki: Pki, texts_models) -> None:
    tokenizer = load_tokenizer(packaged_checkpoint(SMOL))
    cfg, params = texts_models["smol"]
    prompt = "Hello there"
    with client(net, pki) as alice:
        got = alice.generate("smol", prompt, 4, privacy="public")
        by_ids = alice.generate("smol", torch.tensor([tokenizer.encode(prompt)]), 4, privacy="public")
        pieces = list(alice.stream("smol", prompt, 4, privacy="public"))
        tokens = list(alice.stream("smol", torch.tensor([tokenizer.encode(prompt)]), 4, privacy="public"))
    want = plaintext.greedy_generate(cfg, params, torch.tensor([tokenizer.encode(prompt)]), 4)
    assert torch.equal(got.tokens, want) and torch.equal(by_ids.tokens, want)
    assert got.text == tokenizer.decode(until_eos(want[0].tolist(), cfg.eos_token_ids)) and by_ids.text is None
    assert all(isinstance(p, str) for p in pieces) and "".join(pieces) == got.text
    assert all(isinstance(t, torch.Tensor) for t in tokens) and torch.equal(torch.stack(tokens, 1), want)


def test_texts_in_embed_are_padded_with_their_mask(net: Net, pki: Pki, texts_models) -> None:
    tokenizer = load_tokenizer(packaged_checkpoint(MINILM))
    cfg, params = texts_models["bert"]
    texts = ["hello world", "a somewhat longer sentence to embed"]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with client(net, pki) as alice:
        got = alice.embed("bert", texts, privacy="public")
        one = alice.embed("bert", texts[0], privacy="public")
    want = plaintext.sentence_embedding(cfg, params, enc["input_ids"], enc["attention_mask"])
    assert got.plan.mode == "plaintext" and got.plan.node_ids == ("n0",)
    assert got.shape == want.shape and (got - want).abs().max().item() <= 1e-12
    assert (one - want[:1]).abs().max().item() <= 1e-12


def test_a_tokenizer_object_per_request_serves_a_secret_text_prompt(net: Net, pki: Pki) -> None:
    with client(net, pki) as alice:
        got = alice.generate("tiny", "abc", 3, tokenizer=Letters())
        pieces = list(alice.stream("tiny", "abc", 3, tokenizer=Letters()))
    want = plaintext.greedy_generate(net.cfg, net.params, torch.tensor([[2, 3, 4]]), 3)
    assert got.plan.mode == "secure" and got.plan.node_ids == SECRET
    assert torch.equal(got.tokens, want)
    assert got.text == Letters().decode(until_eos(want[0].tolist(), net.cfg.eos_token_ids)) == "".join(pieces)


def test_text_for_a_model_without_a_tokenizer_says_how_to_supply_one(net: Net, pki: Pki) -> None:
    with client(net, pki) as alice:
        for call in (lambda: alice.generate("tiny", "abc", 2), lambda: next(iter(alice.stream("tiny", "abc", 2))),
                     lambda: alice.logits("tiny", "abc")):
            with pytest.raises(InvalidRequest, match="no tokenizer is known for 'olivia/tiny'") as info:
                call()
            assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and isinstance(info.value, ValueError)
            assert "tokenizer=" in str(info.value) and "ModelOwner.publish(..., tokenizer=...)" in str(info.value)
        with pytest.raises(InvalidRequest, match="cannot load the tokenizer"):
            alice.generate("tiny", "abc", 2, tokenizer="/no/such/tokenizer")
    with ModelOwner(pki.identity("olivia"), [net.cluster.address("n0")], timeout_s=60) as owner:
        with pytest.raises(InvalidRequest, match="tokenizer must name a packaged model"):
            owner.publish("other", net.cfg, net.params, tokenizer="path/to/my-tokenizer")


def test_publishing_more_committees_than_the_network_has_nodes_for_says_how_many(net: Net, pki: Pki) -> None:
    with ModelOwner(pki.identity("olivia"), [net.cluster.address("n0")], timeout_s=60) as owner:
        assert len(owner.nodes()) == 3
        with pytest.raises(NotEnoughNodes) as info:
            owner.publish("two-committees", net.cfg, net.params, committees=2)
        with pytest.raises(NotEnoughNodes, match="need 4 live plaintext workers but only 3"):
            owner.publish("four-workers", net.cfg, net.params, privacy="public", committees=4)
    message = str(info.value)
    print(message)
    assert "need 6 live, healthy secure nodes but only 3 are usable" in message and "3 live node(s)" in message
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION and not isinstance(info.value, ValueError)


class SlowLetters(Letters):
    """Letters that take longer to encode than a node record lives on the short-lived network below (as loading a
    large model's tokenizer from disk can)."""

    def encode(self, text: str) -> list[int]:
        time.sleep(2.5)
        return super().encode(text)


def test_a_request_prepared_longer_than_a_record_lives_still_finds_its_committee(pki: Pki, loop: LoopThread) -> None:
    """Records that expire 2 s after they are signed: the view the request was checked against has expired by the
    time its text is encoded, so the committees must be read again before it is sent (not NOT_FOUND)."""
    with running_committee(pki, loop, peer_wait_s=2.0, gossip=True, record_ttl_s=2.0) as short:
        with Client(pki.identity("alice"), [short.cluster.address("n0")], timeout_s=60) as alice:
            alice.wait_for_model("tiny")  # the committee's records have spread to the seed
            got = alice.generate("tiny", "abc", 2, tokenizer=SlowLetters())
    want = plaintext.greedy_generate(short.cfg, short.params, torch.tensor([[2, 3, 4]]), 2)
    assert got.plan.mode == "secure" and torch.equal(got.tokens, want)
