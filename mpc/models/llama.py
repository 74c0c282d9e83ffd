"""Secure LLaMA-family decoder (LlamaForCausalLM names): RMSNorm, rotary positions with public cos/sin, grouped-query
attention with a secret KV cache, SiLU-gated MLP, LM head.

Forward on secret one-hot rows (B, T, V) at public positions past..past+T-1 (plaintext.llama_forward is the float64
reference, op for op):
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

from dataclasses import dataclass

import torch

from ..approx import poly
from ..approx.profile import ApproxProfile
from ..nn import activations
from ..party import Party
from ..shares import AShare
from .blocks import (AttentionBlock, Dense, SecretKVCache, Table, Weight, attention, dense, embed, lm_head,
                     normalize, query_scale)
from .checkpoint import ModelConfig
from .plaintext import rope_cos_sin
from .trace import op

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


@dataclass(frozen=True)
class _Layer:
    ln1: Weight
    attn: AttentionBlock
    ln2: Weight
    gate_up: Dense
    down: Dense


class SecureLlama:
    """A LLaMA decoder on one party's weight shares (keyed by the checkpoint's names), or on public ring weights."""

    def __init__(self, cfg: ModelConfig, shares: dict[str, Weight], profile: ApproxProfile, *,
                 norm_shift_bits: int = NORM_SHIFT_BITS) -> None:
        """Consumes `shares` (entries are popped as they are prepared, so peak memory stays ~ one copy)."""
        if cfg.arch != "llama":
            raise ValueError(f"SecureLlama needs a llama config, got {cfg.arch}")
        if cfg.act != "silu":
            raise ValueError(f"LLaMA activation {cfg.act!r} is not supported by the secure forward (only silu)")
        self.cfg, self.profile, self.norm_shift_bits = cfg, profile, norm_shift_bits
        w = shares
        self.embed = Table.from_share(w.pop("model.embed_tokens.weight"))
        self.layers = [self._layer(w, f"model.layers.{n}") for n in range(cfg.n_layers)]
        self.norm = w.pop("model.norm.weight")
        self.head = self.embed if cfg.tie_word_embeddings else Table.from_share(w.pop("lm_head.weight"))

    def _layer(self, w: dict[str, Weight], p: str) -> _Layer:
        c = self.cfg

        def linear(prefix: str) -> Dense:
            return Dense.from_share(w.pop(f"{prefix}.weight"), w.pop(f"{prefix}.bias", None), out_in=True)

        qkv = Dense.fuse([linear(f"{p}.self_attn.{s}_proj") for s in ("q", "k", "v")])
        attn = AttentionBlock(qkv, linear(f"{p}.self_attn.o_proj"), c.n_heads, c.n_kv_heads, c.head_dim)
        gate_up = Dense.fuse([linear(f"{p}.mlp.gate_proj"), linear(f"{p}.mlp.up_proj")])
        return _Layer(w.pop(f"{p}.input_layernorm.weight"), attn, w.pop(f"{p}.post_attention_layernorm.weight"),
                      gate_up, linear(f"{p}.mlp.down_proj"))

    def _rms(self, party: Party, x: AShare, gamma: Weight) -> AShare:
        with op(party, "rmsnorm"):
            return normalize(party, x, gamma, None, self.profile, eps=self.cfg.norm_eps, center=False,
                             shift_bits=self.norm_shift_bits)

    def forward(self, party: Party, onehot: AShare, cache: SecretKVCache | None = None, *,
                last_only: bool = False) -> AShare:
        """Logits (B, T, V) (or (B, 1, V) with `last_only`) for one-hot rows (B, T, V) after the cached positions."""
        t = onehot.shape[1]
        past = 0 if cache is None else cache.length
        cos, sin = rope_cos_sin(self.cfg, torch.arange(past, past + t))  # (T, D) public
        rope = (cos.to(onehot.device), sin.to(onehot.device))
        inter = self.cfg.intermediate
        with op(party, "embed"):
            x = embed(party, onehot, self.embed)  # (B, T, C)
        for n, layer in enumerate(self.layers):
            last = last_only and n == len(self.layers) - 1
            a = attention(party, self._rms(party, x, layer.ln1), layer.attn, self.profile, causal=True, rope=rope,
                          cache=cache, layer=n, last_only=last)
            x = (x[:, -1:] if last else x) + a
            h = self._rms(party, x, layer.ln2)
            with op(party, "mlp.fc1"):
                gu = dense(party, h, layer.gate_up)  # (B, T, 2I)
            with op(party, "mlp.silu"):
                g = activations.silu(party, gu[..., :inter], self.profile)
            with op(party, "mlp.gate_mul"):
                h = poly.products(party, [(g, gu[..., inter:])], party.fxp.frac_bits)[0]  # (B, T, I)
            with op(party, "mlp.fc2"):
                x = x + dense(party, h, layer.down)
        if last_only:
            x = x[:, -1:]
        x = self._rms(party, x, self.norm)
        with op(party, "lm_head"):
            return lm_head(party, x, self.head)
