"""GeLU, SiLU and ReLU on fixed-point shares.

GeLU and SiLU share one recipe (`even_split`, parameters in the profile's `EvenSplit`): with a the cutoff,
  f(x) = 0 (x < -a),  0.5 x + p(v) with v = 2x^2/a^2 - 1 (|x| <= a),  x (x > a),
because f(x) - 0.5 x is even. Compared with PUMA's GeLU (breakpoints -4, -1.95, 3; a cubic and a degree-6
polynomial) this needs two breakpoints instead of three (comparisons dominate the cost) and one polynomial in x^2.
Steps:
  1. [x < -a], [x < a]: one comparison call (msb) on 2n elements.
  2. v at P = profile.poly_bits bits: x*x times the constant 2/a^2 (24 fractional bits), minus 1, one truncation.
  3. Powers of v (ceil(log2 ceil(k/2)) layers), then one final truncation of p(v) + 0.5x (0.5x folded in).
  4. [-a <= x < a] * (0.5x + p(v)) + [x >= a] * x, the bits being XORs of step 1's: one mul_bit call on 2n pairs
     (1 round, no truncation).
Domain: |x| + a < 2^(b - 1 - f) with b = profile.compare_bits (2^13 at b = 32, 2^21 at b = 40, f = 18); outside
[-a, a] the polynomial's garbage (the square overflows for |x| >= 2^25) is removed exactly by the selection.
Max error: the profile's EvenSplit.max_error (GeLU accurate 1.3e-4, lean 3.9e-4 (degree 6), fast 4.8e-3; SiLU
accurate 5.4e-4, fast and lean 8.7e-3) plus a few ulp of fixed point (up to ~10 ulp for SiLU accurate, whose
coefficients are larger). With profile.thrifty_trunc (lean) every truncation takes 3 rounds and ~25% fewer bytes.
Rounds: msb (1 + ceil(log2(b/2)): 5 at 32 bits, 6 at 40) + 2 + 2 L + 2 + 1, L = ceil(log2 ceil(k/2)) (k = 4: 1,
k = 6, 8: 2, k = 12: 3). Bytes per element per party: msb of 2 (~0.32 b each), (L + 2) truncations (~21.3
each, plus extra powers in wide layers), mul_bit of 2 (32). Measured at (128, 1536): GeLU accurate 15 rounds,
33 MB per party (169 B/el); fast 12 rounds, 23 MB (116 B/el).
"""

from __future__ import annotations

from ..approx import poly, segments
from ..approx.profile import ApproxProfile, EvenSplit
from ..party import Party
from ..protocols import select
from ..shares import AShare


def _inner(party: Party, x: AShare, spec: EvenSplit, bits: int, thrifty: bool = False) -> AShare:
    """0.5 x + p(2x^2/a^2 - 1) at f fractional bits (garbage for |x| > a, removed by the selection)."""
    f = party.fxp.frac_bits
    a = spec.cutoff
    g = 60 - 2 * f  # (2x^2/a^2) * 2^(2f + g) <= 2^61 on the domain
    v_term = poly.cross(x, x) * poly.encode(2.0 / (a * a), g) - poly.constant(party, 1 << (2 * f + g), x.lo)
    v = poly.truncate_terms(party, [v_term], 2 * f + g - bits, thrifty)[0]
    coef_bits = poly.coef_bits_for(bits, 2 * a)
    pw = poly.powers(party, v, spec.degree, bits, thrifty)
    scale = 2 * bits + coef_bits
    term = poly.poly_term(party, pw, spec.coeffs, bits, coef_bits) + poly.lifted(x, scale - f - 1)
    return poly.truncate_terms(party, [term], scale - f, thrifty)[0]


def even_split(party: Party, x: AShare, spec: EvenSplit, profile: ApproxProfile) -> AShare:
    """The piecewise approximation described in the module docstring, for the function `spec` approximates."""
    below_lo, below_hi = segments.below(party, x, [-spec.cutoff, spec.cutoff], profile)
    inner = _inner(party, x, spec, profile.poly_bits, profile.thrifty_trunc)
    # below_lo implies below_hi, so [-a <= x < a] = below_hi ^ below_lo and [x >= a] = NOT below_hi.
    return segments.select_bits(party, [(below_hi ^ below_lo, inner), (below_hi.xor_public(1), x)])


def gelu(party: Party, x: AShare, profile: ApproxProfile) -> AShare:
    """GeLU (erf form) on shares; error and cost in the module docstring."""
    return even_split(party, x, profile.gelu, profile)


def silu(party: Party, x: AShare, profile: ApproxProfile) -> AShare:
    """SiLU = x * sigmoid(x) on shares; error and cost in the module docstring."""
    return even_split(party, x, profile.silu, profile)


def relu(party: Party, x: AShare) -> AShare:
    """max(x, 0): the comparison protocols' ReLU."""
    return select.relu(party, x)
