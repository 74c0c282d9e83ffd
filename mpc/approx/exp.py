"""exp(x) for x <= 0 on fixed-point shares: a polynomial base for e^(x/2^n), n squarings, and a clip to 0.

Recipe (PUMA, Dong et al. 2023, Sec. 4.2, uses the base 1 + y and n = 5 at f = 18; here the base is a degree-k
weighted-minimax polynomial, profile.exp_base, and the squarings run at 30 fractional bits):
  1. y = x / 2^n by a local left shift (exact, no truncation): 30 fractional bits (degrees 1, 3) or 24 (degree 2).
  2. The base b = 1 + a_1 y + .. + a_k y^k at 30 bits:
     degree 1: local when a_1 = 1, else one truncation;
     degree 2: one truncation of cross(y, y) * (2^13 a_2) + a_1 y + 1 (a_2 is a multiple of 2^-13, so it is an
               exact integer factor; the scale 2^(2*24 + 13) = 2^61 leaves no room for more);
     degree 3: layer one makes y^2 and u = a_2 + a_3 y (one truncation call), layer two b = 1 + a_1 y + y^2 u.
  3. n squarings at 30 bits (values stay in [0, 1], so products stay below 2^60); the last one truncates by
     60 - f and lands at f bits. Rounding after the shift is ~2^-30 per step, doubled per squaring: negligible.
  4. exp(x) := 0 for x < clip: one comparison (on profile.compare_bits bits) and one bit-times-value product.
     Below clip, steps 1-3 give garbage (the base leaves [0, 1] and squarings overflow) that the exact 0 removes.
Domain: x <= 0 (x > 0 is not supported: the base exceeds 1 and squarings overflow); |x - clip| within the
comparison width (2^13 at compare_bits = 32, f = 18).
Max absolute error on [clip, 0] vs float64 e^x (approximation; fixed point adds < 2 ulp of 2^-f), 0 below clip
(true value < e^clip: 8.3e-7 at -14, 1.1e-7 at -16):
  PUMA (1.0,), n = 5: 8.5e-3; fast (degree 2, n = 4): 2.2e-4; accurate (degree 3, n = 4): 6.0e-6 (Taylor
  coefficients at the same cost: 1.0e-3 and 5.9e-5).
Rounds: 2 per truncation layer (degree 1: n, degree 2: n + 1, degree 3: n + 2 layers) + the clip (msb + 1).
Bytes per element per party: ~21.3 per truncated element (degree 3's first layer truncates two) + the msb + 16.
"""

from __future__ import annotations

from typing import Sequence

from ..party import Party
from ..shares import AShare
from . import poly
from .profile import EXP_A2_BITS, ApproxProfile
from .segments import below, mask_by_bit

EXP_BITS = 30  # working precision of the squarings: values in [0, 1] square to at most 2^60
_DEG2_Y_BITS = 24  # degree 2: y at 24 bits, so 2*24 + 13 = 61


def _scaled_input(party: Party, x: AShare, squarings: int, bits: int) -> AShare:
    """y = x / 2^n with `bits` fractional bits (exact shift when f + n <= bits, else one truncation)."""
    shift = bits - party.fxp.frac_bits - squarings
    if shift >= 0:
        return x.lshift(shift)
    return poly.truncate_terms(party, [poly.lifted(x)], -shift)[0]


def _base(party: Party, x: AShare, coeffs: Sequence[float], squarings: int) -> AShare:
    """b(x / 2^n) = 1 + sum_k a_k (x/2^n)^k at EXP_BITS fractional bits. 0 to 2 truncation layers."""
    b = EXP_BITS
    if len(coeffs) == 1:
        y = _scaled_input(party, x, squarings, b)
        if coeffs[0] == 1.0:
            return y.add_public(1 << b)
        term = poly.lifted(y) * poly.encode(coeffs[0], b) + poly.constant(party, 1 << (2 * b), y.lo)
        return poly.truncate_terms(party, [term], b)[0]
    if len(coeffs) == 2:
        yb, s = _DEG2_Y_BITS, EXP_A2_BITS
        y = _scaled_input(party, x, squarings, yb)
        scale = 2 * yb + s
        term = poly.cross(y, y) * poly.encode(coeffs[1], s) + poly.lifted(y) * poly.encode(coeffs[0], yb + s)
        term = term + poly.constant(party, 1 << scale, y.lo)
        return poly.truncate_terms(party, [term], scale - b)[0]
    y = _scaled_input(party, x, squarings, b)
    u_term = poly.lifted(y) * poly.encode(coeffs[2], b) + poly.constant(party, poly.encode(coeffs[1], 2 * b), y.lo)
    y2, u = poly.truncate_terms(party, [poly.cross(y, y), u_term], b)
    term = poly.cross(y2, u) + poly.lifted(y) * poly.encode(coeffs[0], b) + poly.constant(party, 1 << (2 * b), y.lo)
    return poly.truncate_terms(party, [term], b)[0]


def _square(party: Party, s: AShare, bits: int) -> AShare:
    return poly.truncate_terms(party, [poly.cross(s, s)], bits)[0]


def exp_core(party: Party, x: AShare, *, base: Sequence[float], squarings: int) -> AShare:
    """e^x ~ b(x/2^n)^(2^n) with no clip; accurate for x in [-2^n, 0] (see the module docstring)."""
    f = party.fxp.frac_bits
    if f > EXP_BITS - 1:
        raise ValueError(f"exp needs frac_bits < {EXP_BITS}, got {f}")
    s = _base(party, x, base, squarings)
    if squarings == 0:
        return poly.truncate_terms(party, [poly.lifted(s)], EXP_BITS - f)[0]
    for _ in range(squarings - 1):
        s = _square(party, s, EXP_BITS)
    return _square(party, s, 2 * EXP_BITS - f)


def exp_neg(party: Party, x: AShare, profile: ApproxProfile) -> AShare:
    """e^x for x <= 0 (exactly 0 below profile.exp_clip); error and cost in the module docstring."""
    clipped = below(party, x, [profile.exp_clip], profile)[0]  # 1 where x < clip
    y = exp_core(party, x, base=profile.exp_base, squarings=profile.exp_squarings)
    return mask_by_bit(party, clipped, y, keep_when=0)
