"""Fixed-point truncation: divide a shared value by 2^bits with error below 1 ulp and no wrap-around failure.

Follows the probabilistic truncation with a known-zero top bit of Dalskov, Escudero and Keller, "Secure Evaluation
of Quantized Neural Networks" (PETS 2020, Sec. 3.3), in the 3-party replicated setting: a helper party h deals
2-out-of-2 correlated randomness to the other two, a = h+1 and b = h+2, who open x + r between themselves only.
Each call cuts its batch in thirds and gives each party the helper role for one third (the first third's helper
rotates from call to call), so every call's traffic is balanced over the parties.

Guarantee: for |x| < 2^62 (as a signed ring element) the output is floor(x / 2^bits) or that plus one; there is
no failure probability (unlike SecureML-style local truncation, which fails with probability ~2^(l_x + 1 - 64)
per element). The rounding is unbiased: the +1 happens with probability equal to the discarded fraction
(x mod 2^bits) / 2^bits, so exact multiples of 2^bits truncate exactly. Values of 2^62 or more in magnitude
give garbage: the caller keeps products in range.

Steps (input: additive terms z_a + z_b + z_h = x, each masked by a fresh zero-sharing):
  0. (no messages) a and h draw r_a, b and h draw r_b from their pairwise PRGs; r = r_a + r_b. h computes
     msb(r) and (r mod 2^63) >> bits and 2-of-2 shares them: a's halves come from the a-h PRG, b's are sent by h
     as E = (m_b << (63 - bits)) - l_b (one ring element) and m_b mod 2^bits (ceil(bits/8) bytes): b only needs
     m_b * (1 - 2 msb(c)) << (63 - bits) - l_b = E - msb(c) * (m_b << (64 - bits)), which depends on m_b mod 2^bits
     only. E is uniform (l_b is) and independent of m_b mod 2^bits (uniform too): b learns nothing new.
  1. a and b swap z_a + r_a and z_b + r_b; h sends z_h to both and b's halves to b. Now a and b know
     c = x + 2^62 + r, a uniformly masked value. With y = x + 2^62 in [0, 2^63) and w = msb(c) xor msb(r),
     y = (c mod 2^63) - (r mod 2^63) + w * 2^63, so y >> bits is linear in the shared halves, up to one carry.
  2. a and b re-randomise their 2-of-2 result into a replicated sharing with masks from the a-h and b-h PRGs,
     swapping one element each.
Cost: 2 rounds; per output element, a and b send 2 ring elements each, h sends 3 and ceil(bits/8) bytes:
56 + ceil(bits/8) bytes in all (`bytes_per_element`), e.g. 59 at bits = 18 (a plain 4-element helper: 64).

Thrifty variant (`thrifty=True`: one round more, ~27% fewer bytes): b uses c only through msb(c), so it need not
learn c. 1. b sends z_b + r_b to a; h sends z_h to a only and b's halves to b. 2. a (knowing c) sends b its
masked result q_a - v_a and msb(c) (one byte; a uniform bit, as c is uniformly masked). 3. b computes q_b and
v_b, and sends q_b - v_h to a. Per element: a 9 bytes, b 16, h 16 + ceil(bits/8): 41 + ceil(bits/8) in all
(44 at bits = 18). Every message is a value masked by PRG randomness its receiver does not hold, or msb(c).

Replicated variant (`trunc_replicated`, for an input held as a replicated share, e.g. a secret activation times a
public weight matrix): in the slice with helper h, the openers a = h+1 and b = h+2 together hold all three
components (a holds (x_a, x_b), b holds (x_b, x_h)), so the additive terms are z_a = x_a + x_b, z_b = x_h and
z_h = 0: the helper's term is known to be zero and is not sent. a receives x_h + r_b, b receives x_a + x_b + r_a
(each masked by the PRG draw of the other opener with h), exactly as they receive z_b + r_b / z_a + r_a above; the
rest is unchanged. Per element: 40 + ceil(bits/8) bytes in 2 rounds (43 at bits = 18: a 16, b 16,
h 8 + ceil(bits/8)); thrifty: 33 + ceil(bits/8) in 3 rounds (36 at bits = 18).
"""

from __future__ import annotations

import math
import sys
from typing import Iterator

import torch

from .. import ring
from ..party import Party
from ..shares import AShare

_SHIFT_BITS = ring.RING_BITS - 2  # y = x + 2^62 has a zero top bit when |x| < 2^62
_LOW_MASK = (1 << (ring.RING_BITS - 1)) - 1  # mod 2^63
_RING_BYTES = ring.RING_BITS // 8


def _msb_bytes(bits: int) -> int:
    """Bytes that carry b's half of msb(r): it matters mod 2^bits only."""
    return (bits + 7) // 8


def bytes_per_element(bits: int, thrifty: bool = False, replicated: bool = False) -> int:
    """Bytes sent per truncated element by one call, summed over the three parties.

    2-round protocol: a 16, b 16, h 24 + ceil(bits/8). Thrifty (3 rounds): a 9, b 16, h 16 + ceil(bits/8).
    `replicated` (`trunc_replicated`): the helper sends no term, 2 ring elements fewer (thrifty: 1 fewer).
    """
    if thrifty:
        return (5 - replicated) * _RING_BYTES + 1 + _msb_bytes(bits)
    return (7 - 2 * replicated) * _RING_BYTES + _msb_bytes(bits)


def _pack_low_bytes(v: torch.Tensor, nbytes: int) -> torch.Tensor:
    """The low `nbytes` bytes of each int64 (little-endian layout), as a (n, nbytes) uint8 tensor."""
    if sys.byteorder != "little":
        raise RuntimeError("trunc packs ring elements by their little-endian bytes")
    return v.reshape(-1, 1).view(torch.uint8)[:, :nbytes]


def _unpack_low_bytes(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """int64 values whose low bytes are `packed` (n, k) and whose high bytes are 0, reshaped to `shape`."""
    full = torch.zeros(packed.shape[0], _RING_BYTES, dtype=torch.uint8, device=packed.device)
    full[:, : packed.shape[1]] = packed
    return full.view(torch.int64).reshape(shape)


def trunc(party: Party, x: AShare, bits: int) -> AShare:
    """Truncate a replicated share by `bits` (see module docstring for error and range). 2 rounds."""
    return from_additive(party, x.lo + party.zero_share(x.shape), bits)


def trunc_replicated(party: Party, x: AShare, bits: int, thrifty: bool = False) -> AShare:
    """Truncate a replicated share by `bits` using its replication: the helper sends no term (module docstring).

    Same guarantee as `trunc`; 2 rounds and `bytes_per_element(bits, replicated=True)` bytes per element (43 at
    18 bits, against 59); thrifty: 3 rounds, 36 at 18 bits.
    """
    if not 0 < bits < _SHIFT_BITS:
        raise ValueError(f"truncation bits must be in (0, {_SHIFT_BITS}), got {bits}")
    lo, hi = x.lo.reshape(-1), x.hi.reshape(-1)

    def term(helper: int, a: int, start: int, stop: int) -> torch.Tensor | None:
        if party.index == helper:
            return None  # z_h = 0
        if party.index == a:
            return lo[start:stop] + hi[start:stop]  # z_a = x_a + x_b
        return hi[start:stop]  # z_b = x_h (b holds (x_b, x_h))

    return _sliced(party, x.shape, x.device, term, bits, thrifty, replicated=True)


def from_additive(party: Party, z: torch.Tensor, bits: int, thrifty: bool = False) -> AShare:
    """Truncate x = z_0 + z_1 + z_2 given this party's term z (already masked by a fresh zero-sharing).

    2 rounds; thrifty: 3 rounds and ~27% fewer bytes (see the module docstring).
    """
    if not 0 < bits < _SHIFT_BITS:
        raise ValueError(f"truncation bits must be in (0, {_SHIFT_BITS}), got {bits}")
    flat = z.reshape(-1)
    return _sliced(party, z.shape, z.device, lambda helper, a, start, stop: flat[start:stop], bits, thrifty,
                   replicated=False)


def _sliced(party: Party, shape: torch.Size, device: torch.device, term, bits: int, thrifty: bool,
            replicated: bool) -> AShare:
    """Cut the batch in thirds, one helper each; `term(helper, a, start, stop)` is this party's term of a slice
    (None for the helper of a replicated call: its term is zero)."""
    first = party.next_helper()
    n = math.prod(shape)
    cuts = [0, n // 3, 2 * n // 3, n]
    stages = []
    for k in range(3):  # slice k of the batch has helper first + k (empty slices are skipped by every party)
        if cuts[k + 1] > cuts[k]:
            helper = (first + k) % 3
            a, b = (helper + 1) % 3, (helper + 2) % 3
            part = term(helper, a, cuts[k], cuts[k + 1])
            size = cuts[k + 1] - cuts[k]
            if thrifty:
                role = _helper_thrifty if party.index == helper else _opener_thrifty
            else:
                role = _helper if party.index == helper else _opener
            stages.append(role(party, part, a, b, helper, bits, size, replicated))
    # Run every slice's stage 1 (round-1 sends), then every slice's stage 2 (receives, round-2 sends), and so on:
    # the rounds of the slices overlap, and each party's PRG draws with each neighbour happen in the same (slice)
    # order on both sides.
    for _ in range(3 if thrifty else 2):
        for stage in stages:
            next(stage)
    outs = [next(stage) for stage in stages]
    if not outs:
        empty = torch.zeros(shape, dtype=ring.RING_DTYPE, device=device)
        return AShare(empty, empty.clone(), party.index)
    lo = torch.cat([o.lo for o in outs]) if len(outs) > 1 else outs[0].lo
    hi = torch.cat([o.hi for o in outs]) if len(outs) > 1 else outs[0].hi
    return AShare(lo.reshape(shape), hi.reshape(shape), party.index)


def _helper(party: Party, z: torch.Tensor | None, a: int, b: int, helper: int, bits: int, n: int,
            replicated: bool) -> Iterator[AShare | None]:
    """The helper's part for one slice, in three stages (send round 1 / draw output masks / output); with
    `replicated` its term is zero and not sent."""
    shape = (n,)
    prg_a, prg_b = party.prg_with(a), party.prg_with(b)
    r = prg_a.ring(shape) + prg_b.ring(shape)
    r_msb = ring.msb(r)
    r_low = (r & _LOW_MASK) >> bits
    msb_b = r_msb - prg_a.ring(shape)  # a's half of msb(r) is its PRG draw; b gets the rest
    low_b = r_low - prg_a.ring(shape)
    e_b = (msb_b << (ring.RING_BITS - 1 - bits)) - low_b
    if not replicated:
        party.send(a, z, "trunc1")
        party.send(b, z, "trunc1")
    halves = torch.cat([_pack_low_bytes(e_b, _RING_BYTES), _pack_low_bytes(msb_b, _msb_bytes(bits))], dim=1)
    party.send(b, halves, "trunc1")  # (n, 8 + ceil(bits/8)) bytes
    yield None
    # Step 2: the output components held by h are the two masks drawn with a and with b.
    out = AShare(prg_b.ring(shape), prg_a.ring(shape), party.index)
    yield None
    yield out


def _opener(party: Party, z: torch.Tensor, a: int, b: int, helper: int, bits: int, n: int, replicated: bool
            ) -> Iterator[AShare | None]:
    """An opener's (a or b) part for one slice, in three stages (send round 1 / receive, send round 2 / output)."""
    shape = z.shape
    is_a = party.index == a
    other = b if is_a else a
    prg_h = party.prg_with(helper)
    mask = prg_h.ring(shape)  # r_a for a, r_b for b (drawn in the same order as the helper)
    if is_a:
        msb_half, low_half = prg_h.ring(shape), prg_h.ring(shape)
    party.send(other, z + mask, "trunc1")
    yield None
    z_other = party.recv(other, "trunc1")
    c = z + mask + z_other + (1 << _SHIFT_BITS)  # x + 2^62 + r, known to a and b only
    if not replicated:
        c = c + party.recv(helper, "trunc1")  # z_h
    c_msb = ring.msb(c)
    # w = c_msb xor r_msb = c_msb + r_msb - 2 c_msb r_msb, linear in the halves of r_msb.
    if is_a:
        q = ((msb_half * (1 - 2 * c_msb)) << (ring.RING_BITS - 1 - bits)) - low_half
        q = q + (c_msb << (ring.RING_BITS - 1 - bits)) + ((c & _LOW_MASK) >> bits)
        q = q - (1 << (_SHIFT_BITS - bits))
    else:
        halves = party.recv(helper, "trunc1")
        e_b = _unpack_low_bytes(halves[:, :_RING_BYTES], shape)
        msb_low = _unpack_low_bytes(halves[:, _RING_BYTES:], shape)  # b's half of msb(r), mod 2^bits
        q = e_b - ((c_msb * msb_low) << (ring.RING_BITS - bits))
    # Step 2: re-randomise. Component v_a is a's mask with h, v_h is b's mask with h, v_b = q - v_a - v_h.
    own_mask = prg_h.ring(shape)
    party.send(other, q - own_mask, "trunc2")
    yield None
    v_b = q - own_mask + party.recv(other, "trunc2")
    yield AShare(own_mask, v_b, party.index) if is_a else AShare(v_b, own_mask, party.index)


def _helper_thrifty(party: Party, z: torch.Tensor | None, a: int, b: int, helper: int, bits: int, n: int,
                    replicated: bool) -> Iterator[AShare | None]:
    """The helper's part of the thrifty variant: as `_helper`, but z_h goes to a only (and not at all when
    `replicated`)."""
    shape = (n,)
    prg_a, prg_b = party.prg_with(a), party.prg_with(b)
    r = prg_a.ring(shape) + prg_b.ring(shape)
    msb_b = ring.msb(r) - prg_a.ring(shape)
    low_b = ((r & _LOW_MASK) >> bits) - prg_a.ring(shape)
    e_b = (msb_b << (ring.RING_BITS - 1 - bits)) - low_b
    if not replicated:
        party.send(a, z, "trunc1")
    halves = torch.cat([_pack_low_bytes(e_b, _RING_BYTES), _pack_low_bytes(msb_b, _msb_bytes(bits))], dim=1)
    party.send(b, halves, "trunc1")
    yield None
    out = AShare(prg_b.ring(shape), prg_a.ring(shape), party.index)
    yield None
    yield None
    yield out


def _opener_thrifty(party: Party, z: torch.Tensor, a: int, b: int, helper: int, bits: int, n: int,
                    replicated: bool) -> Iterator[AShare | None]:
    """An opener's part of the thrifty variant: a alone learns c and tells b msb(c) with its masked result."""
    shape = z.shape
    prg_h = party.prg_with(helper)
    mask = prg_h.ring(shape)
    if party.index == a:
        msb_half, low_half = prg_h.ring(shape), prg_h.ring(shape)
        yield None
        c = z + mask + party.recv(b, "trunc1") + (1 << _SHIFT_BITS)
        if not replicated:
            c = c + party.recv(helper, "trunc1")  # z_h
        c_msb = ring.msb(c)
        q = ((msb_half * (1 - 2 * c_msb)) << (ring.RING_BITS - 1 - bits)) - low_half
        q = q + (c_msb << (ring.RING_BITS - 1 - bits)) + ((c & _LOW_MASK) >> bits) - (1 << (_SHIFT_BITS - bits))
        own_mask = prg_h.ring(shape)
        party.send(b, q - own_mask, "trunc2")
        party.send(b, c_msb.to(torch.uint8), "trunc2")  # msb(c): a uniform bit (c is uniformly masked)
        yield None
        yield None
        v_b = q - own_mask + party.recv(b, "trunc3")
        yield AShare(own_mask, v_b, party.index)
    else:
        party.send(a, z + mask, "trunc1")
        yield None
        halves = party.recv(helper, "trunc1")
        e_b = _unpack_low_bytes(halves[:, :_RING_BYTES], shape)
        msb_low = _unpack_low_bytes(halves[:, _RING_BYTES:], shape)
        own_mask = prg_h.ring(shape)
        yield None
        q_a_masked = party.recv(a, "trunc2")
        c_msb = party.recv(a, "trunc2").to(torch.int64).reshape(shape)
        q = e_b - ((c_msb * msb_low) << (ring.RING_BITS - bits))
        party.send(a, q - own_mask, "trunc3")
        yield None
        yield AShare(q_a_masked + q - own_mask, own_mask, party.index)
