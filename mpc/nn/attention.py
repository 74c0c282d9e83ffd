"""Multi-head attention on fixed-point shares: fused QKV projection, rotary embeddings, grouped KV heads.

Steps for x (B, T, C), weights (in, out) secret:
  1. q, k, v = x @ [Wq | Wk | Wv] + b: one matmul and one truncation (linear.linear_many).
  2. Heads: q (B, H, T, D), k and v (B, Hkv, T, D); optional rotary embeddings with public cos/sin (encoded with
     61 - f - 16 fractional bits, so |q|, |k| < 2^16): x * cos + rotate_half(x) * sin summed as terms, one
     truncation for q and k together.
  3. Cached keys/values (B, Hkv, Tpast, D), if given, are concatenated before the new ones (local).
  4. KV heads are repeated H / Hkv times (grouped-query attention; local indexing).
  5. scores = q @ k^T * scale: the scale is folded into the one truncation (a power of two: an exact shift;
     otherwise a constant with 61 - 2f - 8 = 17 fractional bits, which needs |scaled scores| < 2^8).
  6. e, r = softmax_parts(scores) (exact max, exp, per-row reciprocal); out = (e @ v) * r: two truncations of
     (B, H, T, D) instead of normalising the (B, H, T, T) probabilities first.
  7. Merge heads, output projection (one matmul, one truncation).
Rounds: 2 (QKV) + 2 (rotary) + 2 (scores) + softmax + 2 + 2 + 2. Bytes: dominated by the softmax (max tree,
exp); at B=1, T=128, C=384, 12 heads: 101 rounds, 35 MB per party (accurate), 89 rounds, 30 MB (fast), causal.
Error: the softmax's plus a few ulp per truncation (4.9e-5 accurate, 2.8e-3 fast at that size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import ring
from ..approx import poly
from ..approx.profile import ApproxProfile
from ..party import Party
from ..shares import AShare, cat
from .linear import linear, linear_many
from .softmax import RECIP_OUT_BITS, softmax_parts

SCORE_BOUND_BITS = 8  # |q.k * scale| < 2^8 for the non-power-of-two scale constant


@dataclass(frozen=True)
class AttentionWeights:
    """Secret projection weights (in, out) and optional biases (out,) of one attention block."""

    wq: AShare
    wk: AShare
    wv: AShare
    wo: AShare
    bq: AShare | None = None
    bk: AShare | None = None
    bv: AShare | None = None
    bo: AShare | None = None


@dataclass(frozen=True)
class AttentionConfig:
    """Head layout and masking of one attention block."""

    n_heads: int
    n_kv_heads: int | None = None  # None: same as n_heads (no grouping)
    causal: bool = False

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    def __post_init__(self) -> None:
        if self.n_heads < 1 or self.kv_heads < 1 or self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads={self.n_heads} must be a positive multiple of n_kv_heads={self.kv_heads}")


def split_heads(x: AShare, n_heads: int) -> AShare:
    """(B, T, H*D) -> (B, H, T, D) (local)."""
    b, t, c = x.shape
    return x.reshape(b, t, n_heads, c // n_heads).permute(0, 2, 1, 3)


def merge_heads(x: AShare) -> AShare:
    """(B, H, T, D) -> (B, T, H*D) (local)."""
    b, h, t, d = x.shape
    return x.permute(0, 2, 1, 3).contiguous().reshape(b, t, h * d)


def _rotate_half(t: torch.Tensor) -> torch.Tensor:
    half = t.shape[-1] // 2
    return torch.cat([-t[..., half:], t[..., :half]], dim=-1)


ROPE_BITS_HEADROOM = 16  # |q|, |k| < 2^16 when cos/sin carry 61 - f - 16 fractional bits


def _rotary_term(x: AShare, cos: torch.Tensor, sin: torch.Tensor, bits: int) -> torch.Tensor:
    """This party's term of x * cos + rotate_half(x) * sin with cos/sin (T, D) encoded at `bits` fractional bits."""
    scale = float(1 << bits)
    c = torch.round(cos.to(torch.float64) * scale).to(torch.int64).to(x.device)
    s = torch.round(sin.to(torch.float64) * scale).to(torch.int64).to(x.device)
    return x.lo * c + _rotate_half(x.lo) * s


def rotary(party: Party, xs: list[AShare], cos: torch.Tensor, sin: torch.Tensor) -> list[AShare]:
    """Rotary position embeddings (HF rotate_half convention) on several (B, H, T, D) shares, one truncation."""
    bits = 61 - party.fxp.frac_bits - ROPE_BITS_HEADROOM  # |x| * 2^(f + bits) < 2^61
    return poly.truncate_terms(party, [_rotary_term(x, cos, sin, bits) for x in xs], bits)


def repeat_kv(x: AShare, n_rep: int) -> AShare:
    """(B, Hkv, T, D) -> (B, Hkv * n_rep, T, D), each KV head serving n_rep query heads (local)."""
    if n_rep == 1:
        return x
    b, h, t, d = x.shape
    return x.unsqueeze(2).expand(b, h, n_rep, t, d).reshape(b, h * n_rep, t, d)


def _scores(party: Party, q: AShare, k: AShare, scale: float) -> AShare:
    """q @ k^T * scale with the scale folded into the one truncation."""
    f = party.fxp.frac_bits
    term = ring.matmul(q.lo, (k.lo + k.hi).transpose(-1, -2)) + ring.matmul(q.hi, k.lo.transpose(-1, -2))
    log2 = math.log2(scale)
    if log2 == round(log2) and f - round(log2) > 0:
        return poly.truncate_terms(party, [term], f - round(log2))[0]
    g = 61 - 2 * f - SCORE_BOUND_BITS
    return poly.truncate_terms(party, [term * poly.encode(scale, g)], f + g)[0]


def attend(party: Party, q: AShare, k: AShare, v: AShare, profile: ApproxProfile, *, scale: float,
           mask: torch.Tensor | None = None, causal: bool = False) -> AShare:
    """softmax(q k^T * scale + masks) @ v for q (B, H, Tq, D), k and v (B, H, Tk, D) -> (B, H, Tq, D)."""
    scores = _scores(party, q, k, scale)  # (B, H, Tq, Tk)
    e, r = softmax_parts(party, scores, profile, mask=mask, causal=causal)
    ev = poly.truncate_terms(party, [ring.matmul(e.lo, v.lo + v.hi) + ring.matmul(e.hi, v.lo)],
                             party.fxp.frac_bits)[0]  # (B, H, Tq, D)
    return poly.products(party, [(ev, r)], RECIP_OUT_BITS)[0]


def multi_head_attention(party: Party, x: AShare, w: AttentionWeights, cfg: AttentionConfig,
                         profile: ApproxProfile, *, key_mask: torch.Tensor | None = None,
                         rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                         past: tuple[AShare, AShare] | None = None) -> tuple[AShare, tuple[AShare, AShare]]:
    """Attention block on x (B, T, C); returns the output (B, T, C) and the (k, v) cache (B, Hkv, Tk, D).

    key_mask: public (B, Tk) keep-mask for padding; rope: public (cos, sin) of shape (T, D) for the new positions;
    past: cached (k, v) of earlier positions (already rotated).
    """
    q, k, v = linear_many(party, x, [w.wq, w.wk, w.wv], [w.bq, w.bk, w.bv])
    q, k, v = split_heads(q, cfg.n_heads), split_heads(k, cfg.kv_heads), split_heads(v, cfg.kv_heads)
    if rope is not None:
        q, k = rotary(party, [q, k], *rope)
    if past is not None:
        k, v = cat([past[0], k], dim=2), cat([past[1], v], dim=2)
    n_rep = cfg.n_heads // cfg.kv_heads
    mask = key_mask[:, None, None, :] if key_mask is not None else None  # (B, 1, 1, Tk)
    out = attend(party, q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), profile, scale=1.0 / math.sqrt(q.shape[-1]),
                 mask=mask, causal=cfg.causal)
    return linear(party, merge_heads(out), w.wo, w.bo), (k, v)
