"""Tiny random checkpoints in real architectures (GPT-2, BERT, LLaMA), written as Hugging Face directories.

The model tests of every package build on these: the shared definitions, the plaintext execution and the secure
models are all checked against Hugging Face's own implementation of the same weights. Nothing downloads: the offline
switches are set before transformers is first imported.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may download: set before transformers is imported
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from secureinfer.models.config import ModelConfig, parameter_shapes  # noqa: E402

VOCAB = 61


def tiny_config(**changes: Any) -> ModelConfig:
    """A 1-layer GPT-2 (hidden 8, 2 heads, vocabulary 13, 8 positions): fast enough to run securely per test."""
    fields: dict[str, Any] = dict(arch="gpt2", vocab_size=13, hidden=8, n_layers=1, n_heads=2, n_kv_heads=2,
                                  head_dim=4, intermediate=16, max_positions=8, norm_eps=1e-5, act="gelu_tanh",
                                  bos_token_id=0, eos_token_ids=(1,))
    fields.update(changes)
    return ModelConfig(**fields)


def tiny_params(cfg: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random parameters of the config's exact shapes (norm gains near 1)."""
    gen = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in sorted(parameter_shapes(cfg).items()):
        noise = torch.randn(shape, generator=gen, dtype=torch.float64)
        gain = len(shape) == 1 and name.endswith("weight")
        params[name] = 1.0 + 0.1 * noise if gain else 0.3 * noise
    return params


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Replace HF's tiny init by larger random weights (matrices N(0, 0.3), gains 1 + N(0, 0.1), biases N(0, 0.1))."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            if p.dim() > 1:
                p.copy_(0.3 * noise)
            elif name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)
    return model.eval()


def save(model: torch.nn.Module, path: Path) -> Path:
    """Write the model as a Hugging Face directory (config.json + model.safetensors) and return the path."""
    model.save_pretrained(str(path))
    return path


def tiny_gpt2(seed: int = 0, bare: bool = False) -> torch.nn.Module:
    """A 2-layer GPT-2 (hidden 32, 4 heads) with random weights."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model

    cfg = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=24, bos_token_id=0,
                     eos_token_id=1)
    return randomize((GPT2Model if bare else GPT2LMHeadModel)(cfg), seed)


def tiny_bert(seed: int = 0, num_labels: int = 0) -> torch.nn.Module:
    """A 2-layer BERT (hidden 32, 4 heads), bare or with a sequence-classification head."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                     vocab_size=VOCAB, max_position_embeddings=24, num_labels=max(num_labels, 2))
    return randomize(BertForSequenceClassification(cfg) if num_labels else BertModel(cfg), seed)


def tiny_llama(seed: int = 0, tie: bool = False, bias: bool = False) -> torch.nn.Module:
    """A 2-layer LLaMA with GQA (8 heads, 2 KV heads, head_dim 6), rope_theta 500, random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
                      intermediate_size=40, vocab_size=VOCAB, max_position_embeddings=64, rms_norm_eps=1e-5,
                      rope_theta=500.0, tie_word_embeddings=tie, attention_bias=bias, mlp_bias=bias,
                      bos_token_id=0, eos_token_id=1, pad_token_id=None)
    return randomize(LlamaForCausalLM(cfg), seed)
