"""The plaintext backend of the model definitions (secureinfer.models.arch): float tensors and torch's fused kernels.

`TorchBuilder` casts the checkpoint's weights to one dtype on one device. With `pack` (serving: the fast decoder)
it copies once into the layout torch runs fastest: contiguous nn.Linear (out, in) weights, q|k|v and gate|up fused
into single matrices, optionally int8 weight-only (per-output-channel scales, dequantized inside each block
matmul). Without `pack` (the per-call float64 references) it makes views only: Conv1D weights are transposed views
and fused layers stay separate matmuls whose outputs are concatenated, so a forward never copies the weights.

`TorchOps` runs a forward: F.linear, F.layer_norm, RMSNorm (statistics in float32 for half types, as transformers
does), F.gelu / F.silu, and attention through F.scaled_dot_product_attention with the default 1/sqrt(D) scale.
Grouped-query attention regroups the queries to (B, KV, T*g, d) so each KV head is read once (no repeated keys).
Positions are given per row, (B, T) (or (1, T) for rows that share them); a causal query at position p sees keys
0..p of its row (`arange(key_len) <= p`, one additive mask per forward), so rows of different lengths can share a
batch. Keys and values go through `kv(layer, k, v) -> (keys, values)`: plaintext.KVCache.extend (a growing
cache), fast.cache.KVSlots (slots at absolute positions) or nothing (an encoder). `out_index` (B,) picks each row's
output position for `last_only` (ragged prompts); without it, the last position.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from secureinfer.models.arch import Norm, rope_cos_sin

DTYPES = {"fp64": torch.float64, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
HALF = (torch.bfloat16, torch.float16)

KVFn = Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Linear:
    """y = x W^T (* scale) + b with W (out, in) in the compute dtype, or int8 with per-output-channel scales."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    scale: torch.Tensor | None = None  # (out,) for int8 weights, else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to x (..., in) -> (..., out)."""
        if self.scale is None:
            return F.linear(x, self.weight, self.bias)
        y = F.linear(x, self.weight.to(x.dtype)) * self.scale  # dequantize inside the matmul
        return y + self.bias if self.bias is not None else y

    @property
    def out_features(self) -> int:
        """Number of output features."""
        return int(self.weight.shape[0])


@dataclass(frozen=True)
class Stacked:
    """Linears of one input side by side, run separately, outputs concatenated (no weight copy)."""

    parts: tuple[Linear, ...]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([p(x) for p in self.parts], dim=-1)


@dataclass(frozen=True)
class Attention:
    """One attention block: fused q|k|v and output projections, head counts."""

    qkv: Linear | Stacked
    out: Linear | Stacked
    n_heads: int
    n_kv_heads: int
    head_dim: int


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric int8: (Q (out, in) int8, scale (out,) float32) with W ~ Q * scale[:, None]."""
    w = w.to(torch.float32)
    scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0  # (out,)
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


class TorchBuilder:
    """Weights in `dtype` on `device`: views when not `pack`; packed (fused, contiguous, maybe int8) when `pack`."""

    def __init__(self, dtype: torch.dtype, device: torch.device | str | None = None, *, pack: bool = False,
                 int8: bool = False) -> None:
        if int8 and not pack:
            raise ValueError("int8 weights are packed weights: pass pack=True")
        self.dtype, self.pack, self.int8 = dtype, pack, int8
        self.device = None if device is None else torch.device(device)

    def param(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(device=self.device or t.device, dtype=self.dtype)

    def table(self, t: torch.Tensor) -> torch.Tensor:
        return self.param(t).contiguous() if self.pack else self.param(t)

    def linear(self, weight: torch.Tensor, bias: torch.Tensor | None, *, out_in: bool) -> Linear:
        w = weight if out_in else weight.t()  # (out, in)
        b = None if bias is None else self.param(bias)
        if self.int8:
            q, scale = quantize_int8(w)
            return Linear(q.to(self.device or w.device), b, scale.to(device=self.device or w.device,
                                                                     dtype=self.dtype))
        return Linear(self.param(w).contiguous() if self.pack else self.param(w), b)

    def fuse(self, layers: list[Linear]) -> Linear | Stacked:
        if not self.pack:
            return Stacked(tuple(layers))
        biases = [p.bias for p in layers]
        if any(b is None for b in biases) and any(b is not None for b in biases):
            raise ValueError("fuse needs every layer with a bias or none")
        scales = [p.scale for p in layers]
        return Linear(torch.cat([p.weight for p in layers]), None if biases[0] is None else torch.cat(biases),
                      None if scales[0] is None else torch.cat(scales))

    def attention(self, qkv: Linear | Stacked, out: Linear | Stacked, n_heads: int, n_kv_heads: int,
                  head_dim: int) -> Attention:
        return Attention(qkv, out, n_heads, n_kv_heads, head_dim)


def activation(name: str, x: torch.Tensor) -> torch.Tensor:
    """The named activation with torch's fused kernels: gelu (erf), gelu_tanh, silu, relu."""
    if name == "gelu":
        return F.gelu(x)
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if name == "silu":
        return F.silu(x)
    if name == "relu":
        return F.relu(x)
    raise ValueError(f"unknown activation {name!r}")


def normalize(x: torch.Tensor, norm: Norm) -> torch.Tensor:
    """LayerNorm or RMSNorm of x (..., C); RMSNorm statistics in float32 for half precisions."""
    if norm.center:
        return F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps)
    h = x.float() if x.dtype in HALF else x
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.eps)
    y = norm.weight * h.to(x.dtype)
    return y if norm.bias is None else y + norm.bias


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the hidden states over real tokens: (B, T, C), (B, T) -> (B, C)."""
    m = attention_mask.to(hidden.dtype)[..., None]  # (B, T, 1)
    return (hidden * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x*cos + rotate_half(x)*sin on x (B, T, n, d) with cos, sin (B|1, T, 1, d)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


@dataclass
class TorchOps:
    """One plaintext forward: new tokens at `positions` (B|1, T); keys through `kv` up to `key_len` (see module)."""

    pos: torch.Tensor
    key_len: int
    kv: KVFn | None = None
    out_index: torch.Tensor | None = None  # (B,) output row per sequence for last_only; None: the last
    rope_tables: tuple[torch.Tensor, torch.Tensor] | None = None  # precomputed (max_len, d) cos, sin
    _masks: dict = field(default_factory=dict, init=False, repr=False)  # this forward's attention masks

    def section(self, name: str) -> AbstractContextManager:
        return nullcontext()

    def positions(self, t: int) -> torch.Tensor:
        if self.pos.shape[-1] != t:
            raise ValueError(f"{t} new tokens but {self.pos.shape[-1]} positions")
        return self.pos

    def rotary(self, positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (B|1, T, 1, d) of the positions (from the precomputed tables when given)."""
        if self.rope_tables is not None:
            cos, sin = self.rope_tables[0][positions], self.rope_tables[1][positions]
        else:
            cos, sin = rope_cos_sin(head_dim, theta, positions)
        return cos[:, :, None], sin[:, :, None]

    def embed(self, tokens: torch.Tensor, table: torch.Tensor,
              rows: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()) -> torch.Tensor:
        x = F.embedding(tokens, table)  # (B, T, C)
        for t, index in rows:
            x = x + F.embedding(index.to(t.device), t)
        return x

    def norm(self, x: torch.Tensor, norm: Norm) -> torch.Tensor:
        return normalize(x, norm)

    def dense(self, x: torch.Tensor, layer: Linear | Stacked, name: str | None = None) -> torch.Tensor:
        return layer(x)

    def act(self, x: torch.Tensor, kind: str, name: str) -> torch.Tensor:
        return activation(kind, x)

    def mul(self, a: torch.Tensor, b: torch.Tensor, name: str) -> torch.Tensor:
        return a * b

    def last(self, x: torch.Tensor) -> torch.Tensor:
        """Each row's output position: (B, T, ...) -> (B, 1, ...)."""
        if self.out_index is None:
            return x[:, -1:]
        return x[torch.arange(x.shape[0], device=x.device), self.out_index][:, None]

    def lm_head(self, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return F.linear(x, table)

    def mean_pool(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return mean_pool(x, torch.ones(x.shape[:2], device=x.device) if mask is None else mask)

    def tanh(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)

    def _mask(self, causal: bool, key_mask: torch.Tensor | None, last_only: bool, group: int,
              dtype: torch.dtype) -> torch.Tensor | None:
        """Additive mask (B|1, 1, Tq*group, S) for SDPA, built once per forward and kind."""
        key = (causal, key_mask is None, last_only, group)
        if key in self._masks:
            return self._masks[key]
        if causal:
            pos = self.last(self.pos) if last_only else self.pos  # (B|1, Tq)
            seen = torch.arange(self.key_len, device=pos.device) <= pos[:, None, :, None]  # (B|1, 1, Tq, S)
        elif key_mask is not None:
            seen = key_mask.bool()[:, None, None, :]  # (B, 1, 1, S): padded keys are never attended
        else:
            self._masks[key] = None
            return None
        if group > 1:
            b, _, tq, s = seen.shape
            seen = seen[:, :, :, None].expand(b, 1, tq, group, s).reshape(b, 1, tq * group, s)
        mask = torch.zeros(seen.shape, dtype=dtype, device=seen.device).masked_fill_(~seen, float("-inf"))
        self._masks[key] = mask
        return mask

    def attention(self, x: torch.Tensor, blk: Attention, layer: int, *, causal: bool,
                  key_mask: torch.Tensor | None = None, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                  last_only: bool = False) -> torch.Tensor:
        """Self-attention of x (B, T, C) -> (B, T, C), or (B, 1, C) at each row's output position."""
        b, t, _ = x.shape
        nh, nkv, d = blk.n_heads, blk.n_kv_heads, blk.head_dim
        g = nh // nkv
        q, k, v = blk.qkv(x).split([nh * d, nkv * d, nkv * d], dim=-1)
        q, k, v = q.view(b, t, nh, d), k.view(b, t, nkv, d), v.view(b, t, nkv, d)
        if rope is not None:
            q, k = _rope(q, *rope), _rope(k, *rope)
        k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, KV, T, d)
        if self.kv is not None:
            k, v = self.kv(layer, k, v)  # (B, KV, S, d)
        if last_only:
            q = self.last(q)  # (B, 1, H, d)
        tq = q.shape[1]
        mask = self._mask(causal, key_mask, last_only, g, x.dtype)
        if g == 1:
            a = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, attn_mask=mask)  # (B, H, Tq, d)
            a = a.transpose(1, 2).reshape(b, tq, nh * d)
        else:  # query head kv*g + j reads KV head kv: rows (t, j) of group kv
            qg = q.view(b, tq, nkv, g, d).permute(0, 2, 1, 3, 4).reshape(b, nkv, tq * g, d)
            a = F.scaled_dot_product_attention(qg, k, v, attn_mask=mask)  # (B, KV, Tq*g, d)
            a = a.view(b, nkv, tq, g, d).permute(0, 2, 1, 3, 4).reshape(b, tq, nh * d)
        return blk.out(a)
