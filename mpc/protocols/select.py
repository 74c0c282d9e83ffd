"""Selection by a shared bit, ReLU, and max by a comparison tree.

select(c, t, f) = f + c*(t - f): one `b2a.mul_bit` (1 round, 16 bytes per element per party).
relu(x) = x - msb(x)*x: msb then mul_bit: 7 rounds, 20.4 + 16 = 36.4 bytes per element per party.
max along a dim (n values): ceil(log2 n) levels; each level compares all its pairs in ONE msb call and selects in ONE
mul_bit call (an odd leftover passes to the next level untouched): 7 rounds per level, about 36.4 bytes per pair
per party on large batches. For one row of n = 128: 7 levels, 49 rounds, 127 comparisons, ~4.96 KB per party
(the small top levels pay byte padding); many rows at once approach 127 * 36.4 = 4.6 KB per row.
Comparisons are exact while the compared differences stay below 2^63 ring units (any fixed-point values).
"""

from __future__ import annotations

from ..party import Party
from ..shares import AShare, BShare, cat
from . import b2a, compare


def select(party: Party, cond: BShare, if_true: AShare, if_false: AShare) -> AShare:
    """if_true where bit 0 of cond is 1, else if_false (elementwise). 1 round."""
    return if_false + b2a.mul_bit(party, cond, if_true - if_false)


def relu(party: Party, x: AShare) -> AShare:
    """max(x, 0): x - [x < 0]*x. 7 rounds."""
    return x - b2a.mul_bit(party, compare.msb(party, x), x)


def max(party: Party, x: AShare, dim: int = -1, keepdim: bool = False) -> AShare:  # noqa: A001 - mirrors torch.max
    """Maximum along `dim` by a balanced comparison tree (one batched msb + one mul_bit per level)."""
    dim = dim % len(x.shape) if len(x.shape) else 0
    if x.shape[dim] == 0:
        raise ValueError("max of an empty dimension")
    cur = x.map(lambda t: t.movedim(dim, -1))  # (..., n)
    while cur.shape[-1] > 1:
        n = cur.shape[-1]
        half = n // 2
        a, b = cur[..., 0:2 * half:2], cur[..., 1:2 * half:2]
        diff = b - a
        a_wins = compare.msb(party, diff)  # b - a < 0  <=>  a > b
        best = b + b2a.mul_bit(party, a_wins, a - b)
        cur = best if n % 2 == 0 else cat([best, cur[..., n - 1:]], dim=-1)
    out = cur[..., 0]
    if keepdim:
        out = out.unsqueeze(dim)
    return out


def min(party: Party, x: AShare, dim: int = -1, keepdim: bool = False) -> AShare:  # noqa: A001
    """Minimum along `dim`: -max(-x)."""
    return -max(party, -x, dim, keepdim)

