"""Accuracy of a run against the float64 plaintext reference of its case (computed once per case)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

from .. import metrics
from .grid import Case
from .models import load_model


@dataclass
class Reference:
    """The float64 plaintext answer of a case: greedy tokens and per-step last logits, or the embedding."""

    tokens: torch.Tensor | None  # (B, n)
    logits: torch.Tensor | None  # (n, B, V)
    embedding: torch.Tensor | None  # (B, C)


def _reference_logits(cfg: Any, params: dict, prompt: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """float64 last-position logits of each step, teacher-forced on `tokens` (B, n): (n, B, V)."""
    from secureinfer.plaintext import reference as plaintext

    forward = plaintext.causal_lm_forward(cfg)
    cache = plaintext.KVCache.empty(cfg.n_layers)
    out = [forward(cfg, params, prompt, cache)[:, -1]]
    for i in range(tokens.shape[1] - 1):
        out.append(forward(cfg, params, tokens[:, i:i + 1], cache)[:, -1])
    return torch.stack(out)


@functools.lru_cache(maxsize=8)
def reference(case: Case) -> Reference:
    """The float64 plaintext answer of `case` (cached: one per case, however many strategies run it)."""
    from secureinfer.plaintext import reference as plaintext

    cfg, params = load_model(case.model)
    ids = case.inputs()
    if case.task == "embed":
        return Reference(None, None, plaintext.sentence_embedding(cfg, params, ids, torch.ones_like(ids)))
    tokens = plaintext.greedy_generate(cfg, params, ids, case.gen_tokens, eos_token_ids=())
    return Reference(tokens, _reference_logits(cfg, params, ids, tokens), None)


def accuracy_figures(case: Case, tokens: torch.Tensor | None, logits: torch.Tensor | None,
                     embedding: torch.Tensor | None) -> dict[str, Any]:
    """A run's accuracy columns: max |error| and worst row cosine against the case's float64 reference (teacher-
    forced on the run's own tokens where they differ from the reference's), and whether the tokens are equal."""
    ref = reference(case)
    if case.task == "embed":
        got, want = embedding.double().cpu(), ref.embedding
        equal = None
    else:
        tokens = tokens.cpu()
        equal = bool(tokens.shape == ref.tokens.shape and torch.equal(tokens, ref.tokens))
        if logits is None:  # the engine gives tokens only (speculation, batching worker)
            return {"max_abs_err": None, "min_cosine": None, "tokens_equal": equal}
        if equal:
            want = ref.logits
        else:
            cfg, params = load_model(case.model)
            want = _reference_logits(cfg, params, case.inputs(), tokens)
        got = logits.double().cpu()
    return {"max_abs_err": metrics.max_abs_diff(got, want), "min_cosine": metrics.min_row_cosine(got, want),
            "tokens_equal": equal}
