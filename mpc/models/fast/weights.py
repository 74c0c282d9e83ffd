"""Decoder weights packed once for fast execution: one dtype, fused projections, optional int8 weight-only quantization.

Packing, from the Hugging Face-named parameter dict (see checkpoint.py):
  GPT-2  c_attn (already fused q|k|v) and the Conv1D weights transposed to nn.Linear's (out, in) layout.
  LLaMA  q|k|v fused into one (H*d + 2*KV*d, C) matrix, gate|up fused into one (2*I, C) matrix.
int8 weight-only quantization (per output channel, symmetric): scale_o = max_i |W_oi| / 127, Q = round(W / scale)
clamped to [-127, 127]; the matmul dequantizes on the fly, y = (x Q^T) * scale + b. It applies to the block linears
(qkv, o, up/gate-up, down); embeddings, norms and the LM head stay in the compute dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..checkpoint import ModelConfig

DTYPES = {"fp64": torch.float64, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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
class Norm:
    """LayerNorm (weight and bias) or RMSNorm (weight only) over the last axis."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    eps: float
    rms: bool

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize x (..., C); RMSNorm statistics in float32 for half precisions (as transformers does)."""
        if not self.rms:
            return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        h = x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


@dataclass(frozen=True)
class Block:
    """One decoder block: pre-norms, fused qkv, attention output, MLP (up or fused gate|up, then down)."""

    norm1: Norm
    qkv: Linear
    out: Linear
    norm2: Norm
    up: Linear  # GPT-2: c_fc (I); LLaMA: gate|up fused (2I)
    down: Linear


@dataclass(frozen=True)
class PackedWeights:
    """All weights of a GPT-2 or LLaMA decoder in one dtype on one device."""

    embed: torch.Tensor  # (V, C)
    positions: torch.Tensor | None  # GPT-2 learned positions (P, C); None for LLaMA
    blocks: list[Block]
    final_norm: Norm
    head: torch.Tensor  # (V, C): lm_head or the tied embedding

    def nbytes(self) -> int:
        """Bytes of weight storage (a tied head counted once)."""
        seen: dict[int, int] = {}
        tensors = [self.embed, self.head, self.final_norm.weight, self.final_norm.bias, self.positions]
        for b in self.blocks:
            for lin in (b.qkv, b.out, b.up, b.down):
                tensors += [lin.weight, lin.bias, lin.scale]
            tensors += [b.norm1.weight, b.norm1.bias, b.norm2.weight, b.norm2.bias]
        for t in tensors:
            if t is not None:
                seen[t.data_ptr()] = t.numel() * t.element_size()
        return sum(seen.values())


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric int8: (Q (out, in) int8, scale (out,) float32) with W ~ Q * scale[:, None]."""
    w = w.to(torch.float32)
    scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0  # (out,)
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def _linear(w: torch.Tensor, b: torch.Tensor | None, dtype: torch.dtype, device: torch.device,
            int8: bool) -> Linear:
    """A Linear from an (out, in) weight and optional bias, converted (and maybe quantized) once."""
    bias = None if b is None else b.to(device=device, dtype=dtype)
    if int8:
        q, scale = quantize_int8(w)
        return Linear(q.to(device), bias, scale.to(device=device, dtype=dtype))
    return Linear(w.to(device=device, dtype=dtype).contiguous(), bias)


def _get(params: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """Parameter `name`, with a clear error when it is missing."""
    if name not in params:
        raise KeyError(f"parameter {name} is missing")
    return params[name]


def pack(cfg: ModelConfig, params: dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device | str,
         int8: bool = False) -> PackedWeights:
    """Convert a GPT-2 or LLaMA parameter dict into PackedWeights (fused, transposed, cast, maybe quantized)."""
    device = torch.device(device)
    if cfg.arch not in ("gpt2", "llama"):
        raise ValueError(f"the fast decoder runs GPT-2 and LLaMA decoders, not {cfg.arch}")

    def t(name: str) -> torch.Tensor:
        return _get(params, name).to(device=device, dtype=dtype)

    def norm(prefix: str, rms: bool) -> Norm:
        return Norm(t(f"{prefix}.weight"), None if rms else t(f"{prefix}.bias"), cfg.norm_eps, rms)

    def opt(name: str, present: bool) -> torch.Tensor | None:
        return _get(params, name) if present else None

    blocks = []
    if cfg.arch == "gpt2":
        for n in range(cfg.n_layers):
            p = f"transformer.h.{n}"
            # Conv1D weights are (in, out): transposed to nn.Linear's (out, in)
            conv = {s: (_get(params, f"{p}.{s}.weight").T, _get(params, f"{p}.{s}.bias"))
                    for s in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
            blocks.append(Block(norm(f"{p}.ln_1", False), _linear(*conv["attn.c_attn"], dtype, device, int8),
                                _linear(*conv["attn.c_proj"], dtype, device, int8), norm(f"{p}.ln_2", False),
                                _linear(*conv["mlp.c_fc"], dtype, device, int8),
                                _linear(*conv["mlp.c_proj"], dtype, device, int8)))
        embed, positions = t("transformer.wte.weight"), t("transformer.wpe.weight")
        final = norm("transformer.ln_f", False)
    else:
        ab, mb = cfg.attention_bias, cfg.mlp_bias
        for n in range(cfg.n_layers):
            p = f"model.layers.{n}"
            attn = [f"{p}.self_attn.{s}_proj" for s in ("q", "k", "v")]
            qkv_w = torch.cat([_get(params, f"{a}.weight") for a in attn])  # (H*d + 2*KV*d, C)
            qkv_b = torch.cat([_get(params, f"{a}.bias") for a in attn]) if ab else None
            gu = [f"{p}.mlp.{s}_proj" for s in ("gate", "up")]
            gu_w = torch.cat([_get(params, f"{g}.weight") for g in gu])  # (2I, C)
            gu_b = torch.cat([_get(params, f"{g}.bias") for g in gu]) if mb else None
            blocks.append(Block(
                norm(f"{p}.input_layernorm", True), _linear(qkv_w, qkv_b, dtype, device, int8),
                _linear(_get(params, f"{p}.self_attn.o_proj.weight"), opt(f"{p}.self_attn.o_proj.bias", ab),
                        dtype, device, int8),
                norm(f"{p}.post_attention_layernorm", True), _linear(gu_w, gu_b, dtype, device, int8),
                _linear(_get(params, f"{p}.mlp.down_proj.weight"), opt(f"{p}.mlp.down_proj.bias", mb),
                        dtype, device, int8)))
        embed, positions = t("model.embed_tokens.weight"), None
        final = norm("model.norm", True)
    head_name = "lm_head.weight"
    head = embed if cfg.tie_word_embeddings or head_name not in params else t(head_name)
    return PackedWeights(embed.contiguous(), positions, blocks, final, head.contiguous())


def rope_tables(cfg: ModelConfig, max_len: int, dtype: torch.dtype,
                device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (max_len, head_dim) of angles pos * theta^(-2i/d), computed in float64 and cast once (HF layout)."""
    inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float64) / cfg.head_dim)
    angles = torch.arange(max_len, dtype=torch.float64)[:, None] * inv_freq[None, :]  # (L, d/2)
    emb = torch.cat([angles, angles], dim=-1)  # (L, d)
    return torch.cos(emb).to(device=device, dtype=dtype), torch.sin(emb).to(device=device, dtype=dtype)


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
