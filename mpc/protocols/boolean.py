"""Boolean protocols on XOR replicated shares: word-level AND and OR, and A2B (arithmetic to boolean sharing).

AND (ABY3, Mohassel-Rindal 2018, Sec. 3.2, in GF(2)): local cross terms x_i&y_i ^ x_i&y_{i+1} ^ x_{i+1}&y_i plus a
fresh XOR-sharing of zero, then `mul.reshare`. 1 round, 8 bytes per 64-bit word per party.

A2B of 64-bit values with blocks of w = 2 bits: the split round (split.py) gives per block G, P and the in-block
sums; 5 Sklansky levels over 32 blocks (prefix.py) give the block carries; 1 AND round on bit planes (planes.py)
folds them in. 7 rounds; 37.3 bytes per element per party (large batches). w = 4: 6 rounds, 41.1 bytes; w = 1:
7 rounds, 59.8 bytes. For comparison, a carry-save layer plus a word-level Kogge-Stone adder costs 8 rounds and
~104 bytes.
"""

from __future__ import annotations

import functools

import torch

from ..party import Party
from ..ring import RING_BITS
from ..shares import AShare, BShare
from . import mul
from .planes import and_planes, gather, row_index
from .prefix import prefix_plan, run_prefix
from .split import BlockFn, BlockSpec, make_spec, split_bool_round

BLOCK_BITS = 2  # default block width of the split round (1, 2 or 4): 2 minimises bytes, 4 saves one round


# --- word-level AND ------------------------------------------------------------------------------------------------


def and_(party: Party, x: BShare, y: BShare) -> BShare:
    """Bitwise AND of packed 64-bit boolean shares. 1 round, 8 bytes per element per party."""
    x._check(y)
    z = (x.lo & (y.lo ^ y.hi)) ^ (x.hi & y.lo)
    return mul.reshare(party, z ^ party.zero_xor_share(z.shape), kind=BShare, tag="and")


def or_(party: Party, x: BShare, y: BShare) -> BShare:
    """Bitwise OR: x ^ y ^ (x & y). 1 round."""
    return x ^ y ^ and_(party, x, y)


# --- A2B -----------------------------------------------------------------------------------------------------------


def bit_of_sum(j: int) -> BlockFn:
    """Bit j of a + v (the in-block sum with carry-in 0)."""
    return block_fn(("sum", j), lambda a, b: ((a + b) >> j) & 1)


def all_propagate(j: int) -> BlockFn:
    """The low j bits all propagate: (a ^ v) mod 2^j == 2^j - 1 (1 for j = 0)."""
    mask = (1 << j) - 1
    return block_fn(("prop", j), lambda a, b: int(((a ^ b) & mask) == mask))


_FNS: dict = {}


def block_fn(key, fn: BlockFn) -> BlockFn:
    """One function object per key, so tables are shared and specs are hashable by identity."""
    return _FNS.setdefault(key, fn)


def block_generate(w: int) -> BlockFn:
    """Carry out of a w-bit block: bit w of a + v."""
    return bit_of_sum(w)


def block_propagate(w: int) -> BlockFn:
    """All w bits propagate: a ^ v == 2^w - 1."""
    return all_propagate(w)


@functools.lru_cache(maxsize=None)
def _a2b_spec(w: int) -> tuple[BlockSpec, dict, tuple]:
    nb = RING_BITS // w
    plan, need_g, need_p = prefix_plan(nb, frozenset(range(nb - 1)))
    outputs, index = [], {}

    def add(key, block, fn):
        index[key] = len(outputs)
        outputs.append((block, fn))

    for b in range(nb):
        if b in need_g:
            add(("G", b), b, block_generate(w))
        if b in need_p:
            add(("P", b), b, block_propagate(w))
        for j in range(w):
            add(("X", b, j), b, bit_of_sum(j))  # in-block sum bit j, carry-in 0
        if b > 0:
            for j in range(2, w):
                add(("Y", b, j), b, all_propagate(j))  # bits below j all propagate (Y_1 is X_0)
    return make_spec(w, nb, outputs), index, plan


@functools.lru_cache(maxsize=None)
def _a2b_rows(w: int) -> tuple[tuple[int, ...], ...]:
    """Rows of the split round's output that A2B reads, as index tuples (see `a2b`)."""
    spec, index, _ = _a2b_spec(w)
    nb = spec.blocks
    g_rows = tuple(index.get(("G", b), 0) for b in range(nb))  # row 0 where the prefix plan never reads G_b
    p_rows = tuple(index.get(("P", b), 0) for b in range(nb))
    sum_rows = tuple(index[("X", b, j)] for b in range(nb) for j in range(w))  # the 64 bits, in order
    first_bits = tuple(b * w for b in range(1, nb))  # bit 0 of blocks 1..: XOR the carry in
    carries = tuple(range(nb - 1))  # the carry into block b is G_{b-1}
    and_rows = tuple(index[("X", b, 0) if j == 1 else ("Y", b, j)] for b in range(1, nb) for j in range(1, w))
    and_carries = tuple(b - 1 for b in range(1, nb) for j in range(1, w))
    upper_bits = tuple(b * w + j for b in range(1, nb) for j in range(1, w))
    return g_rows, p_rows, sum_rows, first_bits, carries, and_rows, and_carries, upper_bits


def a2b(party: Party, x: AShare, block_bits: int = BLOCK_BITS) -> BShare:
    """Arithmetic to boolean sharing of 64-bit values (same shape). 7 rounds; 37.3 bytes per element per party (w=2).

    Bit j of block b is its in-block sum bit X_{b,j} (carry-in 0) XOR the carry in: for j = 0 the carry C_b =
    G_{b-1} itself, for j > 0 the carry ANDed with "the bits below j all propagate" (X_{b,0} for j = 1, Y_{b,j} above)."""
    w = block_bits
    spec, _, plan = _a2b_spec(w)
    if x.numel() == 0:
        return BShare(torch.zeros_like(x.lo), torch.zeros_like(x.hi), party.index)
    device = x.lo.device
    g_rows, p_rows, sum_rows, first_bits, carries, and_rows, and_carries, upper_bits = \
        (row_index(rows, device) for rows in _a2b_rows(w))
    planes, layout = split_bool_round(party, x, spec, tag="a2b")
    carry = run_prefix(party, gather(planes, g_rows), gather(planes, p_rows), plan, tag="a2b_prefix")
    bits = gather(planes, sum_rows)  # (64, total_bytes)
    if w > 1:
        res = and_planes(party, gather(planes, and_rows), gather(carry, and_carries), tag="a2b_sum")
        bits.lo[upper_bits] ^= res.lo
        bits.hi[upper_bits] ^= res.hi
    bits.lo[first_bits] ^= carry.lo[carries]
    bits.hi[first_bits] ^= carry.hi[carries]
    lo, hi = layout.words(bits.lo), layout.words(bits.hi)
    return BShare(lo.reshape(x.shape), hi.reshape(x.shape), party.index)
