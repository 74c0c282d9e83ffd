"""A generation that survives its committee: what the client has sampled so far is kept, and a later attempt on
another committee continues after it instead of starting over.

    resumable = Resumable(prompt, max_new_tokens, sampling, on_token)
    value = failover([...attempts that run resumable.program...], none_left=...)
    generation = resumable.result()

The client already holds every token it sampled and the logits it sampled each from (it reconstructed them), so
resuming reveals nothing new to anyone: the next committee prefills the prompt followed by the tokens sampled so far
(secret shares, like any prompt) and decodes the rest. Tokens already handed to `on_token` are never handed out
again, and rows of a batch that had reached an end-of-sequence token keep repeating it. A greedy generation resumed
this way gives the tokens an uninterrupted one would (up to the fixed-point noise of a different committee's
randomness); a sampled one continues with a fresh draw of its sampling generator (the same one for a given seed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from secureinfer.models.config import ModelConfig
from secureinfer.models.sampling import SamplingConfig
from secureinfer.mpc.comm import Channel
from secureinfer.mpc.models import serving

OnToken = Callable[[torch.Tensor], None]


class _Recording:
    """A TokenIO that keeps the last output it received (the logits each sampled token was drawn from)."""

    def __init__(self, io: serving.TokenIO) -> None:
        self._io = io
        self.last: torch.Tensor | None = None  # (B, V): the last position of the latest output

    def receive_output(self, channel: Channel, config: Any) -> torch.Tensor:
        out = self._io.receive_output(channel, config)
        self.last = out[:, -1]
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._io, name)


class Resumable:
    """One generation's progress across attempts: the tokens and logits sampled so far, and which rows ended."""

    def __init__(self, prompt: torch.Tensor, max_new_tokens: int, sampling: SamplingConfig,
                 on_token: OnToken | None = None) -> None:
        self.prompt = prompt  # (B, T)
        self.max_new_tokens = max_new_tokens
        self.sampling = sampling
        self.on_token = on_token
        self.tokens: list[torch.Tensor] = []  # (B,) per step, across attempts
        self.logits: list[torch.Tensor] = []  # (B, V) per step
        self.done = torch.zeros(prompt.shape[0], dtype=torch.bool)  # rows that sampled an end-of-sequence token
        self.attempts = 0

    @property
    def emitted(self) -> int:
        """Tokens handed out so far (per row)."""
        return len(self.tokens)

    def finished(self) -> bool:
        return self.emitted >= self.max_new_tokens or bool(self.done.all())

    def program(self, channel: Channel, cfg: ModelConfig, io: serving.TokenIO) -> tuple[serving.Generation, Any]:
        """Client side of one attempt: prefill the prompt and what was sampled so far, decode the rest."""
        self.attempts += 1
        if self.finished():  # an earlier attempt failed after its last token: nothing is left to compute
            serving.wait_ready(channel, io)
            serving.stop(channel, io)
            return self.result(), []
        recording = _Recording(io)
        eos = torch.tensor(cfg.eos_token_ids, dtype=torch.int64)
        prefix = torch.cat([self.prompt, torch.stack(self.tokens, dim=1)], dim=1) if self.tokens else self.prompt

        def seen(_: int, token: torch.Tensor) -> None:
            self._take(token, recording.last, eos)

        _, steps = serving.client_generate_many(channel, cfg, io.engine(), [prefix],
                                                self.max_new_tokens - self.emitted, self.sampling, eos, seen,
                                                recording)  # type: ignore[arg-type] - a TokenIO by duck typing
        return self.result(), steps

    def _take(self, token: torch.Tensor, logits: torch.Tensor | None, eos: torch.Tensor) -> None:
        """Keep one sampled step (rows that have ended keep repeating their last token) and hand it out."""
        if logits is None:
            raise RuntimeError("a token was sampled before any output arrived")
        if self.tokens:
            token = torch.where(self.done, self.tokens[-1], token)
        self.tokens.append(token)
        self.logits.append(logits)
        self.done |= torch.isin(token, eos)
        if self.on_token is not None:
            self.on_token(token)

    def result(self) -> serving.Generation:
        """The generation so far: (B, n) tokens and the (n, B, V) logits they were sampled from."""
        if not self.tokens:
            raise RuntimeError("no token was generated")
        return serving.Generation(torch.stack(self.tokens, dim=1), torch.stack(self.logits))
