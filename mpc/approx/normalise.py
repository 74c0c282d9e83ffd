"""Normalising a positive secret by its highest set bit: the step under reciprocal and reciprocal square root.

Steps for x > 0 whose highest set ring bit lies in the public window [lo_bit, hi_bit):
  1. A2B: the boolean sharing of x (one adder; see protocols.boolean).
  2. Keep the window's bits and force bit lo_bit to 1 (so x below the window acts as 2^lo_bit); local.
  3. Prefix-OR towards the low end, p_j = OR_{i >= j} b_i, by ceil(log2 W) steps p |= p >> 2^k on the packed
     64-bit words: one AND per step (OR = a ^ b ^ ab), W = hi_bit - lo_bit.
  4. One-hot of the highest bit: h = p ^ (p >> 1); unpack the W window bits into a trailing axis (local).
  5. B2A of the W bits (one batched conversion).
Any power-of-two factor c_j chosen per bit j is then a public linear combination sum_j h_j * c_j (local), so
x * 2^(-k) and 2^(-k/2)-style rescalings cost one fixed-point product each.
Cost: A2B + ceil(log2 W) ANDs of one word per element + B2A of W bits per element. Used per row (softmax
denominators, LayerNorm variances), so the element count is small.
Follows PUMA's normalisation for rsqrt/reciprocal (Dong et al. 2023, Sec. 4.3) with a packed prefix-OR.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..party import Party
from ..protocols import b2a, boolean
from ..ring import RING_BITS
from ..shares import AShare, BShare


def _window_mask(lo_bit: int, hi_bit: int) -> int:
    """Bits lo_bit .. hi_bit-1 set, as a signed int64 value."""
    mask = ((1 << hi_bit) - 1) ^ ((1 << lo_bit) - 1)
    return mask - (1 << RING_BITS) if mask >= 1 << (RING_BITS - 1) else mask


def _or_public(x: BShare, c: int) -> BShare:
    """x | c for a public pattern c (local)."""
    return x.and_public(~c).xor_public(c)


def highest_bit(party: Party, x: AShare, lo_bit: int, hi_bit: int) -> AShare:
    """One-hot of x's highest set bit in ring bits [lo_bit, hi_bit), as ring 0/1 of shape (*x.shape, W)."""
    if not 0 <= lo_bit < hi_bit <= RING_BITS - 1:
        raise ValueError(f"bit window must satisfy 0 <= lo < hi <= 63, got [{lo_bit}, {hi_bit})")
    width = hi_bit - lo_bit
    bits = boolean.a2b(party, x).and_public(_window_mask(lo_bit, hi_bit))
    p = _or_public(bits, 1 << lo_bit)
    step = 1
    while step < width:
        p = boolean.or_(party, p, p.rshift(step))
        step *= 2
    onehot = p ^ p.rshift(1)
    shifts = torch.arange(lo_bit, hi_bit, device=x.device)
    unpacked = onehot.map(lambda t: (t.unsqueeze(-1) >> shifts) & 1)  # (*x.shape, W)
    return b2a.bit_to_arith(party, unpacked)


def combine(onehot: AShare, constants: Sequence[int]) -> AShare:
    """sum_j h_j * c_j for public ring constants c_j (one per window bit): a secret ring value, local."""
    c = torch.tensor(list(constants), dtype=torch.int64, device=onehot.device)
    return onehot.mul_public(c).sum(-1)
