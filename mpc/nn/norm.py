"""LayerNorm and RMSNorm on fixed-point shares: one reciprocal square root per row.

LayerNorm(x) = (x - mean) / sqrt(var + eps) * gamma + beta, over the last axis of size C:
  1. mean = sum(x) * (1/C) with 1/C encoded at 61 - f - 12 bits: one per-row truncation (|mean| < 2^12).
  2. d = x - mean (local). ONE truncation call makes both S = sum(d^2) (per row: the 3-out-of-3 squares are summed
     before truncating) and d * gamma (per element).
  3. r = sqrt(C) / sqrt(S + C eps) = 1 / sqrt(var + eps) by approx.rsqrt on the window [2^-f, 2^25) with the
     constant sqrt(C) folded into its rescaling (no extra product), output at 30 fractional bits.
  4. y = (d * gamma) * r + beta: one truncation (by 30) per element; |y| < 2^13.
RMSNorm(x) = x / sqrt(mean(x^2) + eps) * gamma: the same without step 1.
Domain: sum of squares S < 2^25 (var < 2^25 / C: 87000 at C = 384; rms < 240 at C = 576), |x| < 2^12 for the mean.
Max error: the rsqrt's relative error (accurate: ~2e-6, fast: ~8e-6) times |y| plus a few ulp (measured at
(128, 384) with row std 0.5 .. 300: 1.6e-5 accurate, 7.3e-5 fast); a constant row (S below 1 ulp) gives beta
plus up to about |gamma| + 0.11 (measured): the mean's stochastic rounding leaves a common 0/1-ulp offset in d,
seen in ~8% of such rows, which no eps below 1 ulp^2 can tell from a real variance. Rounds: 2 (mean) + 2 + rsqrt + 2. Bytes: two truncations per element plus per-row work (A2B,
prefix-OR, B2A of 43 bits, a few truncations). At (128, 384): 34 rounds (accurate) and 1.7 MB for the busiest party.
Follows PUMA's LayerNorm (Dong et al. 2023, Sec. 4.3).
gamma and beta are secret shares, or public ring tensors at f fractional bits (open models' weights in the clear):
the same steps and costs, with the products by gamma local (x_i gamma) and beta added to component x_0.
"""

from __future__ import annotations

import math

import torch

from ..approx import poly
from ..approx.profile import ApproxProfile
from ..approx.rsqrt import rsqrt
from ..party import Party
from ..shares import AShare, add

MEAN_BOUND_BITS = 12  # |mean| < 2^12
SUMSQ_HI = 25  # S = sum of squares < 2^25 (S * 2^(2f) stays below 2^61 at f = 18)
RSQRT_OUT_BITS = 30  # fractional bits of 1/std (small values keep their relative precision)


def _row_mean(party: Party, x: AShare) -> AShare:
    """mean over the last axis, keepdim; one truncation per row."""
    f, c = party.fxp.frac_bits, x.shape[-1]
    g = 61 - f - MEAN_BOUND_BITS
    term = poly.lifted(x.sum(-1, keepdim=True)) * poly.encode(1.0 / c, g)
    return poly.truncate_terms(party, [term], g)[0]


def _normalise(party: Party, d: AShare, gamma: AShare | torch.Tensor | None, profile: ApproxProfile, eps: float
               ) -> AShare:
    """d * gamma / sqrt(mean(d^2) + eps) over the last axis (gamma None: no scaling)."""
    f, c = party.fxp.frac_bits, d.shape[-1]
    sumsq = poly.cross(d, d).sum(-1, keepdim=True)  # (..., 1) 3-out-of-3 term at 2^(2f)
    if gamma is None:
        s = poly.truncate_terms(party, [sumsq], f)[0]
        dg = d
    else:
        s, dg = poly.truncate_terms(party, [sumsq, poly.cross(d, gamma)], f)
    s = s.add_public(poly.encode(c * eps, f))
    hi = min(SUMSQ_HI, 60 - 2 * f + 1)
    r = rsqrt(party, s, profile, lo=-f, hi=hi, scale=math.sqrt(c), out_bits=RSQRT_OUT_BITS)  # (..., 1)
    return poly.products(party, [(dg, r)], RSQRT_OUT_BITS)[0]


def layernorm(party: Party, x: AShare, gamma: AShare | torch.Tensor | None, beta: AShare | torch.Tensor | None,
              profile: ApproxProfile, *, eps: float = 1e-12) -> AShare:
    """LayerNorm over the last axis with gamma, beta (C,) secret or public (None: 1 and 0)."""
    d = x - _row_mean(party, x).expand(*x.shape)
    return add(_normalise(party, d, gamma, profile, eps), beta)


def rmsnorm(party: Party, x: AShare, gamma: AShare | torch.Tensor | None, profile: ApproxProfile, *,
            eps: float = 1e-6) -> AShare:
    """RMSNorm over the last axis with gamma (C,) secret or public (None: 1)."""
    return _normalise(party, x, gamma, profile, eps)
