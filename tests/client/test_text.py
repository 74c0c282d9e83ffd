"""Text at the client: which tokenizer a request uses (given, else the one published with the model; none: an error
saying how to supply one), batches padded with their masks, and generations decoded whole or piece by piece."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from secureinfer.client import InvalidRequest
from secureinfer.client.text import (TextStream, check_packaged, decode_generation, encode_batch, encode_prompt,
                                     is_text, tokenizer_for)
from secureinfer.models.checkpoint import PACKAGED_MODELS
from secureinfer.models.config import ModelConfig
from secureinfer.net.wire import config_from_json, config_to_json

CFG = ModelConfig(arch="gpt2", vocab_size=300, hidden=8, n_layers=1, n_heads=2, n_kv_heads=2, head_dim=4,
                  intermediate=16, max_positions=8, norm_eps=1e-5, act="gelu_tanh", eos_token_ids=(1,))


class Bytes:
    """A byte-level test tokenizer: each UTF-8 byte is one token (ids 3..258); a character may span tokens."""

    def encode(self, text: str) -> list[int]:
        return [b + 3 for b in text.encode()]

    def decode(self, ids: list[int]) -> str:
        return bytes(i - 3 for i in ids).decode(errors="replace")


def test_the_request_tokenizer_wins_else_the_published_one_else_an_error_saying_how() -> None:
    cfg = CFG
    given = Bytes()
    assert tokenizer_for("m", cfg, given) is given
    with pytest.raises(InvalidRequest, match="no tokenizer is known for 'm'") as info:
        tokenizer_for("m", cfg, None)
    for hint in ("tokenizer=", "ModelOwner.publish(..., tokenizer=...)", *PACKAGED_MODELS):
        assert hint in str(info.value)
    with pytest.raises(InvalidRequest, match="encode"):
        tokenizer_for("m", cfg, 42)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="cannot load the tokenizer"):
        tokenizer_for("m", dataclasses.replace(cfg, tokenizer="/nowhere/tok"), None)
    with pytest.raises(InvalidRequest, match="packaged model"):
        check_packaged("my-own-tokenizer")


def test_inputs_are_text_or_token_ids() -> None:
    assert is_text("hi") and is_text(["a", "b"]) and not is_text([]) and not is_text([1, 2])
    assert not is_text(torch.tensor([[1, 2]])) and not is_text(["a", 1])


def test_batches_are_cut_padded_and_masked() -> None:
    ids, mask = encode_batch(Bytes(), ["ab", "abcd", "abcdefgh"], max_length=5, pad_id=None)
    assert ids.tolist() == [[100, 101, 0, 0, 0], [100, 101, 102, 103, 0], [100, 101, 102, 103, 104]]
    assert mask.tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert encode_prompt(Bytes(), "ab").tolist() == [[100, 101]]
    with pytest.raises(InvalidRequest, match="no tokens"):
        encode_prompt(Bytes(), "")
    with pytest.raises(InvalidRequest, match="at least one token"):
        encode_batch(Bytes(), ["a", ""], max_length=4, pad_id=0)


def test_a_generation_decodes_up_to_its_first_end_of_sequence_token_whole_or_streamed() -> None:
    text = "héllo ✓"
    tokens = Bytes().encode(text) + [1, 7, 1]  # 1: end of sequence, then whatever the model sampled after it
    assert decode_generation(Bytes(), torch.tensor([tokens]), eos=(1,)) == text
    stream = TextStream(Bytes(), eos=(1,))
    pieces = [stream.push(t) for t in tokens]
    assert "".join(pieces) == text and "\ufffd" not in "".join(pieces)
    assert pieces[1] == "" and pieces[2] == "é"  # the two bytes of é: nothing until the character is whole
    assert stream.flush() == ""
    cut = TextStream(Bytes(), eos=())
    assert [cut.push(t) for t in Bytes().encode("é")[:1]] == [""] and cut.flush() == "\ufffd"


def test_the_published_config_carries_the_tokenizer_name_only_when_there_is_one() -> None:
    named = dataclasses.replace(CFG, tokenizer="SmolLM2-135M-Instruct")
    assert config_from_json(config_to_json(named)) == named
    assert "tokenizer" not in config_to_json(CFG) and config_from_json(config_to_json(CFG)) == CFG
