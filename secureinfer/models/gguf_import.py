"""Reading a llama.cpp GGUF file (LLaMA family) into a ModelConfig and Hugging Face-named float parameters.

Steps: parse the metadata (`llama.*` keys) into a Hugging Face-style config dict; dequantize every tensor
(`gguf.quants.dequantize`: Q4_0/Q4_1/Q8_0/K-quants/F16/F32 -> float32, shape (rows, cols) = HF (out, in));
rename llama.cpp tensors to `LlamaForCausalLM` names; undo the rotary row permutation that llama.cpp's
`convert_hf_to_gguf.py` applies to attn_q / attn_k (`LlamaModel.permute`), exactly as transformers'
`LlamaTensorProcessor._reverse_permute_weights` does, so that the weights fit Hugging Face's rotate-half RoPE.
The dequantized weights are the quantized model's weights (no attempt to recover the pre-quantization model).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import CheckpointError, ModelConfig

_LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")


def hf_name(gguf_name: str) -> str:
    """The LlamaForCausalLM name of a llama.cpp tensor (blk.3.attn_q.weight -> model.layers.3.self_attn.q_proj...)."""
    if gguf_name in _GLOBAL_TENSORS:
        return _GLOBAL_TENSORS[gguf_name]
    match = _LAYER_RE.match(gguf_name)
    if match is None or match.group(2) not in _LAYER_TENSORS:
        raise CheckpointError(f"unsupported GGUF tensor {gguf_name!r} (only plain LLaMA tensors are mapped)")
    layer, part, kind = match.groups()
    return f"model.layers.{layer}.{_LAYER_TENSORS[part]}.{kind}"


def unpermute_rotary(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of llama.cpp's permute: per head, rows (pairs interleaved) -> (first halves, second halves)."""
    rows = weight.shape[0]
    if rows % (2 * n_heads):
        raise CheckpointError(f"cannot un-permute {rows} rows over {n_heads} heads")
    half = rows // n_heads // 2
    return weight.reshape(n_heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _field(reader: Any, key: str, default: Any = None) -> Any:
    """One metadata value (scalar or string), or `default` when absent."""
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def _hf_config(reader: Any, tensor_names: set[str]) -> dict[str, Any]:
    """A Hugging Face LlamaConfig-style dict from the `llama.*` / `tokenizer.ggml.*` metadata."""
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise CheckpointError(f"unknown GGUF architecture {arch!r}; supported: llama")
    scaling = _field(reader, "llama.rope.scaling.type", "none")
    if scaling not in ("none", None) or "rope_freqs.weight" in tensor_names:
        raise CheckpointError(f"GGUF rope scaling {scaling!r} / rope_freqs is unsupported (only plain RoPE)")
    required = {"hidden_size": "embedding_length", "num_hidden_layers": "block_count",
                "intermediate_size": "feed_forward_length", "num_attention_heads": "attention.head_count"}
    hf: dict[str, Any] = {"model_type": "llama"}
    for hf_key, gguf_key in required.items():
        value = _field(reader, f"llama.{gguf_key}")
        if value is None:
            raise CheckpointError(f"GGUF metadata lacks llama.{gguf_key}")
        hf[hf_key] = int(value)
    hf["num_key_value_heads"] = int(_field(reader, "llama.attention.head_count_kv", hf["num_attention_heads"]))
    hf["head_dim"] = int(_field(reader, "llama.attention.key_length",
                                hf["hidden_size"] // hf["num_attention_heads"]))
    rope_dims = _field(reader, "llama.rope.dimension_count", hf["head_dim"])
    if int(rope_dims) != hf["head_dim"]:
        raise CheckpointError(f"partial rotary (rope dims {rope_dims} != head_dim {hf['head_dim']}) is unsupported")
    hf["rms_norm_eps"] = float(_field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-6))
    hf["rope_theta"] = float(_field(reader, "llama.rope.freq_base", 10000.0))
    hf["max_position_embeddings"] = int(_field(reader, "llama.context_length", 2048))
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = _field(reader, "llama.vocab_size", len(tokens.data) if tokens is not None else None)
    if vocab is None:
        raise CheckpointError("GGUF metadata gives no vocabulary size")
    hf["vocab_size"] = int(vocab)
    hf["tie_word_embeddings"] = "output.weight" not in tensor_names
    hf["attention_bias"] = "blk.0.attn_q.bias" in tensor_names
    hf["bos_token_id"] = _field(reader, "tokenizer.ggml.bos_token_id")
    hf["eos_token_id"] = _field(reader, "tokenizer.ggml.eos_token_id")
    hf["pad_token_id"] = _field(reader, "tokenizer.ggml.padding_token_id")
    return hf


def _tensors(reader: Any, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Dequantized, renamed, un-permuted tensors (float32)."""
    from gguf import dequantize

    out: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        name = hf_name(tensor.name)
        weight = dequantize(tensor.data, tensor.tensor_type)
        if ".self_attn.q_proj." in name:
            weight = unpermute_rotary(weight, cfg.n_heads)
        elif ".self_attn.k_proj." in name:
            weight = unpermute_rotary(weight, cfg.n_kv_heads)
        out[name] = torch.from_numpy(np.array(weight, dtype=np.float32))  # a writable copy
    return out


def read_gguf(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Read a LLaMA-family .gguf file: (config from metadata, LlamaForCausalLM-named dequantized tensors, unchecked:
    checkpoint.load_checkpoint checks them as it does a Hugging Face directory's)."""
    try:
        from gguf import GGUFReader
    except ImportError as exc:
        raise CheckpointError("loading .gguf files needs `pip install gguf`") from exc
    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError, IndexError, KeyError, struct.error) as exc:
        raise CheckpointError(f"corrupt GGUF file {path}: {exc}") from exc
    cfg = ModelConfig.from_hf_config(_hf_config(reader, {t.name for t in reader.tensors}))
    return cfg, _tensors(reader, cfg)
