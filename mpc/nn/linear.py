"""Linear layers and residuals on fixed-point shares.

`linear`: y = x @ W + b with secret W (in, out) and b (out,): local cross terms of the ring matmul (two int64
matmuls per party), one truncation (2 rounds; bytes: one truncation per output element). Several linears of the
same input (Q, K, V) are fused by `linear_many` into one matmul and one truncation call. `linear_public`: W public
(open models): local matmul, one truncation. Residuals are local additions.
Error: < 1 ulp of 2^-f per output from the truncation (plus the inputs' own error times |W|).
Range: |x @ W| * 2^(2f) < 2^62, i.e. |outputs| < 2^(62-2f) = 2^26 at f = 18. Follows ABY3's matmul + truncation.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .. import ring
from ..party import Party
from ..shares import AShare, cat
from ..approx import poly


def _matmul_term(x: AShare, w: AShare) -> torch.Tensor:
    """This party's 3-out-of-3 term of x @ w in the ring (broadcast over x's leading dims)."""
    return ring.matmul(x.lo, w.lo + w.hi) + ring.matmul(x.hi, w.lo)


def linear(party: Party, x: AShare, weight: AShare, bias: AShare | None = None) -> AShare:
    """x @ weight (+ bias): x (..., in), weight (in, out), bias (out,). 2 rounds."""
    if x.shape[-1] != weight.shape[0]:
        raise ValueError(f"linear: x has {x.shape[-1]} features, weight expects {weight.shape[0]}")
    y = poly.truncate_terms(party, [_matmul_term(x, weight)], party.fxp.frac_bits)[0]
    return y + bias if bias is not None else y


def linear_many(party: Party, x: AShare, weights: Sequence[AShare], biases: Sequence[AShare | None]
                ) -> list[AShare]:
    """Several linears of one input (e.g. Q, K, V) as one matmul and one truncation call. 2 rounds."""
    if len(weights) != len(biases):
        raise ValueError("linear_many needs one bias (or None) per weight")
    widths = [w.shape[1] for w in weights]
    fused = linear(party, x, cat(list(weights), dim=1))
    outs, start = [], 0
    for width, b in zip(widths, biases):
        y = fused[..., start : start + width]
        outs.append(y + b if b is not None else y)
        start += width
    return outs


def linear_public(party: Party, x: AShare, weight: torch.Tensor, bias: torch.Tensor | None = None) -> AShare:
    """x @ weight (+ bias) for a public real weight (in, out) and bias (out,): local matmul, one truncation."""
    w = party.fxp.encode(weight, x.device)
    y = poly.truncate_terms(party, [ring.matmul(x.lo, w)], party.fxp.frac_bits)[0]
    return y.add_public(party.fxp.encode(bias, x.device)) if bias is not None else y


def residual(x: AShare, y: AShare) -> AShare:
    """x + y (local)."""
    return x + y
