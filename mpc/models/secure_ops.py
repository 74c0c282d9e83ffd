"""The secure backend of the model definitions (secureinfer.models.arch): blocks.py's ops on one party's shares.

`SecureBuilder` prepares weights as blocks.py keeps them (`Dense`, `Table`, `AttentionBlock`; secret shares or public
ring tensors); `SecureOps` runs a forward for one party under an approximation profile, with the secret KV cache,
naming each step for the tracer (trace.py: "embed", "layernorm" / "rmsnorm", "mlp.fc1", "mlp.gelu" / "mlp.silu",
"mlp.gate_mul", "mlp.fc2", "lm_head", "pool", "head"; attention's own steps inside blocks.attention). Every op is one
blocks.py / nn call. Nothing here opens a value.

Activations by name: gelu and gelu_tanh run the even-split recipe (nn.activations) with `gelu_spec`'s fit, silu
the profile's SiLU fit, relu an exact selection. GPT-2's activation is the tanh form of GeLU; `GELU_TANH` holds
even-split fits of it with the same cutoffs and degrees as the built-in erf-GeLU profiles (max error over the reals,
float64: accurate 7.0e-5, fast 4.8e-3; the erf fits would add up to 4.7e-4 / 5.3e-3 against the tanh form). Made
with numpy 2.4 as approx/profile.py's fits (Chebyshev nodes, iteratively reweighted least squares, converted to
monomials in v = 2x^2/a^2 - 1).
Mean pooling: sum_t mask_t x_t (local) times 1/n per row (one truncation). tanh(x) = sign(x) (2 / (1 + e^(-2|x|))
- 1): msb, two bit products, exp and a reciprocal on [1, 2].
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Sequence

import torch

from secureinfer.models.arch import Norm, rope_cos_sin

from ..approx.profile import ApproxProfile, EvenSplit
from ..approx.reciprocal import reciprocal
from ..approx import exp as approx_exp
from ..approx import poly
from ..nn import activations
from ..party import Party
from ..protocols import b2a, compare
from ..shares import AShare, add
from . import blocks
from .blocks import AttentionBlock, Dense, SecretKVCache, Table, Weight
from .trace import op

MEAN_BOUND_BITS = 12  # |pooled mean| < 2^12

GELU_TANH: dict[str, EvenSplit] = {
    "accurate": EvenSplit(
        cutoff=4.0,
        coeffs=(1.4080422510906472, 0.7324168303690196, -0.22763455905325844, 0.15897891446382206,
                -0.11990554333145595, 0.06327167978068786, -0.03694098301972518, 0.045255408092263555,
                -0.02359628413232759),
        max_error=7.02e-5),
    "fast": EvenSplit(
        cutoff=3.5,
        coeffs=(1.2191900794265282, 0.6470356473093206, -0.20002559147127755, 0.2228429412502657,
                -0.1444719578923545),
        max_error=4.81e-3),
}


def gelu_spec(act: str, profile: ApproxProfile) -> EvenSplit:
    """The even-split fit for this activation under this profile (tanh-GeLU fits by profile name, else erf)."""
    if act == "gelu_tanh" and profile.name in GELU_TANH:
        return GELU_TANH[profile.name]
    if act not in ("gelu", "gelu_tanh"):
        raise ValueError(f"activation {act!r} is not a GeLU")
    return profile.gelu


class SecureBuilder:
    """Weights as blocks.py prepares them: `Dense` (x @ W + b), `Table`, `AttentionBlock`; other tensors as given."""

    def linear(self, weight: Weight, bias: Weight | None, *, out_in: bool) -> Dense:
        return Dense.from_share(weight, bias, out_in=out_in)

    def fuse(self, layers: list[Dense]) -> Dense:
        return Dense.fuse(layers)

    def table(self, t: Weight) -> Table:
        return Table.from_share(t)

    def param(self, t: Weight) -> Weight:
        return t

    def attention(self, qkv: Dense, out: Dense, n_heads: int, n_kv_heads: int, head_dim: int) -> AttentionBlock:
        return AttentionBlock(qkv, out, n_heads, n_kv_heads, head_dim)


class SecureOps:
    """One party's forward: blocks.py's ops under `profile`, extending `cache` (decoders) in place."""

    def __init__(self, party: Party, profile: ApproxProfile, *, cache: SecretKVCache | None = None,
                 norm_shift_bits: int = 0) -> None:
        """`norm_shift_bits` > 0 widens every norm's domain (blocks.normalize)."""
        self.party, self.profile, self.cache, self.norm_shift_bits = party, profile, cache, norm_shift_bits

    def section(self, name: str) -> AbstractContextManager:
        return op(self.party, name)

    def positions(self, t: int) -> torch.Tensor:
        """Public positions past..past+t-1 (T,), past the cached length."""
        past = 0 if self.cache is None else self.cache.length
        return torch.arange(past, past + t)

    def rotary(self, positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
        return rope_cos_sin(head_dim, theta, positions)  # (T, D) each, public

    def embed(self, tokens: AShare, table: Table, rows: Sequence[tuple[Weight, torch.Tensor]] = ()) -> AShare:
        """One-hot rows (B, T, V) @ table, plus public-index rows of secret or public tables (local)."""
        with op(self.party, "embed"):
            x = blocks.embed(self.party, tokens, table)  # (B, T, C)
            for t, index in rows:
                x = add(x, t[index.to(t.device)])
            return x

    def norm(self, x: AShare, norm: Norm) -> AShare:
        with op(self.party, "layernorm" if norm.center else "rmsnorm"):
            return blocks.normalize(self.party, x, norm.weight, norm.bias, self.profile, eps=norm.eps,
                                    center=norm.center, shift_bits=self.norm_shift_bits)

    def dense(self, x: AShare, layer: Dense, name: str | None = None) -> AShare:
        if name is None:
            return blocks.dense(self.party, x, layer)
        with op(self.party, name):
            return blocks.dense(self.party, x, layer)

    def act(self, x: AShare, kind: str, name: str) -> AShare:
        with op(self.party, name):
            if kind == "silu":
                return activations.silu(self.party, x, self.profile)
            if kind == "relu":
                return activations.relu(self.party, x)
            return activations.even_split(self.party, x, gelu_spec(kind, self.profile), self.profile)

    def mul(self, a: AShare, b: AShare, name: str) -> AShare:
        with op(self.party, name):
            return poly.products(self.party, [(a, b)], self.party.fxp.frac_bits)[0]

    def attention(self, x: AShare, blk: AttentionBlock, layer: int, *, causal: bool,
                  key_mask: torch.Tensor | None = None, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                  last_only: bool = False) -> AShare:
        if rope is not None:
            rope = (rope[0].to(x.device), rope[1].to(x.device))
        return blocks.attention(self.party, x, blk, self.profile, causal=causal, key_mask=key_mask, rope=rope,
                                cache=self.cache, layer=layer, last_only=last_only)

    def last(self, x: AShare) -> AShare:
        return x[:, -1:]

    def lm_head(self, x: AShare, table: Table) -> AShare:
        with op(self.party, "lm_head"):
            return blocks.lm_head(self.party, x, table)

    def mean_pool(self, x: AShare, mask: torch.Tensor | None) -> AShare:
        """Mean of x (B, T, C) over real tokens -> (B, C): one truncation."""
        party = self.party
        b, t = x.shape[0], x.shape[1]
        with op(party, "pool"):
            m = torch.ones(b, t, dtype=torch.int64) if mask is None else mask.long()
            m = m.to(x.device)
            total = x.mul_public(m[..., None]).sum(1)  # (B, C)
            g = 61 - party.fxp.frac_bits - MEAN_BOUND_BITS
            inv = torch.round(2.0 ** g / m.sum(1).clamp(min=1).to(torch.float64)).to(torch.int64)[:, None]  # (B, 1)
            return poly.truncate_terms(party, [poly.lifted(total) * inv], g)[0]

    def tanh(self, x: AShare) -> AShare:
        return tanh(self.party, x, self.profile)


def tanh(party: Party, x: AShare, profile: ApproxProfile) -> AShare:
    """tanh(x) = sign(x) (2 / (1 + e^(-2|x|)) - 1): msb, two bit products, exp and a reciprocal on [1, 2].

    Error: about 2x the reciprocal's relative error plus 2 e^(-2|x|) times exp's absolute error (accurate: ~1e-5).
    """
    neg = compare.msb(party, x)  # [x < 0]
    absx = x - b2a.mul_bit(party, neg, x).lshift(1)
    e = approx_exp.exp_neg(party, -absx.lshift(1), profile)  # e^(-2|x|) in (0, 1]
    r = reciprocal(party, e.add_public(party.fxp.encode(1.0).item()), profile, lo=0, hi=2)  # 1 / (1 + e)
    t = r.lshift(1).add_public(-party.fxp.encode(1.0).item())  # tanh(|x|)
    return t - b2a.mul_bit(party, neg, t).lshift(1)

