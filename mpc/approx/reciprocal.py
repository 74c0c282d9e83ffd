"""1/x for positive fixed-point shares: highest-bit normalisation, a linear start, Newton steps, rescaling.

Domain: x in [2^lo, 2^hi) (public window chosen by the caller; x below 2^lo is treated as 2^lo's octave, so the
result is then bounded but wrong). Softmax denominators use [0, ceil(log2(T + 1))); the widest window is
[-f, 61 - 2f) minus a few bits.
Steps:
  1. One-hot h of the highest set bit j (see `normalise`).
  2. s = x * 2^(f - j - 1) in [0.5, 1) at F fractional bits: one product with the secret factor
     sum_j h_j 2^(60 - j) (exact powers of two), one truncation.
  3. y0 = 2.928 - 2s (local; |1 - s y0| <= 0.072), e = 1 - s y0 (one truncation), then k steps
     y <- y (1 + e), e <- e^2, both products of a step in one truncation call: y_k = (1 - e^(2^k)) / s,
     the Newton iteration y <- y (2 - s y) rearranged so each step is one layer instead of two.
  4. 1/x = y * 2^(f - j - 1): one product with sum_j h_j 2^(g + f - j - 1) and one truncation, landing at
     `out_bits` fractional bits (callers that multiply by the result again ask for ~30 to keep small 1/x precise).
Max relative error: 0.072^(2^k) (k=2: 2.7e-5, k=3: 7e-10) plus fixed point (~2^-F relative, plus 2^-g absolute
from the factor encoding, g >= f): relative error below 3e-5 (k=2) and ~2 ulp (k=3) in the tests.
Rounds: A2B + prefix-OR + B2A (normalise) + 2 (step 2) + 2 (e) + 2k (steps) + 2 (rescale).
Bytes: per element of x, the normalisation plus 2k + 3 truncations; callers apply it per row.
Follows PUMA (Dong et al. 2023, Sec. 4.3) and CrypTen's Newton reciprocal with the e-squaring rearrangement.
"""

from __future__ import annotations

from ..party import Party
from ..shares import AShare
from . import normalise, poly
from .profile import ApproxProfile

RECIP_BITS = 28  # fractional bits of the Newton iteration (values below 4)
_START = 2.928203230275509  # -4 + sqrt(48): equioscillating linear start 1/s ~ a - 2s on [0.5, 1]


def window_bits(party: Party, lo: int, hi: int) -> tuple[int, int]:
    """Ring-bit window [f + lo, f + hi) for real values in [2^lo, 2^hi), checked."""
    f = party.fxp.frac_bits
    if not (-f <= lo < hi and f + hi <= 60):
        raise ValueError(f"window [2^{lo}, 2^{hi}) does not fit f={f} (need -f <= lo < hi <= 60 - f)")
    return f + lo, f + hi


def newton_reciprocal(party: Party, s: AShare, iters: int, bits: int) -> AShare:
    """1/s for s in [0.5, 1) with `bits` fractional bits (input and output). 2 (iters + 1) rounds."""
    one = 1 << bits
    y = (-s.lshift(1)).add_public(poly.encode(_START, bits))
    e_term = poly.constant(party, one << bits, s.lo) - poly.cross(s, y)
    e = poly.truncate_terms(party, [e_term], bits)[0]
    for step in range(iters):
        y_term = poly.cross(y, e) + poly.lifted(y, bits)
        if step == iters - 1:
            y = poly.truncate_terms(party, [y_term], bits)[0]
        else:
            y, e = poly.truncate_terms(party, [y_term, poly.cross(e, e)], bits)
    return y


def reciprocal(party: Party, x: AShare, profile: ApproxProfile, *, lo: int, hi: int, out_bits: int | None = None
               ) -> AShare:
    """1/x for x in [2^lo, 2^hi) real, with `out_bits` fractional bits (default f); see the module docstring."""
    f = party.fxp.frac_bits
    out_bits = f if out_bits is None else out_bits
    lo_bit, hi_bit = window_bits(party, lo, hi)
    F = min(RECIP_BITS, max(f, 61 + lo - hi))
    h = normalise.highest_bit(party, x, lo_bit, hi_bit)  # (*x.shape, W)
    js = range(lo_bit, hi_bit)
    to_unit = normalise.combine(h, [1 << (60 - j) for j in js])  # x * this in [2^60, 2^61)
    s = poly.truncate_terms(party, [poly.cross(x, to_unit)], 61 - F)[0]
    y = newton_reciprocal(party, s, profile.recip_newton_iters, F)
    g = 61 - F + lo
    if not 0 < F + g - out_bits < 62 or out_bits - lo > 61:
        raise ValueError(f"out_bits={out_bits} does not fit the window [2^{lo}, 2^{hi})")
    back = normalise.combine(h, [poly.encode(2.0 ** (f - j - 1), g) for j in js])
    return poly.truncate_terms(party, [poly.cross(y, back)], F + g - out_bits)[0]
