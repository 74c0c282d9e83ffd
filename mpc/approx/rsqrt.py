"""scale / sqrt(x) for positive fixed-point shares: normalise by the highest set bit, polynomial, Newton, rescale.

Domain: x in [2^lo, 2^hi) (public window; x below 2^lo is treated as 2^lo's octave: bounded, wrong). LayerNorm
calls it on the row's sum of squared deviations with scale = sqrt(C), which gives 1/sqrt(variance).
Steps:
  1. One-hot h of the highest set bit j (see `normalise`); m_j = ceil((j - f + 1) / 2).
  2. s = x * 2^(-2 m_j) in [0.25, 1) at P = profile.poly_bits fractional bits: one product with the secret factor
     sum_j h_j 2^(61 - f - 2 m_j) (exact powers of two), one truncation.
  3. y = p(s - 0.625), the minimax polynomial of profile.rsqrt_poly_degree (max relative error 2.1e-3 for degree
     4, 6.5e-4 for degree 5; profile.RSQRT_POLYS) evaluated with `poly.evaluate` (2 ceil(log2 d) rounds).
  4. profile.rsqrt_newton_iters steps y <- 1.5 y - 0.5 (s y) y^2: two layers each ([y^2, s y], then the sum);
     relative error e -> 1.5 e^2 per step (degree 4 + 1 step: 6.7e-6).
  5. scale * 2^(-m_j) * y: one product with a secret factor sum_j h_j scale 2^(g - m_j), one truncation, landing
     at `out_bits` fractional bits (LayerNorm asks for 30 so that small 1/std keep their relative precision).
Max relative error: the polynomial's (or its Newton-squared) error plus a few 2^-P from fixed point; measured on
[2^-14, 2^24): 2.5e-6 (accurate: degree 5 + 1 step), 8.2e-6 (fast: degree 4 + 1 step). Absolute error from the
rescale factor's encoding is below 2^-g (g >= f for the windows used).
Rounds: normalisation + 2 + 2 ceil(log2 d) + 4 per Newton step + 2. Bytes: small per element; used per row.
Follows PUMA's rsqrt (Dong et al. 2023, Sec. 4.3).
"""

from __future__ import annotations

import math

from ..party import Party
from ..shares import AShare
from . import normalise, poly
from .profile import RSQRT_POLYS, ApproxProfile
from .reciprocal import window_bits

_CENTER = 0.625  # s - 0.625 in [-0.375, 0.375) for s in [0.25, 1)
_V_PER_T = 8.0 / 3.0  # the fits use v = (8s - 5)/3 = (8/3)(s - 0.625)


def _coeffs_in_t(degree: int) -> list[float]:
    """The profile polynomial rewritten in t = s - 0.625 (repeated IEEE products: identical on every party)."""
    coeffs, out, factor = RSQRT_POLYS[degree][0], [], 1.0
    for c in coeffs:
        out.append(c * factor)
        factor = factor * _V_PER_T
    return out


def _newton_step(party: Party, s: AShare, y: AShare, bits: int) -> AShare:
    """y <- 1.5 y - 0.5 s y^3 at `bits` fractional bits. 4 rounds."""
    y2, sy = poly.truncate_terms(party, [poly.cross(y, y), poly.cross(s, y)], bits)
    return poly.truncate_terms(party, [poly.lifted(y, bits) * 3 - poly.cross(sy, y2)], bits + 1)[0]


def _exponent(j: int, f: int) -> int:
    """m_j = ceil((j - f + 1) / 2): x * 2^(-2 m_j) lies in [0.25, 1) when x's highest ring bit is j."""
    return -((f - 1 - j) // 2)


def rsqrt(party: Party, x: AShare, profile: ApproxProfile, *, lo: int, hi: int, scale: float = 1.0,
          out_bits: int | None = None) -> AShare:
    """scale / sqrt(x) for x in [2^lo, 2^hi) real, with `out_bits` fractional bits (default f); see the docstring."""
    f, p = party.fxp.frac_bits, profile.poly_bits
    out_bits = f if out_bits is None else out_bits
    lo_bit, hi_bit = window_bits(party, lo, hi)
    js = range(lo_bit, hi_bit)
    ms = [_exponent(j, f) for j in js]
    if 61 - f - 2 * max(ms) < 0:
        raise ValueError(f"rsqrt window top 2^{hi} too large for f={f}")
    h = normalise.highest_bit(party, x, lo_bit, hi_bit)  # (*x.shape, W)
    to_unit = normalise.combine(h, [1 << (61 - f - 2 * m) for m in ms])  # x * this = s * 2^61
    s = poly.truncate_terms(party, [poly.cross(x, to_unit)], 61 - p)[0]
    t = s.add_public(-poly.encode(_CENTER, p))
    y = poly.evaluate_one(party, t, _coeffs_in_t(profile.rsqrt_poly_degree), in_bits=p, out_bits=p, bound=2.0)
    for _ in range(profile.rsqrt_newton_iters):
        y = _newton_step(party, s, y, p)
    factors = [scale * 2.0 ** -m for m in ms]
    g = 60 - p - math.ceil(math.log2(max(factors)))  # y <= 2: y * factor * 2^(p + g) < 2^61
    if not 0 < p + g - out_bits < 62:
        raise ValueError(f"out_bits={out_bits} does not fit scale={scale} and the window [2^{lo}, 2^{hi})")
    back = normalise.combine(h, [poly.encode(c, g) for c in factors])
    return poly.truncate_terms(party, [poly.cross(y, back)], p + g - out_bits)[0]
