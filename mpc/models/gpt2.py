"""Secure GPT-2-family decoder (GPT2LMHeadModel names): learned positions, pre-LN blocks, causal attention with a
secret KV cache, tied (or separate) LM head.

Forward on secret one-hot rows (B, T, V) at public positions past..past+T-1 (plaintext.gpt2_forward is the float64
reference, op for op):
  x = one-hot @ wte + wpe[past..past+T)   (1 round; the position rows are a public-index lookup, local)
  per block: x = x + c_proj(attn(c_attn(LN_1(x)))); x = x + mlp.c_proj(gelu_tanh(mlp.c_fc(LN_2(x))))
  logits = LN_f(x) @ wte^T (or lm_head.weight^T); with `last_only` the last block's queries, MLP, LN_f and the
  head run on the last position only (generation opens only that row).
Conv1D weights are already (in, out). Owner-side preparation (`owner_params`): the query third of c_attn (weight
columns and bias) is multiplied by 1/sqrt(D).
GPT-2's activation is the tanh form of GeLU; `GELU_TANH` holds even-split fits of it with the same cutoffs and
degrees as the built-in erf-GeLU profiles (max error over the reals, float64: accurate 7.0e-5, fast 4.8e-3; the
erf fits would add up to 4.7e-4 / 5.3e-3 against the tanh form). Made with numpy 2.4 as approx/profile.py's
fits (Chebyshev nodes, iteratively reweighted least squares, converted to monomials in v = 2x^2/a^2 - 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..approx.profile import ApproxProfile, EvenSplit
from ..nn import activations
from ..party import Party
from ..shares import AShare, add
from .blocks import (AttentionBlock, Dense, SecretKVCache, Table, Weight, attention, dense, embed, lm_head,
                     normalize, query_scale)
from .checkpoint import ModelConfig
from .trace import op

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
        raise ValueError(f"GPT-2 activation {act!r} is not supported by the secure forward")
    return profile.gelu


def owner_params(cfg: ModelConfig, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Owner side: the checkpoint's parameters with 1/sqrt(D) folded into the query third of every c_attn."""
    out = dict(params)
    s, c = query_scale(cfg.head_dim), cfg.hidden
    for n in range(cfg.n_layers):
        for kind in ("weight", "bias"):
            name = f"transformer.h.{n}.attn.c_attn.{kind}"
            t = params[name].to(torch.float64).clone()
            t[..., :c] *= s
            out[name] = t
    return out


@dataclass(frozen=True)
class _Block:
    ln1: tuple[Weight, Weight]
    attn: AttentionBlock
    ln2: tuple[Weight, Weight]
    fc: Dense
    proj: Dense


class SecureGPT2:
    """A GPT-2 decoder on one party's weight shares (keyed by the checkpoint's names), or on public ring weights."""

    def __init__(self, cfg: ModelConfig, shares: dict[str, Weight], profile: ApproxProfile, *,
                 norm_shift_bits: int = 0) -> None:
        """Consumes `shares` (entries are popped as they are prepared, so peak memory stays ~ one copy);
        `norm_shift_bits` > 0 widens the LayerNorms' domain (blocks.normalize)."""
        if cfg.arch != "gpt2":
            raise ValueError(f"SecureGPT2 needs a gpt2 config, got {cfg.arch}")
        self.cfg, self.profile, self.norm_shift_bits = cfg, profile, norm_shift_bits
        self.gelu = gelu_spec(cfg.act, profile)
        w = shares
        self.wte = Table.from_share(w.pop("transformer.wte.weight"))
        self.wpe = w.pop("transformer.wpe.weight")
        self.blocks = [self._block(w, f"transformer.h.{n}") for n in range(cfg.n_layers)]
        self.ln_f = (w.pop("transformer.ln_f.weight"), w.pop("transformer.ln_f.bias"))
        self.head = self.wte if cfg.tie_word_embeddings else Table.from_share(w.pop("lm_head.weight"))

    def _block(self, w: dict[str, Weight], p: str) -> _Block:
        c = self.cfg

        def conv(prefix: str) -> Dense:
            return Dense.from_share(w.pop(f"{prefix}.weight"), w.pop(f"{prefix}.bias"))

        attn = AttentionBlock(conv(f"{p}.attn.c_attn"), conv(f"{p}.attn.c_proj"), c.n_heads, c.n_heads, c.head_dim)
        return _Block((w.pop(f"{p}.ln_1.weight"), w.pop(f"{p}.ln_1.bias")), attn,
                      (w.pop(f"{p}.ln_2.weight"), w.pop(f"{p}.ln_2.bias")), conv(f"{p}.mlp.c_fc"),
                      conv(f"{p}.mlp.c_proj"))

    def _ln(self, party: Party, x: AShare, gb: tuple[Weight, Weight]) -> AShare:
        with op(party, "layernorm"):
            return normalize(party, x, gb[0], gb[1], self.profile, eps=self.cfg.norm_eps, center=True,
                             shift_bits=self.norm_shift_bits)

    def forward(self, party: Party, onehot: AShare, cache: SecretKVCache | None = None, *,
                last_only: bool = False) -> AShare:
        """Logits (B, T, V) (or (B, 1, V) with `last_only`) for one-hot rows (B, T, V) after the cached positions."""
        t = onehot.shape[1]
        past = 0 if cache is None else cache.length
        if past + t > self.cfg.max_positions:
            raise ValueError(f"sequence length {past + t} exceeds max_positions {self.cfg.max_positions}")
        with op(party, "embed"):
            x = add(embed(party, onehot, self.wte), self.wpe[past: past + t])  # (B, T, C)
        for n, blk in enumerate(self.blocks):
            last = last_only and n == len(self.blocks) - 1
            a = attention(party, self._ln(party, x, blk.ln1), blk.attn, self.profile, causal=True, cache=cache,
                          layer=n, last_only=last)
            x = (x[:, -1:] if last else x) + a
            h = self._ln(party, x, blk.ln2)
            with op(party, "mlp.fc1"):
                h = dense(party, h, blk.fc)  # (B, T, I)
            with op(party, "mlp.gelu"):
                h = activations.even_split(party, h, self.gelu, self.profile)
            with op(party, "mlp.fc2"):
                x = x + dense(party, h, blk.proj)
        if last_only:
            x = x[:, -1:]
        x = self._ln(party, x, self.ln_f)
        with op(party, "lm_head"):
            return lm_head(party, x, self.head)
