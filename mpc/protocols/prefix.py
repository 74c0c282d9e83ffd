"""Parallel prefix carries on bit-plane shares: a Sklansky network (Sklansky 1960; fewer ANDs than Kogge-Stone at
the same depth), trimmed by liveness to the carries actually needed; one AND round per level."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch

from ..party import Party
from .planes import Planes, and_planes, gather


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


@dataclass(frozen=True)
class _Level:
    """One level of a plan as row indices: the AND's left rows (of P) and right rows (of G stacked over P), in the
    plan's order (per op: its G entry, then its P entry), and where each result goes (G rows XORed, P rows set)."""

    left: torch.Tensor
    right: torch.Tensor
    g_rows: torch.Tensor
    g_results: torch.Tensor
    p_rows: torch.Tensor
    p_results: torch.Tensor


@functools.lru_cache(maxsize=None)
def _levels(plan: tuple[tuple[PrefixOp, ...], ...], blocks: int, device: torch.device) -> tuple[_Level, ...]:
    """The plan as index tensors on `device` (built once per plan, block count and device)."""
    out = []
    for level in plan:
        left, right, g_rows, g_results, p_rows, p_results = [], [], [], [], [], []
        for op in level:
            if op.do_g:
                g_rows.append(op.u)
                g_results.append(len(left))
                left.append(op.u)
                right.append(op.low)
            if op.do_p:
                p_rows.append(op.u)
                p_results.append(len(left))
                left.append(op.u)
                right.append(blocks + op.low)
        out.append(_Level(*(torch.tensor(v, dtype=torch.int64, device=device)
                            for v in (left, right, g_rows, g_results, p_rows, p_results))))
    return tuple(out)


def run_prefix(party: Party, g: Planes, p: Planes, plan: Sequence[Sequence[PrefixOp]], tag: str = "prefix") -> Planes:
    """Run a prefix plan on plane shares: g and p are (blocks, nbytes), row b block b's generate and propagate (rows
    the plan never reads may hold anything); returns the final G rows (row u: the generate of blocks 0..u). One AND
    round per level, all of a level's ANDs in one message; the rows move as whole tensors (a few ops per level)."""
    blocks = g.lo.shape[0]
    G, P = Planes(g.lo.clone(), g.hi.clone()), Planes(p.lo.clone(), p.hi.clone())
    for level in _levels(tuple(tuple(lv) for lv in plan), blocks, g.lo.device):
        both = Planes(torch.cat([G.lo, P.lo]), torch.cat([G.hi, P.hi]))
        res = and_planes(party, gather(P, level.left), gather(both, level.right), tag)
        if level.g_rows.numel():
            G.lo[level.g_rows] ^= res.lo[level.g_results]
            G.hi[level.g_rows] ^= res.hi[level.g_results]
        if level.p_rows.numel():
            P.lo[level.p_rows] = res.lo[level.p_results]
            P.hi[level.p_rows] = res.hi[level.p_results]
    return G
