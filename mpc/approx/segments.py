"""Piecewise functions: all breakpoint comparisons of a function in one call, and selection by bit products.

Steps for f(x) = sum_k [x in segment k] * f_k(x):
  1. `below`: the bits [x < c_k] for every public breakpoint c_k from ONE comparison call (compare.msb) on the
     stacked differences x - c_k, so the comparison's rounds are paid once, not once per breakpoint. With
     profile.compare_bits = b the msb looks at b bits only (cheaper): exact while |x - c_k| < 2^(b-1) ring units.
  2. `select_bits`: sum_k b_k * v_k for boolean selector bits b_k (XORs of the comparison bits: segments are
     disjoint) and values v_k, from ONE bit-times-value call (b2a.mul_bit on the stacked pairs, 1 round, 16 bytes
     per pair per party). No truncation is needed, and garbage in v_k where b_k = 0 (e.g. a polynomial evaluated
     far outside its domain) is removed exactly.
  (B2A of the bits, 10.7 bytes per bit, then one resharing of the summed products, 8 per output, would cost
  29.3 bytes instead of 32 for K = 2 but one round more.)
Cost: one msb of K*n elements (6 rounds, 20.4 bytes per element per party at 64 bits) and one mul_bit of the pairs.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..party import Party
from ..protocols import b2a, compare
from ..ring import RING_BITS
from ..shares import AShare, BShare, stack
from .profile import ApproxProfile


def below(party: Party, x: AShare, thresholds: Sequence[float], profile: ApproxProfile) -> list[BShare]:
    """[x < c] for each public real c, as boolean shares (bit 0), from one comparison call."""
    fxp = party.fxp
    diffs = stack([x.add_public(-fxp.encode(float(c)).item()) for c in thresholds])  # (K, *x.shape)
    signs = compare.msb(party, diffs, bits=profile.compare_bits or RING_BITS)
    return [signs[k] for k in range(len(thresholds))]


def select_bits(party: Party, pairs: Sequence[tuple[BShare, AShare]]) -> AShare:
    """sum_k b_k * v_k for boolean bits b_k (bit 0) and fixed-point values v_k: one mul_bit call, 1 round."""
    shape = torch.broadcast_shapes(*[v.shape for _, v in pairs])
    bits = stack([b.expand(*shape) for b, _ in pairs])
    values = stack([v.expand(*shape) for _, v in pairs])
    return b2a.mul_bit(party, bits, values).sum(0)


def mask_by_bit(party: Party, bit: BShare, y: AShare, keep_when: int = 1) -> AShare:
    """y where bit == keep_when, exactly 0 elsewhere (bit: boolean share, bit 0)."""
    b = bit if keep_when == 1 else bit.xor_public(1)
    return b2a.mul_bit(party, b, y)
