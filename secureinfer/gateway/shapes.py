"""The OpenAI response objects the gateway answers with: completions, chat completions, their stream chunks,
embeddings, each with `usage` and a `secureinfer` field saying which plan served it (mode, committee, strategy)."""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from secureinfer.client import ServedPlan

from .backend import Completed, Embedded


def plan_fields(plan: ServedPlan) -> dict[str, Any]:
    """Where and how a request ran, for the response's `secureinfer` field."""
    return {"mode": plan.mode, "committee": plan.committee_id, "nodes": list(plan.node_ids),
            "strategy": plan.strategy.name if plan.strategy is not None else None, "auto": plan.auto}


def usage(prompt_tokens: int, completion_tokens: int = 0) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


@dataclass(frozen=True)
class Reply:
    """What every object of one response shares: its id, creation time and model, and whether it is a chat."""

    model: str
    chat: bool
    return_token_ids: bool = False
    id: str = field(default_factory=lambda: secrets.token_hex(12))
    created: int = field(default_factory=lambda: int(time.time()))

    def _head(self, obj: str) -> dict[str, Any]:
        prefix = "chatcmpl-" if self.chat else "cmpl-"
        return {"id": prefix + self.id, "object": obj, "created": self.created, "model": self.model}

    def _choice(self, text: str | None, finish: str | None, *, delta: bool, role: bool = False) -> dict[str, Any]:
        if not self.chat:
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        body: dict[str, Any] = {}
        if role:
            body["role"] = "assistant"
        if text is not None:
            body["content"] = text
        return {"index": 0, ("delta" if delta else "message"): body, "logprobs": None, "finish_reason": finish}

    def completed(self, done: Completed) -> dict[str, Any]:
        """The whole answer of a request that did not stream."""
        choice = self._choice(done.text, done.finish_reason, delta=False, role=True)
        if self.return_token_ids:
            choice["token_ids"] = list(done.tokens)
        return {**self._head("chat.completion" if self.chat else "text_completion"), "choices": [choice],
                "usage": usage(done.prompt_tokens, len(done.tokens)), "secureinfer": plan_fields(done.plan)}

    def chunk(self, text: str | None, *, role: bool = False) -> dict[str, Any]:
        """A stream chunk with a new piece of text (the first chunk of a chat also says the role)."""
        return {**self._head(self._chunk_object), "choices": [self._choice(text, None, delta=True, role=role)]}

    def last_chunk(self, done: Completed) -> dict[str, Any]:
        """The stream chunk that ends the choice: its finish reason and the plan that served it."""
        choice = self._choice(None if self.chat else "", done.finish_reason, delta=True)
        if self.return_token_ids:
            choice["token_ids"] = list(done.tokens)
        return {**self._head(self._chunk_object), "choices": [choice], "secureinfer": plan_fields(done.plan)}

    def usage_chunk(self, done: Completed) -> dict[str, Any]:
        """The extra chunk `stream_options.include_usage` asks for: no choices, the usage."""
        return {**self._head(self._chunk_object), "choices": [],
                "usage": usage(done.prompt_tokens, len(done.tokens))}

    @property
    def _chunk_object(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"


def embeddings(model: str, done: Embedded, encoding_format: str) -> dict[str, Any]:
    """The answer of POST /v1/embeddings: one vector per input, as JSON numbers or base64 float32."""
    data = [{"object": "embedding", "index": i, "embedding": _vector(row, encoding_format)}
            for i, row in enumerate(done.vectors)]
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": done.prompt_tokens, "total_tokens": done.prompt_tokens},
            "secureinfer": plan_fields(done.plan)}


def _vector(row: torch.Tensor, encoding_format: str) -> list[float] | str:
    """Floats exactly as the SDK returned them, or base64 of little-endian float32 (what OpenAI clients decode)."""
    if encoding_format == "base64":
        return base64.b64encode(row.to(torch.float32).contiguous().numpy().astype("<f4").tobytes()).decode()
    return [float(x) for x in row.to(torch.float64).tolist()]
