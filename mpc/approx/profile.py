"""Approximation profiles: every knob of the secure nonlinearities in one frozen, explicitly passed config.

A profile is an executable strategy (the selector picks one per request), never a label: it fixes the exp recipe,
the Newton and polynomial degrees of reciprocal and rsqrt, the GeLU/SiLU polynomials, and the comparison width.
All parties of a session must use the *same* profile object: the polynomial coefficients below are literal floats,
so every party encodes bit-identical public constants (a coefficient that differed in its last bit between parties
would multiply each party's uniformly random share differently and destroy the result).

GeLU and SiLU use one shape ("even split", this engine's variant of the PUMA recipe with two breakpoints instead of
three): f(x) = 0.5 x + g(x) where g(x) = f(x) - 0.5 x is even (0.5 x erf(x/sqrt 2) for GeLU, 0.5 x tanh(x/2) for
SiLU). On [-a, a], g is a polynomial p(v) in v = 2x^2/a^2 - 1 in [-1, 1]; below -a the output is 0, above a it is x.
Coefficients: near-minimax fits in the Chebyshev basis (iteratively reweighted least squares on Chebyshev nodes,
converted to monomials in v), made with numpy 2.4 against torch float64 GeLU (erf form) and SiLU. The stated errors
are the fits' max |approx - f| over all reals (the tails included), before fixed-point effects.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class EvenSplit:
    """f(x) = 0 (x < -a), x (x > a), 0.5 x + p(2x^2/a^2 - 1) on [-a, a]; p given by monomial coefficients in v."""

    cutoff: float  # a
    coeffs: tuple[float, ...]  # p_0 .. p_k in v
    max_error: float  # max |approx - f| over the reals, plaintext float64 (the fit plus the tails)

    def __post_init__(self) -> None:
        if self.cutoff <= 0:
            raise ValueError(f"cutoff must be > 0, got {self.cutoff}")
        if len(self.coeffs) < 2:
            raise ValueError("the polynomial needs degree >= 1")

    @property
    def degree(self) -> int:
        return len(self.coeffs) - 1


@dataclass(frozen=True)
class ApproxProfile:
    """Knobs of every approximation; see each field. The built-in profiles below derive from ACCURATE with
    `dataclasses.replace`; make new ones the same way."""

    name: str
    # exp(x), x <= 0: e^(x/2^n) ~ 1 + a_1 y + ... + a_k y^k (y = x/2^n; `exp_base` = (a_1, .., a_k), k <= 3;
    # PUMA's recipe is (1.0,) with n = 5), then n squarings; exp(x) := 0 for x < exp_clip (one comparison).
    exp_base: tuple[float, ...]
    exp_squarings: int
    exp_clip: float
    # 1/x: normalise into [0.5, 1) by the highest set bit, linear start, `recip_newton_iters` Newton steps.
    recip_newton_iters: int
    # 1/sqrt(x): normalise into [0.25, 1) by the highest set bit, minimax polynomial of `rsqrt_poly_degree`
    # (a degree with coefficients in RSQRT_POLYS), then `rsqrt_newton_iters` Newton steps.
    rsqrt_poly_degree: int
    rsqrt_newton_iters: int
    gelu: EvenSplit
    silu: EvenSplit
    # Fractional bits of the powers inside polynomial evaluation (values in [-1, 1]); more bits: finer powers,
    # coarser coefficients (they share the 62-bit headroom of one truncation).
    poly_bits: int = 20
    # Comparisons (GeLU/SiLU breakpoints, exp clip) look at this many low bits of x - c: exact when |x - c| is below
    # 2^(compare_bits - 1) ring units (2^(compare_bits - 1 - f) real). None: the full 64-bit ring.
    compare_bits: int | None = None
    # exp squarings two at a time (approx.exp): s at 15 bits, s^2 by a resharing (no truncation), s^4 by one
    # truncation; saves ~1/3 of exp's bytes and rounds, adds up to ~2^-15 * 2^n relative stochastic rounding error.
    exp_paired_squarings: bool = False
    # exp and GeLU/SiLU truncate with trunc's thrifty variant: 3 rounds instead of 2 per truncation, ~25% fewer
    # bytes (44 instead of 59 per element at 18 bits, over the three parties).
    thrifty_trunc: bool = False

    def __post_init__(self) -> None:
        if len(self.exp_base) not in (1, 2, 3):
            raise ValueError(f"exp_base must hold 1, 2 or 3 coefficients, got {len(self.exp_base)}")
        scaled_a2 = self.exp_base[1] * (1 << EXP_A2_BITS) if len(self.exp_base) == 2 else 0.0
        if scaled_a2 != round(scaled_a2):
            raise ValueError(f"a degree-2 exp base needs a_2 to be a multiple of 2^-{EXP_A2_BITS}")
        if not 0 <= self.exp_squarings <= 12:
            raise ValueError(f"exp_squarings must be in [0, 12], got {self.exp_squarings}")
        if self.exp_clip >= 0:
            raise ValueError(f"exp_clip must be negative, got {self.exp_clip}")
        if self.recip_newton_iters < 1:
            raise ValueError("recip_newton_iters must be >= 1")
        if self.rsqrt_poly_degree not in RSQRT_POLYS:
            raise ValueError(f"rsqrt_poly_degree must be one of {sorted(RSQRT_POLYS)}")
        if self.rsqrt_newton_iters < 0:
            raise ValueError("rsqrt_newton_iters must be >= 0")
        if not 8 <= self.poly_bits <= 26:
            raise ValueError(f"poly_bits must be in [8, 26], got {self.poly_bits}")
        if self.compare_bits is not None and not 8 <= self.compare_bits <= 64:
            raise ValueError(f"compare_bits must be in [8, 64] or None, got {self.compare_bits}")


EXP_A2_BITS = 13  # a degree-2 exp base's a_2 is a multiple of 2^-13 (it is applied as an integer, see approx.exp)

# exp bases: weighted-minimax fits of 1 + a_1 y + .. + a_k y^k to e^y that minimise max |b(x/2^n)^(2^n) - e^x| over
# x in [clip, 0] (weight 2^n e^((2^n - 1) y), iteratively reweighted least squares; a_0 = 1 keeps exp(0) = 1).
# Compared with Taylor coefficients at the same cost they are 5-10x more accurate and nearly unbiased.
EXP_BASE_2_N4 = (0.9983870077404935, 3782 / 8192)  # n = 4, clip -14: max error 2.20e-4 (Taylor: 1.02e-3)
EXP_BASE_3_N4 = (0.9999405181880578, 0.49787558336914056, 0.1485722287027576)  # n = 4, clip -16: 6.05e-6
TAYLOR_PUMA = (1.0,)  # PUMA: 1 + x/32, n = 5: max error 8.5e-3 on [-14, 0]

# 1/sqrt(s) on s in [0.25, 1] as a polynomial in v = (8s - 5)/3 in [-1, 1]; max relative error per degree.
RSQRT_POLYS: dict[int, tuple[tuple[float, ...], float]] = {
    4: ((1.2656269471868884, -0.36697269599836224, 0.15808038661569745, -0.12985071972373746,
         0.07523379085684098), 2.12e-3),
    5: ((1.2656996458475043, -0.3810426874426535, 0.157462717575854, -0.07339670859319472,
         0.07586517542609571, -0.04523644596461699), 6.49e-4),
}

GELU_FAST = EvenSplit(
    cutoff=3.5,
    coeffs=(1.2188130571506228, 0.6464222418748605, -0.1991202302630063, 0.22336446362945916,
            -0.14509993781058036),
    max_error=4.81e-3,
)
GELU_ACCURATE = EvenSplit(
    cutoff=4.0,
    coeffs=(1.407585509313774, 0.7327400643019806, -0.2265832027744658, 0.15626754783429617,
            -0.11825296776578864, 0.06731048435564127, -0.04170276396698032, 0.04358407005123971,
            -0.021109917276134985),
    max_error=1.27e-4,
)
GELU_MID = EvenSplit(  # degree 6: one power layer (and truncation) more than fast, 12x smaller error
    cutoff=3.71,
    coeffs=(1.300411141162962, 0.6965271171395672, -0.23082795440993975, 0.13112467055627441,
            -0.08864182300409693, 0.09927642329796392, -0.05363358384198902),
    max_error=3.85e-4,
)
SILU_FAST = EvenSplit(
    cutoff=8.0,
    coeffs=(2.815396945124086, 1.4972507094909964, -0.5636616024418484, -0.0161392610438999,
            0.3479173338880539, 0.5088276213698746, -0.60099412706318),
    max_error=8.72e-3,
)
SILU_ACCURATE = EvenSplit(
    cutoff=10.0,
    coeffs=(3.529078401258583, 1.7822031041913449, -0.4374024583700638, 0.35862519990928615,
            -0.6463935328980717, -0.549905945613533, 2.093671130178543, 2.1203623774981715,
            -4.915005111139051, -2.5758866597740226, 4.946565056756556, 1.3638302267696576,
            -2.0707404714978117),
    max_error=5.45e-4,
)

ACCURATE = ApproxProfile(
    name="accurate",
    exp_base=EXP_BASE_3_N4,
    exp_squarings=4,
    exp_clip=-16.0,
    recip_newton_iters=3,
    rsqrt_poly_degree=5,
    rsqrt_newton_iters=1,
    gelu=GELU_ACCURATE,
    silu=SILU_ACCURATE,
    compare_bits=40,  # exact for |x - c| < 2^21 at f = 18
)

# Fewer rounds and bytes, larger errors: a degree-2 exp base clipped at -14, one Newton step less in the
# reciprocal, a degree-4 rsqrt start, degree-4 GeLU/SiLU, comparisons on 32 bits.
FAST = dataclasses.replace(
    ACCURATE,
    name="fast",
    exp_base=EXP_BASE_2_N4,
    exp_clip=-14.0,
    recip_newton_iters=2,
    rsqrt_poly_degree=4,
    gelu=GELU_FAST,
    silu=SILU_FAST,
    compare_bits=32,  # exact for |x - c| < 2^13 at f = 18
)

# Fewest bytes: fast's recipes with exp's squarings paired (one resharing + one truncation per two squarings: ~25%
# fewer exp bytes for ~2.7x its max error, 6e-4 instead of 2.2e-4, the extra part stochastic and unbiased), a
# degree-6 GeLU (3.85e-4; one truncation more than fast's, 12x more accurate), and the thrifty 3-round truncation
# inside exp and GeLU/SiLU (~25% fewer bytes per truncation, one round more each).
LEAN = dataclasses.replace(FAST, name="lean", gelu=GELU_MID, exp_paired_squarings=True, thrifty_trunc=True)

PROFILES: dict[str, ApproxProfile] = {p.name: p for p in (ACCURATE, FAST, LEAN)}


def get(name: str) -> ApproxProfile:
    """The built-in profile called `name` ("accurate", "fast" or "lean")."""
    if name not in PROFILES:
        raise ValueError(f"unknown approximation profile {name!r}; known: {sorted(PROFILES)}")
    return PROFILES[name]
