"""Secure LLaMA-family decoder (LlamaForCausalLM names): the shared LLaMA definition, secure backend.

Forward on secret one-hot rows (B, T, V) at public positions past..past+T-1 (arch.llama_logits;
secureinfer.plaintext.reference.llama_forward runs the same definition in float64):
  x = one-hot @ embed_tokens   (1 round, no truncation)
  per layer: h = RMSNorm(x); q, k, v = h Wq, h Wk, h Wv (one fused matmul and truncation); q, k rotated with the
      public cos/sin of their positions (one truncation for both); keys/values appended to the cache; query head j
      attends with KV head j // (H / Hkv); x = x + o_proj(attn)
      h = RMSNorm(x); g, u = h Wg, h Wu (fused); x = x + down_proj(silu(g) * u) (one truncation for the product)
  logits = RMSNorm(x) @ (embed_tokens or lm_head)^T; with `last_only` the last layer's queries, MLP, final norm and
  head run on the last position only.
RMSNorm runs `blocks.normalize` with NORM_SHIFT_BITS: LLMs' residual streams hold massive activations (SmolLM2's
first position reaches |x| ~ 2.3e4, a sum of squares ~ 5e8) beyond nn.norm's 2^25 window.
Owner-side preparation (`owner_params`): q_proj's weight (and bias) multiplied by 1/sqrt(D); rotary is linear, so
the scale commutes with it.
"""

from __future__ import annotations

import torch

from secureinfer.models import arch
from secureinfer.models.config import ModelConfig

from ..approx.profile import ApproxProfile
from ..party import Party
from ..shares import AShare
from .blocks import SecretKVCache, Weight, query_scale
from .secure_ops import SecureBuilder, SecureOps

NORM_SHIFT_BITS = 7  # RMSNorm rows with sums of squares up to 2^32 (SmolLM2-135M reaches ~5e8 ~ 2^29)


def owner_params(cfg: ModelConfig, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Owner side: the checkpoint's parameters with 1/sqrt(D) folded into every q_proj weight (and bias)."""
    out = dict(params)
    s = query_scale(cfg.head_dim)
    for n in range(cfg.n_layers):
        for kind in ("weight", "bias"):
            name = f"model.layers.{n}.self_attn.q_proj.{kind}"
            if name in params:
                out[name] = params[name].to(torch.float64) * s
    return out


class SecureLlama:
    """A LLaMA decoder on one party's weight shares (keyed by the checkpoint's names), or on public ring weights."""

    def __init__(self, cfg: ModelConfig, shares: dict[str, Weight], profile: ApproxProfile, *,
                 norm_shift_bits: int = NORM_SHIFT_BITS) -> None:
        """Consumes `shares` (entries are popped as they are prepared, so peak memory stays ~ one copy)."""
        if cfg.arch != "llama":
            raise ValueError(f"SecureLlama needs a llama config, got {cfg.arch}")
        self.cfg, self.profile, self.norm_shift_bits = cfg, profile, norm_shift_bits
        self.weights = arch.load_llama(cfg, shares, SecureBuilder(), consume=True)

    def forward(self, party: Party, onehot: AShare, cache: SecretKVCache | None = None, *,
                last_only: bool = False) -> AShare:
        """Logits (B, T, V) (or (B, 1, V) with `last_only`) for one-hot rows (B, T, V) after the cached positions."""
        ops = SecureOps(party, self.profile, cache=cache, norm_shift_bits=self.norm_shift_bits)
        return arch.llama_logits(ops, self.cfg, self.weights, onehot, last_only=last_only)
