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
     Paired (profile.exp_paired_squarings): two squarings per truncation. s in [0, 1] at PAIR_BITS = 15 (the base
     lands there directly; for odd n one plain squaring does), t = s^2 by a resharing (mul.mul: exact at 30 bits,
     1 round, 8 bytes per party), s^4 = t^2 at 60 bits < 2^62 truncated back to 15 bits (or to f at the end).
     Per pair: 3 rounds and ~28.7 bytes per party instead of 4 rounds and ~40. The 15-bit rounding (< 2^-15,
     unbiased) is amplified by up to 2^n: n = 4 adds up to ~4e-4 absolute error near x = 0, zero on average.
  4. exp(x) := 0 for x < clip: one comparison (on profile.compare_bits bits) and one bit-times-value product.
     Below clip, steps 1-3 give garbage (the base leaves [0, 1] and squarings overflow) that the exact 0 removes.
Domain: x <= 0 (x > 0 is not supported: the base exceeds 1 and squarings overflow); |x - clip| within the
comparison width (2^13 at compare_bits = 32, f = 18).
Max absolute error on [clip, 0] vs float64 e^x (approximation; fixed point adds < 2 ulp of 2^-f), 0 below clip
(true value < e^clip: 8.3e-7 at -14, 1.1e-7 at -16):
  PUMA (1.0,), n = 5: 8.5e-3; fast (degree 2, n = 4): 2.2e-4; accurate (degree 3, n = 4): 6.0e-6 (Taylor
  coefficients at the same cost: 1.0e-3 and 5.9e-5); lean (fast's base, paired squarings): ~6e-4 measured.
Rounds: 2 per truncation layer (degree 1: n, degree 2: n + 1, degree 3: n + 2 layers) + the clip (msb + 1);
paired: 3 per pair of squarings instead of 4 (lean: 14 rounds, 104 B/el per party vs fast's 16 and 127).
Bytes per element per party: ~21.3 per truncated element (degree 3's first layer truncates two) + the msb + 16.
"""

from __future__ import annotations

from typing import Sequence

from ..party import Party
from ..protocols import mul
from ..shares import AShare
from . import poly
from .profile import EXP_A2_BITS, ApproxProfile
from .segments import below, mask_by_bit

EXP_BITS = 30  # working precision of the squarings: values in [0, 1] square to at most 2^60
PAIR_BITS = 15  # paired squarings: s in [0, 1] at 15 bits, s^2 at 30 (reshared), s^4 at 60 < 2^62
_DEG2_Y_BITS = 24  # degree 2: y at 24 bits, so 2*24 + 13 = 61


def _scaled_input(party: Party, x: AShare, squarings: int, bits: int, thrifty: bool = False) -> AShare:
    """y = x / 2^n with `bits` fractional bits (exact shift when f + n <= bits, else one truncation)."""
    shift = bits - party.fxp.frac_bits - squarings
    if shift >= 0:
        return x.lshift(shift)
    return poly.truncate_terms(party, [poly.lifted(x)], -shift, thrifty)[0]


def _base(party: Party, x: AShare, coeffs: Sequence[float], squarings: int, out_bits: int = EXP_BITS,
          thrifty: bool = False) -> AShare:
    """b(x / 2^n) = 1 + sum_k a_k (x/2^n)^k at `out_bits` fractional bits. 0 to 2 truncation layers."""
    b = EXP_BITS
    if len(coeffs) == 1:
        if coeffs[0] == 1.0:
            return _scaled_input(party, x, squarings, out_bits, thrifty).add_public(1 << out_bits)
        y = _scaled_input(party, x, squarings, b, thrifty)
        term = poly.lifted(y) * poly.encode(coeffs[0], b) + poly.constant(party, 1 << (2 * b), y.lo)
        return poly.truncate_terms(party, [term], 2 * b - out_bits, thrifty)[0]
    if len(coeffs) == 2:
        yb, s = _DEG2_Y_BITS, EXP_A2_BITS
        y = _scaled_input(party, x, squarings, yb, thrifty)
        scale = 2 * yb + s
        term = poly.cross(y, y) * poly.encode(coeffs[1], s) + poly.lifted(y) * poly.encode(coeffs[0], yb + s)
        term = term + poly.constant(party, 1 << scale, y.lo)
        return poly.truncate_terms(party, [term], scale - out_bits, thrifty)[0]
    y = _scaled_input(party, x, squarings, b, thrifty)
    u_term = poly.lifted(y) * poly.encode(coeffs[2], b) + poly.constant(party, poly.encode(coeffs[1], 2 * b), y.lo)
    y2, u = poly.truncate_terms(party, [poly.cross(y, y), u_term], b, thrifty)
    term = poly.cross(y2, u) + poly.lifted(y) * poly.encode(coeffs[0], b) + poly.constant(party, 1 << (2 * b), y.lo)
    return poly.truncate_terms(party, [term], 2 * b - out_bits, thrifty)[0]


def _square(party: Party, s: AShare, bits: int, thrifty: bool = False) -> AShare:
    return poly.truncate_terms(party, [poly.cross(s, s)], bits, thrifty)[0]


def _paired_squarings(party: Party, x: AShare, base: Sequence[float], squarings: int, thrifty: bool = False
                      ) -> AShare:
    """b^(2^n) two squarings at a time: s^2 by a resharing (exact, 2 PAIR_BITS bits), s^4 by one truncation."""
    f = party.fxp.frac_bits
    p = PAIR_BITS
    if squarings % 2:  # one plain squaring first, landing at PAIR_BITS
        b = _base(party, x, base, squarings, thrifty=thrifty)
        s = poly.truncate_terms(party, [poly.cross(b, b)], 2 * EXP_BITS - p, thrifty)[0]
    else:
        s = _base(party, x, base, squarings, out_bits=p, thrifty=thrifty)
    for pair in range(squarings // 2):
        t = mul.mul(party, s, s)  # s^2 at 2p bits, no truncation (1 round, one ring element per party)
        last = pair == squarings // 2 - 1
        s = poly.truncate_terms(party, [poly.cross(t, t)], 4 * p - (f if last else p), thrifty)[0]
    return s


def exp_core(party: Party, x: AShare, *, base: Sequence[float], squarings: int, paired: bool = False,
             thrifty: bool = False) -> AShare:
    """e^x ~ b(x/2^n)^(2^n) with no clip; accurate for x in [-2^n, 0] (see the module docstring)."""
    f = party.fxp.frac_bits
    if f > EXP_BITS - 1:
        raise ValueError(f"exp needs frac_bits < {EXP_BITS}, got {f}")
    if paired and squarings >= 2:
        return _paired_squarings(party, x, base, squarings, thrifty)
    s = _base(party, x, base, squarings, thrifty=thrifty)
    if squarings == 0:
        return poly.truncate_terms(party, [poly.lifted(s)], EXP_BITS - f, thrifty)[0]
    for _ in range(squarings - 1):
        s = _square(party, s, EXP_BITS, thrifty)
    return _square(party, s, 2 * EXP_BITS - f, thrifty)


def exp_neg(party: Party, x: AShare, profile: ApproxProfile) -> AShare:
    """e^x for x <= 0 (exactly 0 below profile.exp_clip); error and cost in the module docstring."""
    clipped = below(party, x, [profile.exp_clip], profile)[0]  # 1 where x < clip
    y = exp_core(party, x, base=profile.exp_base, squarings=profile.exp_squarings,
                 paired=profile.exp_paired_squarings, thrifty=profile.thrifty_trunc)
    return mask_by_bit(party, clipped, y, keep_when=0)
