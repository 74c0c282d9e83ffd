"""Comparisons: the most significant bit of a shared ring value, and <, <=, >, >=, == built on it.

msb (the split-round adder of `boolean`, reduced to the one carry it needs): write x = a + v with a known to two
parties and v to the third. Steps for a width of `bits` ring bits (64 by default) and blocks of w bits:
  1. Split round (1 round): for each block, its generate G and propagate P as replicated bit planes, straight from
     the algebraic normal form in v (see `boolean`); the top block yields instead (sum bit `bits`-1 with carry-in 0,
     propagate of the bits below it), so the final carry tree outputs the msb itself. Block 0 needs no P.
  2. A carry tree over the bits/w blocks (Sklansky trimmed to its top output): ceil(log2(bits/w)) AND rounds,
     each ANDing only live bit planes.
Cost for 64 bits, w = 2: 6 rounds; per element per party (dealer role rotating over thirds of the batch):
  round 1: (2*96 + 63 + 63) / 3 = 106 bits; tree: 31 + 15 + 7 + 3 + 1 = 57 bits; total 163 bits = 20.4 bytes.
  w = 4: 5 rounds, (2*240 + 31 + 31)/3 + 26 = 206.7 bits = 25.8 bytes. w = 1: 7 rounds, ~25.6 bytes.
A narrower `bits` (e.g. 40 for |x| < 2^39 ring units) costs proportionally less.
lt(x, y) = msb(x - y), exact while |x - y| < 2^63 (ring units).

eq (equality with zero, exact mod 2^64): x == 0 iff v == -a. Split round on [v_block == (-a)_block] per block,
then an AND tree: 6 rounds; per element per party (2*96 + 32 + 32)/3 + 31 = 116.3 bits = 14.5 bytes (w = 2).
Follows ABY3 (Mohassel-Rindal 2018, Sec. 5.3) in spirit, with a bit-sliced Sklansky tree (Sklansky 1960).
"""

from __future__ import annotations

import functools

import torch

from ..party import Party
from ..ring import RING_BITS
from ..shares import AShare, BShare, stack
from . import boolean, planes, prefix, split
from .boolean import BLOCK_BITS
from .planes import Planes

Operand = AShare | float | torch.Tensor


@functools.lru_cache(maxsize=None)
def _msb_spec(width: int, w: int):
    """Spec, output index and prefix plan for the msb of a `width`-bit value (width a multiple of w)."""
    nb = width // w
    plan, need_g, need_p = prefix.prefix_plan(nb, frozenset({nb - 1}))
    top_g, top_p = boolean.bit_of_sum(w - 1), boolean.all_propagate(w - 1)
    outputs, index = [], {}
    for b in range(nb):
        if b in need_g:
            index[("G", b)] = len(outputs)
            outputs.append((b, top_g if b == nb - 1 else boolean.block_generate(w)))
        if b in need_p:
            index[("P", b)] = len(outputs)
            outputs.append((b, top_p if b == nb - 1 else boolean.block_propagate(w)))
    return split.make_spec(w, nb, outputs), index, plan


def msb(party: Party, x: AShare, bits: int = RING_BITS, block_bits: int = BLOCK_BITS) -> BShare:
    """Top bit of x (bit `bits`-1 of x mod 2^bits: the sign of x read as a `bits`-bit integer), in bit 0. 6 rounds.

    With bits < 64 only the low `bits` bits of x matter; the result is x's sign when |x| < 2^(bits-1)."""
    w = block_bits
    if not 2 <= bits <= RING_BITS:
        raise ValueError(f"bits must be in [2, 64], got {bits}")
    if x.numel() == 0:
        return BShare(torch.zeros_like(x.lo), torch.zeros_like(x.hi), party.index)
    pad = (-bits) % w  # shift so the width is a whole number of blocks; the new low bits are 0 in every component
    if pad + bits > RING_BITS:
        raise ValueError(f"bits={bits} is not reachable with block width {w}")
    shifted = x.lshift(pad) if pad else x
    spec, index, plan = _msb_spec(bits + pad, w)
    out, layout = split.split_bool_round(party, shifted, spec, tag="msb")
    nb, device = spec.blocks, x.lo.device
    g = planes.gather(out, planes.row_index(tuple(index.get(("G", b), 0) for b in range(nb)), device))
    p = planes.gather(out, planes.row_index(tuple(index.get(("P", b), 0) for b in range(nb)), device))
    carry = prefix.run_prefix(party, g, p, plan, tag="msb_tree")  # rows the plan never reads: row 0, unused
    return split.planes_to_bshare(party, carry[nb - 1], layout, x.shape)


def ltz(party: Party, x: AShare) -> BShare:
    """[x < 0] (bit 0). Same as msb."""
    return msb(party, x)


def _diff(party: Party, x: AShare, y: Operand) -> AShare:
    """x - y for y an AShare or a public real (encoded in the session's fixed point)."""
    if isinstance(y, AShare):
        return x - y
    return x.add_public(-party.fxp.encode(y, x.device))


def lt(party: Party, x: AShare, y: Operand) -> BShare:
    """[x < y] (bit 0), exact while |x - y| < 2^63 ring units."""
    return msb(party, _diff(party, x, y))


def gt(party: Party, x: AShare, y: Operand) -> BShare:
    """[x > y] = [y - x < 0] (bit 0)."""
    return msb(party, -_diff(party, x, y))


def le(party: Party, x: AShare, y: Operand) -> BShare:
    """[x <= y] = NOT [x > y] (bit 0)."""
    return gt(party, x, y).xor_public(1)


def ge(party: Party, x: AShare, y: Operand) -> BShare:
    """[x >= y] = NOT [x < y] (bit 0)."""
    return lt(party, x, y).xor_public(1)


@functools.lru_cache(maxsize=None)
def _eq_spec(w: int) -> split.BlockSpec:
    nb = RING_BITS // w
    same = boolean.block_fn(("eq", w), lambda a, b: int(a == b))
    return split.make_spec(w, nb, [(b, same) for b in range(nb)])


def _and_tree(party: Party, rows: Planes, tag: str) -> Planes:
    """AND of all rows of (k, nbytes) plane shares: ceil(log2 k) rounds, k - 1 ANDed planes in all."""
    while rows.lo.shape[0] > 1:
        k = rows.lo.shape[0]
        half = k // 2
        res = planes.and_planes(party, rows[0:2 * half:2], rows[1:2 * half:2], tag)
        rows = res if k % 2 == 0 else Planes(torch.cat([res.lo, rows.lo[-1:]]), torch.cat([res.hi, rows.hi[-1:]]))
    return rows[0]


def eqz(party: Party, x: AShare, block_bits: int = BLOCK_BITS) -> BShare:
    """[x == 0] in the ring (exact, bit 0). 6 rounds, 14.5 bytes per element per party (w=2)."""
    if x.numel() == 0:
        return BShare(torch.zeros_like(x.lo), torch.zeros_like(x.hi), party.index)
    spec = _eq_spec(block_bits)
    planes, layout = split.split_bool_round(party, x, spec, alpha_map=torch.neg, tag="eq")
    return split.planes_to_bshare(party, _and_tree(party, planes, "eq_tree"), layout, x.shape)


def eq(party: Party, x: AShare, y: Operand) -> BShare:
    """[x == y] (bit 0): exact equality of the ring values x and y (y public: its fixed-point encoding)."""
    return eqz(party, _diff(party, x, y))


def msb_many(party: Party, xs: list[AShare]) -> list[BShare]:
    """msb of several same-shape shares in one call (shared rounds)."""
    out = msb(party, stack(xs))
    return [out[k] for k in range(len(xs))]
