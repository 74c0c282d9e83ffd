"""Fixed-point truncation: divide a shared value by 2^bits with error below 1 ulp and no wrap-around failure.

Follows the probabilistic truncation with a known-zero top bit of Dalskov, Escudero and Keller, "Secure Evaluation
of Quantized Neural Networks" (PETS 2020, Sec. 3.3), in the 3-party replicated setting: a helper party h deals
2-out-of-2 correlated randomness to the other two, a = h+1 and b = h+2, who open x + r between themselves only.
The helper role rotates from call to call to balance traffic.

Guarantee: for |x| < 2^62 (as a signed ring element) the output is floor(x / 2^bits) or that plus one; there is
no failure probability (unlike SecureML-style local truncation, which fails with probability ~2^(l_x + 1 - 64)
per element). The rounding is unbiased: the +1 happens with probability equal to the discarded fraction
(x mod 2^bits) / 2^bits, so exact multiples of 2^bits truncate exactly. Values of 2^62 or more in magnitude
give garbage: the caller keeps products in range.

Steps (input: additive terms z_a + z_b + z_h = x, each masked by a fresh zero-sharing):
  0. (no messages) a and h draw r_a, b and h draw r_b from their pairwise PRGs; r = r_a + r_b. h computes
     msb(r) and (r mod 2^63) >> bits and 2-of-2 shares them: a's halves come from the a-h PRG, b's are sent by h.
  1. a and b swap z_a + r_a and z_b + r_b; h sends z_h to both and b's halves to b. Now a and b know
     c = x + 2^62 + r, a uniformly masked value. With y = x + 2^62 in [0, 2^63) and w = msb(c) xor msb(r),
     y = (c mod 2^63) - (r mod 2^63) + w * 2^63, so y >> bits is linear in the shared halves, up to one carry.
  2. a and b re-randomise their 2-of-2 result into a replicated sharing with masks from the a-h and b-h PRGs,
     swapping one element each.
Cost: 2 rounds; per output element, a and b send 2 ring elements each, h sends 4.
"""

from __future__ import annotations

import torch

from .. import ring
from ..party import Party
from ..shares import AShare

_SHIFT_BITS = ring.RING_BITS - 2  # y = x + 2^62 has a zero top bit when |x| < 2^62
_LOW_MASK = (1 << (ring.RING_BITS - 1)) - 1  # mod 2^63


def trunc(party: Party, x: AShare, bits: int) -> AShare:
    """Truncate a replicated share by `bits` (see module docstring for error and range). 2 rounds."""
    return from_additive(party, x.lo + party.zero_share(x.shape), bits)


def from_additive(party: Party, z: torch.Tensor, bits: int) -> AShare:
    """Truncate x = z_0 + z_1 + z_2 given this party's term z (already masked by a fresh zero-sharing). 2 rounds."""
    if not 0 < bits < _SHIFT_BITS:
        raise ValueError(f"truncation bits must be in (0, {_SHIFT_BITS}), got {bits}")
    helper = party.next_helper()
    a, b = (helper + 1) % 3, (helper + 2) % 3
    if party.index == helper:
        return _helper(party, z, a, b, bits)
    return _opener(party, z, a, b, helper, bits)


def _helper(party: Party, z: torch.Tensor, a: int, b: int, bits: int) -> AShare:
    shape = z.shape
    prg_a, prg_b = party.prg_with(a), party.prg_with(b)
    r = prg_a.ring(shape) + prg_b.ring(shape)
    r_msb = ring.msb(r)
    r_low = (r & _LOW_MASK) >> bits
    msb_b = r_msb - prg_a.ring(shape)  # a's half of msb(r) is its PRG draw; b gets the rest
    low_b = r_low - prg_a.ring(shape)
    party.send(a, z, "trunc1")
    party.send(b, z, "trunc1")
    party.send(b, torch.stack([msb_b, low_b]), "trunc1")
    # Step 2: the output components held by h are the two masks drawn with a and with b.
    return AShare(prg_b.ring(shape), prg_a.ring(shape), party.index)


def _opener(party: Party, z: torch.Tensor, a: int, b: int, helper: int, bits: int) -> AShare:
    shape = z.shape
    is_a = party.index == a
    other = b if is_a else a
    prg_h = party.prg_with(helper)
    mask = prg_h.ring(shape)  # r_a for a, r_b for b (drawn in the same order as the helper)
    if is_a:
        msb_half, low_half = prg_h.ring(shape), prg_h.ring(shape)
    party.send(other, z + mask, "trunc1")
    z_other = party.recv(other, "trunc1")
    z_helper = party.recv(helper, "trunc1")
    if not is_a:
        msb_half, low_half = party.recv(helper, "trunc1").unbind(0)
    c = z + mask + z_other + z_helper + (1 << _SHIFT_BITS)  # x + 2^62 + r, known to a and b only
    c_msb = ring.msb(c)
    # w = c_msb xor r_msb = c_msb + r_msb - 2 c_msb r_msb, linear in the halves of r_msb.
    w_half = msb_half * (1 - 2 * c_msb)
    q = (w_half << (ring.RING_BITS - 1 - bits)) - low_half
    if is_a:
        q = q + (c_msb << (ring.RING_BITS - 1 - bits)) + ((c & _LOW_MASK) >> bits)
        q = q - (1 << (_SHIFT_BITS - bits))
    # Step 2: re-randomise. Component v_a is a's mask with h, v_h is b's mask with h, v_b = q - v_a - v_h.
    own_mask = prg_h.ring(shape)
    party.send(other, q - own_mask, "trunc2")
    v_b = q - own_mask + party.recv(other, "trunc2")
    if is_a:
        return AShare(own_mask, v_b, party.index)
    return AShare(v_b, own_mask, party.index)
