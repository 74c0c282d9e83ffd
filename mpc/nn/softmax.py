"""Softmax on fixed-point shares: exact row max, exp of non-positive inputs, one reciprocal per row.

Steps (x (..., T) scores, optional public keep-mask and causal masking):
  1. Masked positions are set to the public value MASK_FILL (local: x * keep + FILL * (1 - keep)).
  2. m = exact row max (`row_max`: a comparison tree, each level one msb on profile.compare_bits bits and one
     mul_bit); d = x - m <= 0 (local).
  3. e = exp(d) (approx.exp.exp_neg: polynomial base, squarings, clip to exactly 0 below profile.exp_clip), computed
     only at kept positions (gathered by the public mask: a causal mask halves the exp's cost); masked positions
     are exactly 0.
  4. s = sum e in [1, T] (the max's own term is e^0 = 1); r = 1/s by approx.reciprocal on the window [1, 2^k),
     2^k > T, at 30 fractional bits: per row, so its normalisation (A2B of one element per row) is cheap.
  5. softmax = e * r: one truncation per element. (attention uses `softmax_parts` and applies r after the
     value matmul instead, which truncates T x D instead of T x T elements.)
Domain: unmasked scores with |x| < 2^11 (MASK_FILL = -2^12 must stay below all of them; all compared differences
stay below 6144 < 2^13, inside the comparisons' width for compare_bits >= 32 at f = 18). Rows with every position
masked output 0.
Max error: each e carries the exp error (accurate 6e-6 + 1 ulp, fast 2.2e-4), and these add up in the row sum, so
probabilities are off by up to p * (sum of the row's exp errors) / sum(e): measured at (12, 128, 128) with scores in
[-50, 10], causal: 5.7e-5 (accurate), 2.0e-3 (fast); plus the reciprocal's relative error and < 2 ulp.
Cost: the max (T - 1 comparisons per row, ceil(log2 T) levels of msb + mul_bit), exp (one comparison, one mul_bit,
5-6 truncation layers per kept element), the per-row reciprocal, one truncation per element. At (12, 128, 128):
93 rounds and 31 MB per party (accurate), 81 rounds and 25 MB (fast).
Follows PUMA's softmax (Dong et al. 2023, Sec. 4.2) with the exp/reciprocal variants of approx/.
"""

from __future__ import annotations

import math

import torch

from ..approx import exp as approx_exp
from ..approx import poly
from ..approx.profile import ApproxProfile
from ..approx.reciprocal import reciprocal
from ..party import Party
from ..protocols import b2a, compare
from ..ring import RING_BITS
from ..shares import AShare, cat

MASK_FILL = -4096.0  # public score given to masked positions (below every real score)
RECIP_OUT_BITS = 30  # fractional bits of the per-row reciprocal (keeps 1/T precise; the product truncates 30)


def causal_mask(t_q: int, t_k: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Keep-mask (t_q, t_k): query i (at absolute position t_k - t_q + i) sees keys up to its own position."""
    q_pos = torch.arange(t_k - t_q, t_k, device=device).unsqueeze(-1)
    return torch.arange(t_k, device=device).unsqueeze(0) <= q_pos


def _apply_fill(party: Party, x: AShare, keep: torch.Tensor) -> AShare:
    """x where keep, MASK_FILL elsewhere (local; keep is a public bool tensor broadcastable to x)."""
    k = keep.to(device=x.device, dtype=torch.int64)
    fill = party.fxp.encode(MASK_FILL).item()
    return x.mul_public(k).add_public((1 - k) * fill)


def _keep_mask(x: AShare, mask: torch.Tensor | None, causal: bool) -> torch.Tensor | None:
    """The combined public keep-mask (bool, broadcastable to x), or None when nothing is masked."""
    keep = None
    if causal:
        keep = causal_mask(x.shape[-2], x.shape[-1], x.device)
    if mask is not None:
        m = mask.to(device=x.device, dtype=torch.bool)
        keep = m if keep is None else keep & m
    return keep


def row_max(party: Party, x: AShare, bits: int = RING_BITS) -> AShare:
    """Exact max over the last axis, keepdim: a balanced tree, each level one msb (on `bits` bits) + one mul_bit.

    protocols.select.max with a comparison width: exact while pairwise differences stay below 2^(bits-1) ring units.
    """
    cur = x
    while cur.shape[-1] > 1:
        n = cur.shape[-1]
        half = n // 2
        a, b = cur[..., 0:2 * half:2], cur[..., 1:2 * half:2]
        a_wins = compare.msb(party, b - a, bits=bits)  # b - a < 0  <=>  a > b
        best = b + b2a.mul_bit(party, a_wins, a - b)
        cur = best if n % 2 == 0 else cat([best, cur[..., n - 1:]], dim=-1)
    return cur


def _exp_kept(party: Party, d: AShare, keep: torch.Tensor | None, profile: ApproxProfile) -> AShare:
    """exp(d) at kept positions, exact 0 elsewhere; masked positions (public) are skipped, not computed."""
    if keep is None:
        return approx_exp.exp_neg(party, d, profile)
    kept = keep.expand(*d.shape).reshape(-1)
    idx = kept.nonzero().squeeze(-1)  # public positions
    e_kept = approx_exp.exp_neg(party, d.reshape(-1)[idx], profile)
    lo, hi = torch.zeros_like(d.lo).reshape(-1), torch.zeros_like(d.hi).reshape(-1)
    lo[idx], hi[idx] = e_kept.lo, e_kept.hi
    return AShare(lo.reshape(d.shape), hi.reshape(d.shape), d.party)


def softmax_parts(party: Party, x: AShare, profile: ApproxProfile, *, mask: torch.Tensor | None = None,
                  causal: bool = False) -> tuple[AShare, AShare]:
    """Unnormalised e (..., T) at f bits and the per-row r = 1/sum(e) (..., 1) at RECIP_OUT_BITS bits."""
    keep = _keep_mask(x, mask, causal)
    if keep is not None:
        x = _apply_fill(party, x, keep)
    m = row_max(party, x, profile.compare_bits or RING_BITS)  # (..., 1)
    e = _exp_kept(party, x - m.expand(*x.shape), keep, profile)
    total = e.sum(-1, keepdim=True)  # (..., 1) in [1, T]
    hi = max(1, math.ceil(math.log2(x.shape[-1] + 1)))
    return e, reciprocal(party, total, profile, lo=0, hi=hi, out_bits=RECIP_OUT_BITS)


def softmax(party: Party, x: AShare, profile: ApproxProfile, *, mask: torch.Tensor | None = None,
            causal: bool = False) -> AShare:
    """Softmax over the last axis; `mask` is a public keep-mask (True = attend) broadcastable to x."""
    e, r = softmax_parts(party, x, profile, mask=mask, causal=causal)
    return poly.products(party, [(e, r)], RECIP_OUT_BITS)[0]
