"""Parallel prefix carries on bit-plane shares: a Sklansky network (Sklansky 1960; fewer ANDs than Kogge-Stone at
the same depth), trimmed by liveness to the carries actually needed; one AND round per level."""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

from ..party import Party
from .planes import and_planes, stack_planes


class PrefixOp(NamedTuple):
    """G_u ^= P_u & G_L (if do_g) and P_u &= P_L (if do_p), both from the values before the level."""

    u: int
    low: int
    do_g: bool
    do_p: bool


@functools.lru_cache(maxsize=None)
def prefix_plan(n: int, outputs: frozenset) -> tuple[tuple[tuple[PrefixOp, ...], ...], frozenset, frozenset]:
    """Sklansky levels over n blocks, keeping only ops whose results reach `outputs` (final G indices).

    Returns (levels, G inputs needed, P inputs needed). Final G_u is the generate of blocks 0..u."""
    levels, k = [], 0
    while (1 << k) < n:
        half = 1 << k
        level = []
        for gs in range(0, n, 2 * half):
            low = gs + half - 1
            level.extend((u, low) for u in range(gs + half, min(gs + 2 * half, n)))
        levels.append(level)
        k += 1
    need_g, need_p, plan = set(outputs), set(), []
    for level in reversed(levels):
        ops, new_g, new_p = [], set(need_g), set(need_p)
        for u, low in level:
            do_g, do_p = u in need_g, u in need_p
            new_g.discard(u)
            new_p.discard(u)
            if do_g:
                new_g.update((u, low))
                new_p.add(u)
            if do_p:
                new_p.update((u, low))
            if do_g or do_p:
                ops.append(PrefixOp(u, low, do_g, do_p))
        need_g, need_p = new_g, new_p
        if ops:
            plan.append(tuple(ops))
    return tuple(reversed(plan)), frozenset(need_g), frozenset(need_p)


def run_prefix(party: Party, g: dict, p: dict, plan: Sequence[Sequence[PrefixOp]], tag: str = "prefix") -> dict:
    """Run a prefix plan on plane shares (dicts block -> Planes of shape (nbytes,)); one AND round per level."""
    g, p = dict(g), dict(p)
    for level in plan:
        lefts, rights = [], []
        for op in level:
            if op.do_g:
                lefts.append(p[op.u])
                rights.append(g[op.low])
            if op.do_p:
                lefts.append(p[op.u])
                rights.append(p[op.low])
        res = and_planes(party, stack_planes(lefts), stack_planes(rights), tag)
        k = 0
        for op in level:
            if op.do_g:
                g[op.u] = g[op.u] ^ res[k]
                k += 1
            if op.do_p:
                p[op.u] = res[k]
                k += 1
    return g
