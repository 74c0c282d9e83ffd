"""Text at the client: which tokenizer encodes a request's text, encoding prompts and batches, and decoding what a
generation sampled (whole, or piece by piece as a stream).

The tokenizer is, first, the request's `tokenizer=`: a packaged model's name (secureinfer.models.checkpoint's
PACKAGED_MODELS), a local Hugging Face directory or .gguf file, or an object with `encode(text) -> list[int]` and
`decode(ids) -> str` (a Hugging Face tokenizer has both); else the one the owner named when publishing
(`ModelOwner.publish(..., tokenizer="SmolLM2-135M-Instruct")`, carried in the model's public config). Nothing
downloads: a packaged tokenizer loads from its installed package, a local one from disk; each loads once.

    tok = tokenizer_for("smollm2", cfg, None)          # InvalidRequest, saying how to supply one, if none is known
    ids = encode_prompt(tok, "Hello")                  # (1, T)
    pieces = TextStream(tok, cfg.eos_token_ids)        # pieces.push(token) -> the new text ("" while incomplete)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, Union, runtime_checkable

import torch

from secureinfer.models.checkpoint import PACKAGED_MODELS, load_tokenizer, packaged_checkpoint
from secureinfer.models.config import CheckpointError, ModelConfig

from .errors import InvalidRequest


@runtime_checkable
class Tokenizer(Protocol):
    """What the SDK needs of a tokenizer (Hugging Face tokenizers have it)."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


TokenizerSource = Union[str, Path, Tokenizer]  # a packaged model's name, a local path, or a tokenizer


def is_text(inputs: Any) -> bool:
    """Whether `inputs` is text (a string, or a non-empty list of strings) rather than token ids."""
    if isinstance(inputs, str):
        return True
    return isinstance(inputs, (list, tuple)) and bool(inputs) and all(isinstance(t, str) for t in inputs)


def check_packaged(name: str) -> None:
    """InvalidRequest unless `name` is a packaged model, the only tokenizer a published config may name (a client
    cannot see the owner's disk)."""
    if name not in PACKAGED_MODELS:
        raise InvalidRequest(f"tokenizer must name a packaged model ({', '.join(PACKAGED_MODELS)}), got {name!r}; "
                             f"clients with another tokenizer pass it per request (tokenizer=)")


def tokenizer_for(model_id: str, cfg: ModelConfig, given: TokenizerSource | None) -> Tokenizer:
    """The tokenizer for text requests to `model_id`: `given`, else the one its published config names."""
    source: TokenizerSource | None = given if given is not None else (cfg.tokenizer or None)
    if source is None:
        raise InvalidRequest(
            f"no tokenizer is known for {model_id!r} (its owner published it without one), so text cannot be encoded "
            f"here: pass token ids, or tokenizer= (a packaged model: {', '.join(PACKAGED_MODELS)}; a local Hugging "
            f"Face directory or .gguf file; or a tokenizer object), or have the owner publish it with "
            f"ModelOwner.publish(..., tokenizer=...)")
    if not isinstance(source, (str, Path)):
        if not isinstance(source, Tokenizer):
            raise InvalidRequest(f"tokenizer must be a name, a path or an object with encode() and decode(); "
                                 f"got {type(source).__name__}")
        return source
    try:
        return _load(str(source))
    except CheckpointError as exc:
        raise InvalidRequest(f"cannot load the tokenizer {str(source)!r} for {model_id!r}: {exc}") from exc


@functools.lru_cache(maxsize=8)
def _load(source: str) -> Tokenizer:
    """A packaged model's tokenizer by name, else the tokenizer of a local directory or .gguf file (loaded once)."""
    return load_tokenizer(packaged_checkpoint(source) if source in PACKAGED_MODELS else Path(source))


def encode_prompt(tokenizer: Tokenizer, text: str) -> torch.Tensor:
    """One prompt's token ids (1, T)."""
    ids = list(tokenizer.encode(text))
    if not ids:
        raise InvalidRequest(f"the text {text[:40]!r} encodes to no tokens")
    return torch.tensor([ids], dtype=torch.int64)


def encode_batch(tokenizer: Tokenizer, texts: Sequence[str], max_length: int, pad_id: int | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, T) of `texts`, each cut to `max_length` tokens and padded on the right with `pad_id` (None: 0),
    and the attention mask (1 on real tokens)."""
    if max_length < 1:
        raise InvalidRequest(f"max_length must be >= 1, got {max_length}")
    rows = [list(tokenizer.encode(t))[:max_length] for t in texts]
    if not all(rows):
        raise InvalidRequest("every text must encode to at least one token")
    width = max(len(r) for r in rows)
    pad = pad_id if pad_id is not None else 0
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.int64)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.int64)
    return ids, mask


def until_eos(tokens: Sequence[int], eos: Sequence[int]) -> list[int]:
    """The tokens before the first end-of-sequence token."""
    out = []
    for token in tokens:
        if token in eos:
            break
        out.append(int(token))
    return out


def decode_generation(tokenizer: Tokenizer, tokens: torch.Tensor, eos: Sequence[int]) -> str:
    """The text of a one-prompt generation's new tokens (1, n), up to the first end-of-sequence token."""
    return tokenizer.decode(until_eos(tokens[0].tolist(), eos))


class TextStream:
    """Decodes a one-prompt generation token by token: each `push` returns the text the new token completes (""
    while a character is still incomplete, and after the end-of-sequence token)."""

    def __init__(self, tokenizer: Tokenizer, eos: Sequence[int]) -> None:
        self.tokenizer, self.eos = tokenizer, tuple(eos)
        self.ids: list[int] = []
        self.shown = ""
        self.ended = False

    def push(self, token: int) -> str:
        if self.ended or token in self.eos:
            self.ended = True
            return ""
        self.ids.append(int(token))
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):  # a multi-byte character split across tokens: wait for the rest
            return ""
        piece, self.shown = text[len(self.shown):], text
        return piece

    def flush(self) -> str:
        """Whatever was held back at the end (an incomplete character, shown as the replacement character)."""
        text = self.tokenizer.decode(self.ids) if self.ids else ""
        piece, self.shown = text[len(self.shown):], text
        return piece
