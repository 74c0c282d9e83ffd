"""Polynomials on fixed-point shares with one truncation per multiplicative layer, and the term algebra under it.

Idea: a product of two shares is, before resharing, a 3-out-of-3 additive sharing ("term": party i holds one
tensor, the three sum to the product). Terms add locally, scale by public integers locally, and one truncation
(`trunc.from_additive`, 2 rounds) turns any sum of terms back into a replicated share. So every layer of a
computation that ends in a truncation costs one truncation call, however many products and public constants it sums;
independent products of one layer are concatenated into that single call (rounds stay at 2 per layer).

Polynomial evaluation (`evaluate`): powers t^2..t^m, m = ceil(d/2), are built in ceil(log2 m) layers (layer l makes
the powers in (2^(l-1), 2^l] from lower ones), each layer one truncation of all its powers; the final layer sums
c_i * t^ceil(i/2) * t^floor(i/2) for every i with the coefficients folded into the products and truncates once.
Degree d costs ceil(log2 d) layers = 2 ceil(log2 d) rounds (d >= 2), vs 2(d-1) for Horner and 2 ceil(log2 d) + 2
for a power tree followed by a separate coefficient truncation. Bytes per layer: one truncation per element of
the layer's outputs (a, b send 2 ring elements, the helper 4; the helper role rotates).

Precision (t given with `in_bits` fractional bits, |t| <= 1 on the domain): each power carries at most (its degree)
ulps of 2^-in_bits; the final layer works at scale 2^(2 in_bits + coef_bits) where coef_bits =
61 - 2 in_bits - ceil(log2 bound), so the coefficients carry 2^-(coef_bits+1) rounding each. Outside the stated
domain results are garbage but never fail (truncation has no failure mode): callers mask them with exact 0/1 bits.
Follows the layered evaluation of PUMA (Dong et al., 2023, Sec. 4) with this engine's fused truncations.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..party import Party
from ..protocols import trunc
from ..shares import AShare

_HEADROOM_BITS = 61  # every truncated sum stays below 2^61 in magnitude (trunc needs < 2^62)


def encode(c: float, bits: int) -> int:
    """round(c * 2^bits) as a Python int (identical on every party for a literal c)."""
    v = round(c * (1 << bits)) if bits >= 0 else round(c / (1 << -bits))
    if abs(v) >= 1 << 62:
        raise ValueError(f"constant {c} does not fit with {bits} fractional bits")
    return int(v)


def cross(x: AShare, y: AShare | torch.Tensor) -> torch.Tensor:
    """This party's 3-out-of-3 term of the ring product x*y (broadcasting): x_i y_i + x_i y_{i+1} + x_{i+1} y_i;
    for a public ring tensor y (e.g. an open model's LayerNorm gain), x_i y."""
    if not isinstance(y, AShare):
        return x.lo * y
    return x.lo * (y.lo + y.hi) + x.hi * y.lo


def lifted(x: AShare, bits: int = 0) -> torch.Tensor:
    """This party's term of x * 2^bits (the first component: the x_i sum to x)."""
    return x.lo << bits if bits else x.lo


def constant(party: Party, value: int, like: torch.Tensor) -> torch.Tensor:
    """This party's term of the public ring constant `value` (party 0 holds it, the others 0), shaped like `like`."""
    if party.index == 0:
        return torch.full_like(like, value)
    return torch.zeros_like(like)


def truncate_terms(party: Party, terms: Sequence[torch.Tensor], bits: int, thrifty: bool = False) -> list[AShare]:
    """Truncate several sums of terms by `bits` in ONE truncation call (2 rounds; thrifty: 3 rounds, fewer bytes)."""
    shapes = [t.shape for t in terms]
    flat = torch.cat([t.reshape(-1) for t in terms]) if len(terms) > 1 else terms[0].reshape(-1)
    out = trunc.from_additive(party, flat + party.zero_share(flat.shape), bits, thrifty=thrifty)
    pieces, start = [], 0
    for shape in shapes:
        n = math.prod(shape)
        pieces.append(out[start : start + n].reshape(shape))
        start += n
    return pieces


def products(party: Party, pairs: Sequence[tuple[AShare, AShare]], bits: int, thrifty: bool = False
             ) -> list[AShare]:
    """Fixed-point products of independent pairs (each truncated by `bits`) in one truncation call. 2 rounds."""
    return truncate_terms(party, [cross(x, y) for x, y in pairs], bits, thrifty)


def power_plan(degree: int) -> list[list[int]]:
    """The powers (>= 2) computed in each layer so that every i <= degree splits as ceil(i/2) + floor(i/2)."""
    top = (degree + 1) // 2
    layers, have = [], 1
    while have < top:
        nxt = min(2 * have, top)
        layers.append(list(range(have + 1, nxt + 1)))
        have = nxt
    return layers


def powers(party: Party, t: AShare, degree: int, bits: int, thrifty: bool = False) -> dict[int, AShare]:
    """t^1 .. t^ceil(degree/2), all with `bits` fractional bits (t given with `bits`). 2 rounds per layer."""
    pw = {1: t}
    for layer in power_plan(degree):
        half = 1 << ((max(layer) - 1).bit_length() - 1)  # the largest power of two below the layer's top
        pairs = [(pw[half], pw[p - half]) for p in layer]
        for p, v in zip(layer, products(party, pairs, bits, thrifty)):
            pw[p] = v
    return pw


def coef_bits_for(in_bits: int, bound: float) -> int:
    """Fractional bits left for the coefficients when the final layer's value is below `bound` in magnitude."""
    bits = _HEADROOM_BITS - 2 * in_bits - max(0, math.ceil(math.log2(bound)))
    if bits < 4:
        raise ValueError(f"no room for coefficients: in_bits={in_bits}, bound={bound}")
    return bits


def poly_term(party: Party, pw: dict[int, AShare], coeffs: Sequence[float], in_bits: int, coef_bits: int
              ) -> torch.Tensor:
    """This party's term of sum_i c_i t^i at scale 2^(2 in_bits + coef_bits), from the powers in `pw`."""
    t = pw[1]
    scale = 2 * in_bits + coef_bits
    term = lifted(t) * encode(coeffs[1], in_bits + coef_bits) if len(coeffs) > 1 else torch.zeros_like(t.lo)
    term = term + constant(party, encode(coeffs[0], scale), term)
    for i in range(2, len(coeffs)):
        if coeffs[i] != 0.0:
            term = term + cross(pw[(i + 1) // 2], pw[i // 2]) * encode(coeffs[i], coef_bits)
    return term


def evaluate(party: Party, t: AShare, polys: Sequence[Sequence[float]], *, in_bits: int, out_bits: int,
             bound: float) -> list[AShare]:
    """Evaluate several polynomials (monomial coefficients c_0..c_d) of one secret t, sharing its powers.

    t has `in_bits` fractional bits and should satisfy |t| <= 1 on the domain (larger |t| works while every power
    and |p(t)| * 2^(2 in_bits + coef_bits) stay below 2^61); `bound` bounds |p(t)|. Outputs have `out_bits`.
    Rounds: 2 ceil(log2 d) for the largest degree d >= 2 (all polynomials' final layers share one truncation).
    """
    degree = max(len(c) for c in polys) - 1
    if degree < 1:
        raise ValueError("polynomials need degree >= 1")
    coef_bits = coef_bits_for(in_bits, bound)
    pw = powers(party, t, degree, in_bits)
    terms = [poly_term(party, pw, c, in_bits, coef_bits) for c in polys]
    shift = 2 * in_bits + coef_bits - out_bits
    if shift <= 0:
        raise ValueError("out_bits must be below the final layer's scale")
    return truncate_terms(party, terms, shift)


def evaluate_one(party: Party, t: AShare, coeffs: Sequence[float], *, in_bits: int, out_bits: int,
                 bound: float) -> AShare:
    """One polynomial of t (see `evaluate`)."""
    return evaluate(party, t, [coeffs], in_bits=in_bits, out_bits=out_bits, bound=bound)[0]
