"""The gateway through the official `openai` client against real node processes: the hosted models with their modes,
chat (whole and streamed) and text completions equal token for token to the SDK's `generate` and `stream` with the
same settings, embeddings equal to `Client.embed`, usage counts, and privacy per request."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import torch

from secureinfer.models.sampling import SamplingConfig
from secureinfer.strategy import PlaintextStrategy, SecureStrategy

from .conftest import Served, as_ids, send

MESSAGES = [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": "Name a colour."}]
FP64 = {"mode": "plaintext", "precision": "fp64"}


def chat_prompt(served: Served, messages: list[dict[str, str]] = MESSAGES) -> str:
    """The prompt text the model's chat template makes of `messages` (what the gateway must send)."""
    return served.sdk.tokenizer("chat").apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_models_lists_every_hosted_model_with_its_modes_committees_and_owner(served: Served) -> None:
    models = {m.id: m.model_dump() for m in served.llm.models.list()}
    assert set(models) == {"owner/chat", "owner/embed", "owner/plain"}  # OWNER/NAME: the simulation's owner
    chat, embed, plain = models["owner/chat"], models["owner/embed"], models["owner/plain"]
    assert chat["modes"] == embed["modes"] == ["secret", "public"] and plain["modes"] == ["public"]
    assert chat["endpoints"] == ["chat/completions", "completions"] and embed["endpoints"] == ["embeddings"]
    assert all(m["owned_by"] == "owner" and m["object"] == "model" for m in models.values())
    secret = [c for c in chat["committees"] if c["mode"] == "secret"]
    assert len(secret) == 1 and sorted(secret[0]["nodes"]) == ["node-0", "node-1", "node-2"] and secret[0]["up"]
    assert [c["nodes"] for c in plain["committees"]] == [["node-0"]]
    assert chat["context_length"] == 96 and chat["tokenizer"] == "SmolLM2-135M-Instruct" and chat["arch"] == "llama"
    assert served.llm.models.retrieve("plain").model_dump()["modes"] == ["public"]
    assert served.llm.models.retrieve("owner/plain").model_dump()["id"] == "owner/plain"


def test_chat_completion_equals_client_generate_token_for_token(served: Served) -> None:
    got = served.llm.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=4, temperature=0,
                                             extra_body={"return_token_ids": True})
    prompt = chat_prompt(served)
    want = served.sdk.generate("chat", prompt, 4, sampling=SamplingConfig(temperature=0.0))
    choice = got.choices[0]
    assert choice.model_extra["token_ids"] == as_ids(want.tokens)
    assert choice.message.content == want.text and choice.message.role == "assistant"
    assert choice.finish_reason == "length"
    tokenizer = served.sdk.tokenizer("chat")
    assert got.usage.prompt_tokens == len(tokenizer.encode(prompt)) and got.usage.completion_tokens == 4
    assert got.usage.total_tokens == got.usage.prompt_tokens + 4
    plan = got.model_extra["secureinfer"]
    assert plan["mode"] == "secure" and plan["auto"] and sorted(plan["nodes"]) == ["node-0", "node-1", "node-2"]
    assert plan["strategy"] == want.plan.strategy.name and got.id.startswith("chatcmpl-") and got.model == "chat"


def test_streamed_chat_equals_client_stream_piece_for_piece_with_sampling(served: Served) -> None:
    """Sampled (temperature, top_p, top_k, seed): the same settings give the same tokens, and the events carry the
    text in the pieces `Client.stream` yields, token by token as the session samples them."""
    settings = dict(temperature=0.9, top_p=0.95, seed=11)
    stream = served.llm.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=5, stream=True,
                                                stream_options={"include_usage": True},
                                                extra_body={"top_k": 50, "return_token_ids": True}, **settings)
    chunks = list(stream)
    sampling = SamplingConfig(temperature=0.9, top_p=0.95, top_k=50, seed=11)
    prompt = chat_prompt(served)
    pieces = list(served.sdk.stream("chat", prompt, 5, sampling=sampling))
    whole = served.sdk.generate("chat", prompt, 5, sampling=sampling)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    texts = [c.choices[0].delta.content for c in chunks[1:] if c.choices and c.choices[0].delta.content]
    assert texts == pieces and "".join(texts) == whole.text
    last = [c for c in chunks if c.choices and c.choices[0].finish_reason][0]
    assert last.choices[0].model_extra["token_ids"] == as_ids(whole.tokens)
    assert last.choices[0].finish_reason == "length" and last.model_extra["secureinfer"]["mode"] == "secure"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert len({c.id for c in chunks}) == 1


def test_text_completion_with_an_explicit_strategy_in_the_clear(served: Served) -> None:
    """A public request on the worker, with the strategy named: text and token-id prompts, whole and streamed."""
    want = served.plain.generate("plain", "the quick brown fox", 6, privacy="public",
                                 strategy=PlaintextStrategy(precision="fp64"))
    extra = {"privacy": "public", "strategy": FP64, "return_token_ids": True}
    got = served.llm.completions.create(model="plain", prompt="the quick brown fox", max_tokens=6, temperature=0,
                                        extra_body=extra)
    assert got.choices[0].text == want.text and got.choices[0].model_extra["token_ids"] == as_ids(want.tokens)
    assert got.model_extra["secureinfer"] == {"mode": "plaintext", "committee": want.plan.committee_id,
                                              "nodes": ["node-0"], "strategy": "plain-fp64-cpu", "auto": False}
    ids = served.sdk.tokenizer("plain").encode("the quick brown fox")
    by_ids = served.llm.completions.create(model="plain", prompt=ids, max_tokens=6, temperature=0, extra_body=extra)
    assert by_ids.choices[0].text == want.text and by_ids.usage.prompt_tokens == len(ids)
    streamed = list(served.llm.completions.create(model="plain", prompt="the quick brown fox", max_tokens=6,
                                                  temperature=0, stream=True, extra_body=extra))
    assert "".join(c.choices[0].text for c in streamed) == want.text
    assert streamed[-1].choices[0].finish_reason in ("length", "stop")


def test_chat_in_the_clear_with_privacy_public_runs_on_the_worker(served: Served) -> None:
    extra = {"privacy": "public", "strategy": FP64, "return_token_ids": True}
    got = served.llm.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=3, temperature=0,
                                             extra_body=extra)
    want = served.plain.generate("chat", chat_prompt(served), 3, privacy="public",
                                 strategy=PlaintextStrategy(precision="fp64"))
    assert got.model_extra["secureinfer"]["mode"] == "plaintext" and got.model_extra["secureinfer"]["nodes"] == \
        ["node-0"]
    assert got.choices[0].model_extra["token_ids"] == as_ids(want.tokens)


def test_secure_chat_with_an_explicit_strategy_equals_the_sdk(served: Served) -> None:
    got = served.llm.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=3, temperature=0,
                                             extra_body={"strategy": {"mode": "secure", "profile": "accurate"},
                                                         "return_token_ids": True})
    want = served.plain.generate("chat", chat_prompt(served), 3, strategy=SecureStrategy())
    assert got.choices[0].model_extra["token_ids"] == as_ids(want.tokens)
    assert got.model_extra["secureinfer"]["auto"] is False and got.model_extra["secureinfer"]["mode"] == "secure"


TEXTS = ["Secure inference keeps prompts private.", "Nobody sees the prompt."]
PUBLIC = {"privacy": "public"}  # a public encoder request without a strategy runs the worker's default
# Secure sessions truncate fixed-point products probabilistically, so two runs of the same secure request differ in
# the last bits (about 2**-18 here): secure results are compared within that, the worker's exactly.
SECURE_NOISE = 1e-4


def test_embeddings_equal_client_embed_as_floats_and_base64(served: Served) -> None:
    want = served.plain.embed("embed", TEXTS, privacy="public")
    floats = served.llm.embeddings.create(model="embed", input=TEXTS, encoding_format="float", extra_body=PUBLIC)
    got = torch.tensor([d.embedding for d in floats.data], dtype=torch.float64)
    assert torch.equal(got, want.as_subclass(torch.Tensor).to(torch.float64)) and [d.index for d in floats.data] == \
        [0, 1]
    tokenizer = served.sdk.tokenizer("embed")
    assert floats.usage.prompt_tokens == sum(len(tokenizer.encode(t)) for t in TEXTS) == floats.usage.total_tokens
    assert floats.model_extra["secureinfer"] == {"mode": "plaintext", "committee": want.plan.committee_id,
                                                 "nodes": ["node-0"], "strategy": None, "auto": False}
    packed = served.llm.embeddings.create(model="embed", input=TEXTS, extra_body=PUBLIC)  # base64 by default
    assert np.array_equal(np.array([d.embedding for d in packed.data], dtype=np.float32),
                          want.as_subclass(torch.Tensor).to(torch.float32).numpy())


def test_secure_embeddings_equal_client_embed_up_to_the_protocols_rounding(served: Served) -> None:
    got = served.llm.embeddings.create(model="embed", input=TEXTS, encoding_format="float")
    want = served.sdk.embed("embed", TEXTS).as_subclass(torch.Tensor)
    again = served.sdk.embed("embed", TEXTS).as_subclass(torch.Tensor)
    vectors = torch.tensor([d.embedding for d in got.data], dtype=torch.float64)
    assert got.model_extra["secureinfer"]["mode"] == "secure" and vectors.shape == want.shape == (2, 8)
    assert (vectors - want).abs().max() < SECURE_NOISE and (again - want).abs().max() < SECURE_NOISE


def test_embeddings_of_token_ids_equal_client_embed(served: Served) -> None:
    rows = [[101, 2054, 2003, 102], [101, 7592, 102]]
    got = served.llm.embeddings.create(model="embed", input=rows, encoding_format="float", extra_body=PUBLIC)
    ids = torch.tensor([[101, 2054, 2003, 102], [101, 7592, 102, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    want = served.plain.embed("embed", ids, mask, privacy="public")
    assert torch.equal(torch.tensor([d.embedding for d in got.data], dtype=torch.float64),
                       want.as_subclass(torch.Tensor).to(torch.float64))
    assert got.usage.prompt_tokens == 7


def test_one_embedding_as_raw_base64_is_little_endian_float32(served: Served) -> None:
    answer = send(served.url, "POST", "/v1/embeddings", {"model": "embed", "input": "one sentence",
                                                        "encoding_format": "base64", **PUBLIC})
    assert answer.status == 200, answer.body
    vector = np.frombuffer(base64.b64decode(answer.json()["data"][0]["embedding"]), dtype="<f4")
    want = served.plain.embed("embed", "one sentence", privacy="public")
    assert vector.shape == (8,) and np.array_equal(vector, want.as_subclass(torch.Tensor)[0].to(torch.float32).numpy())


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_by_either_name(served: Served, field: str) -> None:
    got = served.llm.chat.completions.create(model="chat", messages=MESSAGES, temperature=0,
                                             extra_body={"privacy": "public", "strategy": FP64, field: 2})
    assert got.usage.completion_tokens == 2
