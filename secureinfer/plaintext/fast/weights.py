"""Decoder weights packed once for fast execution: the shared loaders (secureinfer.models.arch) on the torch backend with `pack`.

Packing, from the Hugging Face-named parameter dict (see secureinfer.models.checkpoint), through `torch_ops.TorchBuilder(pack=True)`:
  GPT-2  c_attn (already fused q|k|v) and the Conv1D weights transposed to nn.Linear's (out, in) layout.
  LLaMA  q|k|v fused into one (H*d + 2*KV*d, C) matrix, gate|up fused into one (2*I, C) matrix.
int8 weight-only quantization (per output channel, symmetric): scale_o = max_i |W_oi| / 127, Q = round(W / scale)
clamped to [-127, 127]; the matmul dequantizes on the fly, y = (x Q^T) * scale + b. It applies to the block linears
(qkv, o, up/gate-up, down); embeddings, norms and the LM head stay in the compute dtype.
The result is an arch.DecoderWeights, the very structure the secure models and the references run.
"""

from __future__ import annotations

import torch

from secureinfer.models.arch import DecoderWeights, load, rope_cos_sin
from secureinfer.models.config import ModelConfig

from ..torch_ops import DTYPES, Linear, TorchBuilder, activation, quantize_int8

__all__ = ["DTYPES", "Linear", "activation", "pack", "quantize_int8", "rope_tables"]


def pack(cfg: ModelConfig, params: dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device | str,
         int8: bool = False) -> DecoderWeights:
    """A GPT-2 or LLaMA parameter dict as DecoderWeights (fused, transposed, cast, maybe quantized)."""
    if cfg.arch not in ("gpt2", "llama"):
        raise ValueError(f"the fast decoder runs GPT-2 and LLaMA decoders, not {cfg.arch}")
    return load(cfg, params, TorchBuilder(dtype, device, pack=True, int8=int8))


def rope_tables(cfg: ModelConfig, max_len: int, dtype: torch.dtype,
                device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (max_len, head_dim) of angles pos * theta^(-2i/d), computed in float64 and cast once (HF layout)."""
    cos, sin = rope_cos_sin(cfg.head_dim, cfg.rope_theta, torch.arange(max_len))  # (L, d)
    return cos.to(device=device, dtype=dtype), sin.to(device=device, dtype=dtype)
