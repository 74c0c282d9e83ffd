"""Building blocks shared by the secure BERT, GPT-2 and LLaMA forwards: prepared weights, attention with a secret
KV cache, the embedding lookup and the LM head.

Prepared weights. A secret matrix W is held by party i as (W_i, W_{i+1}); the local term of x @ W is
x_i (W_i + W_{i+1}) + x_{i+1} W_i. `Dense` and `Table` keep (W_i, W_i + W_{i+1}) instead of (W_i, W_{i+1}), so the
sum is formed once at load time rather than on every call (at decode time, one token at a time, that sum would
cost as much as the matrix-vector product itself); memory is unchanged. Hugging Face nn.Linear weights (out, in)
are transposed once into contiguous (in, out) (torch's int64 matmul is ~1.3x slower on a transposed view).
Costs: `dense` = one ring matmul per component and one truncation (2 rounds, one truncation per output element);
`embed` = one-hot (ring 0/1) @ table and one resharing (1 round, one ring element per output, no truncation);
`lm_head` = x @ table^T and one truncation; `attention` = nn.attention's steps (fused QKV, rotary, cache, grouped
heads, attend, output projection); `normalize` = nn.norm's LayerNorm/RMSNorm, or with `shift_bits` = k > 0 a wide
variant for rows whose sum of squares S exceeds nn.norm's 2^25 window (LLMs' massive activations: SmolLM2's
residual stream reaches |x| ~ 2.3e4, S ~ 5e8): (1) one truncation call makes d / 2^k (at f bits) and d * gamma
(at 2^(2f - k)); (2) one call truncates S * 2^(2f - k) = sum d (d / 2^k) and d * gamma by f - k bits, so S arrives at
f bits without ever exceeding 2^61 (S < 2^(25 + k)); (3) rsqrt on the window [2^-f, 2^(25 + k)); (4) the product.
One truncation call (2 rounds) more than nn.norm; S's relative error stays ~2^-f (unbiased rounding).
Public weights (open models, `SecureStrategy(public_weights=True)`): every weight may instead be a public ring
tensor (fixed point at f bits, the same at every party). `Dense` and `Table` then keep the matrix itself, and the
products are local: x @ W is (x_i @ W, x_{i+1} @ W), a replicated share with no message; `dense` and `lm_head`
truncate it with `trunc.trunc_replicated` (2 rounds, 43 bytes per output element over the parties at f = 18,
against 59 for the secret-weight term), and `embed` needs no message at all (the one-hot product is exact).
Public biases, tables and norm gains are added to component x_0 / multiplied locally (`shares.add`, `poly.cross`).
Only weights are public: activations, token ids and the cache stay secret shares.
Nothing here opens a value. Public: positions, token types, padding masks and
sequence lengths (they shape the computation); secret: token ids (one-hot shares), weights (unless public),
activations, cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .. import ring
from ..approx import poly
from ..approx.profile import ApproxProfile
from ..approx.rsqrt import rsqrt
from ..nn import attention as nn_attention
from ..nn import norm as nn_norm
from ..party import Party
from ..protocols import mul, trunc
from ..shares import AShare, add, cat
from .trace import op

_MV_ROWS = 16  # x @ W^T for at most this many rows runs as matrix-vector products (fast on a (N, K) layout)


Weight = AShare | torch.Tensor  # a secret share, or a public ring tensor (fixed point at f bits)


@dataclass(frozen=True)
class Dense:
    """A linear layer prepared for x @ W + b, W (in, out). Secret W: this party's W_i (`lo`) and W_i + W_{i+1}
    (`total`); public W: the ring matrix itself as `lo`, `total` None. The bias is secret, public or None."""

    lo: torch.Tensor
    total: torch.Tensor | None
    bias: Weight | None = None

    @classmethod
    def from_share(cls, weight: Weight, bias: Weight | None = None, *, out_in: bool = False) -> "Dense":
        """From a weight share or public ring matrix (in, out), or (out, in) nn.Linear layout when `out_in`
        (transposed once here)."""
        if isinstance(weight, AShare):
            if out_in:
                weight = weight.transpose(0, 1)
            return cls(weight.lo.contiguous(), (weight.lo + weight.hi).contiguous(), bias)
        if isinstance(bias, AShare):
            raise ValueError("a public weight needs a public bias (or none)")
        return cls((weight.t() if out_in else weight).contiguous(), None, bias)

    @property
    def public(self) -> bool:
        return self.total is None

    @classmethod
    def fuse(cls, layers: list["Dense"]) -> "Dense":
        """Several layers of one input side by side (e.g. Q, K, V): one matmul and one truncation for all."""
        if len({d.public for d in layers}) != 1:
            raise ValueError("fuse needs every layer secret or every layer public")
        biases = [d.bias for d in layers]
        bias = None
        if any(b is not None for b in biases):
            if any(b is None for b in biases):
                raise ValueError("fuse needs every layer with a bias or none")
            bias = torch.cat(biases, dim=0) if layers[0].public else cat(biases, dim=0)
        lo = torch.cat([d.lo for d in layers], 1)
        return cls(lo, None if layers[0].public else torch.cat([d.total for d in layers], 1), bias)

    @property
    def out_features(self) -> int:
        return self.lo.shape[1]


def dense_term(x: AShare, d: Dense) -> torch.Tensor:
    """This party's 3-out-of-3 term of x @ W at scale 2^(2f) (secret W)."""
    return ring.matmul(x.lo, d.total) + ring.matmul(x.hi, d.lo)


def dense(party: Party, x: AShare, d: Dense) -> AShare:
    """x (..., in) @ W + b -> (..., out): one truncation. 2 rounds. Public W: the product is local (a replicated
    share) and only the truncation sends anything."""
    if x.shape[-1] != d.lo.shape[0]:
        raise ValueError(f"dense: x has {x.shape[-1]} features, weight expects {d.lo.shape[0]}")
    if d.public:
        y = trunc.trunc_replicated(party, x.matmul_public(d.lo), party.fxp.frac_bits)
    else:
        y = poly.truncate_terms(party, [dense_term(x, d)], party.fxp.frac_bits)[0]
    return add(y, d.bias)


@dataclass(frozen=True)
class Table:
    """A (V, C) table (token embeddings, possibly tied to the LM head): secret, T_i and T_i + T_{i+1}; public, the
    ring table itself as `lo` and `total` None."""

    lo: torch.Tensor
    total: torch.Tensor | None

    @classmethod
    def from_share(cls, table: Weight) -> "Table":
        if isinstance(table, AShare):
            return cls(table.lo.contiguous(), (table.lo + table.hi).contiguous())
        return cls(table.contiguous(), None)

    @property
    def public(self) -> bool:
        return self.total is None


def embed(party: Party, onehot: AShare, table: Table) -> AShare:
    """One-hot rows (..., V) of ring 0/1 @ table (V, C) -> (..., C) at the table's scale, no truncation. Secret
    table: 1 round (a resharing); public table: local, no message."""
    if onehot.shape[-1] != table.lo.shape[0]:
        raise ValueError(f"one-hot width {onehot.shape[-1]} does not match the table's {table.lo.shape[0]} rows")
    if table.public:
        return onehot.matmul_public(table.lo)
    z = ring.matmul(onehot.lo, table.total) + ring.matmul(onehot.hi, table.lo)
    return mul.reshare(party, z + party.zero_share(z.shape), tag="embed")


def _times_transpose(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x (..., K) @ w^T for w (N, K): matrix-vector products for few rows (10x faster than a transposed view)."""
    rows = x.reshape(-1, x.shape[-1])
    if rows.shape[0] <= _MV_ROWS and x.device.type == "cpu":
        out = torch.stack([torch.mv(w, r) for r in rows])
    else:
        out = ring.matmul(rows, w.t())
    return out.reshape(*x.shape[:-1], w.shape[0])


def lm_head(party: Party, x: AShare, table: Table) -> AShare:
    """Logits x (..., C) @ table^T -> (..., V): one truncation. 2 rounds (public table: a local product)."""
    if table.public:
        y = x.map(lambda t: _times_transpose(t, table.lo))
        return trunc.trunc_replicated(party, y, party.fxp.frac_bits)
    term = _times_transpose(x.lo, table.total) + _times_transpose(x.hi, table.lo)
    return poly.truncate_terms(party, [term], party.fxp.frac_bits)[0]


@dataclass
class SecretKVCache:
    """Per-layer secret keys and values (B, Hkv, S, D) of the positions seen so far; each party holds its shares."""

    keys: list[AShare | None] = field(default_factory=list)
    values: list[AShare | None] = field(default_factory=list)

    @classmethod
    def empty(cls, n_layers: int) -> "SecretKVCache":
        return cls([None] * n_layers, [None] * n_layers)

    @property
    def length(self) -> int:
        """Number of cached positions (public)."""
        return 0 if not self.keys or self.keys[0] is None else int(self.keys[0].shape[2])

    def extend(self, layer: int, k: AShare, v: AShare) -> tuple[AShare, AShare]:
        """Append this step's k, v for `layer` (local); returns all keys and values so far."""
        if self.keys[layer] is not None:
            k, v = cat([self.keys[layer], k], dim=2), cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


@dataclass(frozen=True)
class AttentionBlock:
    """One attention block's prepared weights: fused QKV (queries pre-scaled by 1/sqrt(D)) and output projection."""

    qkv: Dense
    out: Dense
    n_heads: int
    n_kv_heads: int
    head_dim: int


def attention(party: Party, x: AShare, blk: AttentionBlock, profile: ApproxProfile, *, causal: bool,
              key_mask: torch.Tensor | None = None, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
              cache: SecretKVCache | None = None, layer: int = 0, last_only: bool = False) -> AShare:
    """Self-attention on x (B, T, C) -> (B, T, C), or (B, 1, C) for the last position only when `last_only`.

    The 1/sqrt(D) scale is folded into the query weights by the owner, so scores truncate by exactly f bits.
    key_mask: public (B, S) keep-mask; rope: public (cos, sin) (T, D) for the new positions; cache: secret KV cache
    extended in place with this step's (rotated) keys and values.
    """
    h, hkv, d = blk.n_heads, blk.n_kv_heads, blk.head_dim
    with op(party, "attn.qkv"):
        fused = dense(party, x, blk.qkv)  # (B, T, (H + 2 Hkv) D)
    q = nn_attention.split_heads(fused[..., : h * d], h)  # (B, H, T, D)
    k = nn_attention.split_heads(fused[..., h * d: (h + hkv) * d], hkv)  # (B, Hkv, T, D)
    v = nn_attention.split_heads(fused[..., (h + hkv) * d:], hkv)
    if rope is not None:
        with op(party, "attn.rope"):
            q, k = nn_attention.rotary(party, [q, k], *rope)
    if cache is not None:
        k, v = cache.extend(layer, k, v)
    if last_only:
        q = q[:, :, -1:]
    mask = key_mask[:, None, None, :] if key_mask is not None else None  # (B, 1, 1, S)
    with op(party, "attn.core"):
        o = nn_attention.attend(party, q, nn_attention.repeat_kv(k, h // hkv), nn_attention.repeat_kv(v, h // hkv),
                                profile, scale=1.0, mask=mask, causal=causal)  # (B, H, Tq, D)
    with op(party, "attn.out"):
        return dense(party, nn_attention.merge_heads(o), blk.out)


def normalize(party: Party, x: AShare, gamma: Weight | None, beta: Weight | None, profile: ApproxProfile, *,
              eps: float, center: bool, shift_bits: int = 0) -> AShare:
    """LayerNorm (`center`) or RMSNorm over the last axis; `shift_bits` > 0 widens the domain (module docstring).
    gamma and beta: secret, public or None."""
    if shift_bits == 0:
        if center:
            return nn_norm.layernorm(party, x, gamma, beta, profile, eps=eps)
        return add(nn_norm.rmsnorm(party, x, gamma, profile, eps=eps), beta)
    f, c, k = party.fxp.frac_bits, x.shape[-1], shift_bits
    if not 0 < k < f:
        raise ValueError(f"shift_bits must be in (0, {f}), got {k}")
    d = x - mul.mean(party, x, -1, keepdim=True, extra_bits=8).expand(*x.shape) if center else x
    dg = poly.cross(d, gamma) if gamma is not None else poly.lifted(d, f)
    dt, dgk = poly.truncate_terms(party, [poly.lifted(d), dg], k)  # d / 2^k at f bits, d gamma at 2^(2f - k)
    s, dg = poly.truncate_terms(party, [poly.cross(d, dt).sum(-1, keepdim=True), poly.lifted(dgk)], f - k)
    s = s.add_public(poly.encode(c * eps, f))  # (..., 1) = S + C eps at f bits
    r = rsqrt(party, s, profile, lo=-f, hi=nn_norm.SUMSQ_HI + k, scale=math.sqrt(c), out_bits=nn_norm.RSQRT_OUT_BITS)
    y = poly.products(party, [(dg, r)], nn_norm.RSQRT_OUT_BITS)[0]
    return add(y, beta)


def query_scale(head_dim: int) -> float:
    """The attention scale 1/sqrt(D) that owners fold into the query weights and biases."""
    return 1.0 / math.sqrt(head_dim)
