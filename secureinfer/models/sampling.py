"""Client-side next-token choice: greedy, temperature, top-k and top-p (nucleus) sampling on opened logits.

Runs at the client only, on logits that only the client reconstructs. Sampling randomness comes from a generator
seeded by the operating system's CSPRNG unless the caller passes a seed (for reproducible runs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingConfig:
    """How the client picks the next token; temperature 0 means greedy."""

    temperature: float = 0.0
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0  # 1.0: no nucleus cut
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def generator(self) -> torch.Generator:
        seed = self.seed if self.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
        return torch.Generator().manual_seed(seed)


def next_token(logits: torch.Tensor, config: SamplingConfig, generator: torch.Generator | None = None) -> int:
    """Pick one token id from a (vocab,) logits vector."""
    if logits.dim() != 1:
        raise ValueError(f"expected (vocab,) logits, got shape {tuple(logits.shape)}")
    logits = logits.to(torch.float64)
    if config.temperature == 0.0:
        return int(torch.argmax(logits))
    scores = logits / config.temperature
    if config.top_k:
        kth = torch.topk(scores, min(config.top_k, scores.numel())).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if config.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        drop = cumulative - sorted_probs >= config.top_p  # keep the smallest prefix reaching top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    probs = probs / probs.sum()
    return int(torch.multinomial(probs, 1, generator=generator or config.generator()))
