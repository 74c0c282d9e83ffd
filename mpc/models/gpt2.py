"""Secure GPT-2-family decoder (GPT2LMHeadModel names): the shared GPT-2 definition, secure backend.

Forward on secret one-hot rows (B, T, V) at public positions past..past+T-1 (arch.gpt2_logits;
secureinfer.plaintext.reference.gpt2_forward runs the same definition in float64):
  x = one-hot @ wte + wpe[past..past+T)   (1 round; the position rows are a public-index lookup, local)
  per block: x = x + c_proj(attn(c_attn(LN_1(x)))); x = x + mlp.c_proj(gelu_tanh(mlp.c_fc(LN_2(x))))
  logits = LN_f(x) @ wte^T (or lm_head.weight^T); with `last_only` the last block's queries, MLP, LN_f and the
  head run on the last position only (generation opens only that row).
Conv1D weights are already (in, out). Owner-side preparation (`owner_params`): the query third of c_attn (weight
columns and bias) is multiplied by 1/sqrt(D).
GPT-2's activation is the tanh form of GeLU, run with secure_ops.GELU_TANH's fits (see secure_ops.py).
"""

from __future__ import annotations

import torch

from secureinfer.models import arch
from secureinfer.models.config import ModelConfig

from ..approx.profile import ApproxProfile
from ..party import Party
from ..shares import AShare
from .blocks import SecretKVCache, Weight, query_scale
from .secure_ops import GELU_TANH, SecureBuilder, SecureOps, gelu_spec

__all__ = ["GELU_TANH", "SecureGPT2", "gelu_spec", "owner_params"]


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


class SecureGPT2:
    """A GPT-2 decoder on one party's weight shares (keyed by the checkpoint's names), or on public ring weights."""

    def __init__(self, cfg: ModelConfig, shares: dict[str, Weight], profile: ApproxProfile, *,
                 norm_shift_bits: int = 0) -> None:
        """Consumes `shares` (entries are popped as they are prepared, so peak memory stays ~ one copy);
        `norm_shift_bits` > 0 widens the LayerNorms' domain (blocks.normalize)."""
        if cfg.arch != "gpt2":
            raise ValueError(f"SecureGPT2 needs a gpt2 config, got {cfg.arch}")
        self.cfg, self.profile, self.norm_shift_bits = cfg, profile, norm_shift_bits
        self.weights = arch.load_gpt2(cfg, shares, SecureBuilder(), consume=True)

    def forward(self, party: Party, onehot: AShare, cache: SecretKVCache | None = None, *,
                last_only: bool = False) -> AShare:
        """Logits (B, T, V) (or (B, 1, V) with `last_only`) for one-hot rows (B, T, V) after the cached positions."""
        t = onehot.shape[1]
        past = 0 if cache is None else cache.length
        if past + t > self.cfg.max_positions:
            raise ValueError(f"sequence length {past + t} exceeds max_positions {self.cfg.max_positions}")
        ops = SecureOps(party, self.profile, cache=cache, norm_shift_bits=self.norm_shift_bits)
        return arch.gpt2_logits(ops, self.cfg, self.weights, onehot, last_only=last_only)
