"""Accuracy of an output against its float64 reference: one definition of each figure for every benchmark.

`bench model`, the sweep and the anchors (benchmarks/anchors/accuracy.py) all compute their accuracy figures here;
each names them in its own JSON. Outputs and references are tensors of one shape, compared in float64; a row is
the last dimension (one position's logits, one token's hidden state, one sentence's embedding).
"""

from __future__ import annotations

import torch


def _rows(x: torch.Tensor) -> torch.Tensor:
    """`x` in float64 as a matrix of rows (the last dimension)."""
    return x.double().reshape(-1, x.shape[-1])


def max_abs(x: torch.Tensor) -> float:
    """The largest absolute value (a reference's scale, against which an absolute error is read)."""
    return float(x.double().abs().max())


def max_abs_diff(got: torch.Tensor, want: torch.Tensor) -> float:
    """The largest absolute difference."""
    return float((got.double() - want.double()).abs().max())


def mean_abs_diff(got: torch.Tensor, want: torch.Tensor) -> float:
    """The mean absolute difference."""
    return float((got.double() - want.double()).abs().mean())


def min_row_cosine(got: torch.Tensor, want: torch.Tensor) -> float:
    """The worst row's cosine similarity (1.0: every row points the same way as the reference's)."""
    return float(torch.nn.functional.cosine_similarity(_rows(got), _rows(want), dim=-1).min())


def top1_agreement(got: torch.Tensor, want: torch.Tensor) -> float:
    """The share of rows whose largest entry (the greedy token, for logits) is the reference's."""
    return float((_rows(got).argmax(-1) == _rows(want).argmax(-1)).double().mean())
