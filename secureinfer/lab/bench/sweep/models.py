"""The sweep's models: their specs, loaders (float64 parameters, loaded once per process) and request inputs."""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

@dataclass(frozen=True)
class ModelSpec:
    """A model the sweep can run: its loader returns (ModelConfig, float64 params) and inputs come from `inputs`."""

    name: str
    arch: str
    real: bool  # real trained weights (else random weights of a real or tiny shape)
    what: str


def _random_params(cfg: Any, seed: int) -> dict[str, torch.Tensor]:
    """Random float64 weights for `cfg`: matrices N(0, 1/fan_in) (embeddings N(0, 1)), norm gains 1 + N(0, 0.1),
    biases N(0, 0.05). Public benchmark data drawn from a seeded generator."""
    from secureinfer.models.config import parameter_shapes

    gen = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in parameter_shapes(cfg).items():
        noise = torch.randn(shape, generator=gen, dtype=torch.float64)
        if len(shape) > 1:
            embedding = "embed" in name or name.endswith(("wte.weight", "wpe.weight"))
            fan_in = shape[0] if cfg.arch == "gpt2" and not embedding else shape[1]  # Conv1D is (in, out)
            params[name] = noise if embedding else noise / math.sqrt(fan_in)
        elif name.endswith("weight"):
            params[name] = 1.0 + 0.1 * noise
        else:
            params[name] = 0.05 * noise
    return params


def _tiny_config(arch: str) -> Any:
    from secureinfer.models.config import ModelConfig

    common = dict(vocab_size=256, hidden=64, n_layers=2, max_positions=256)
    if arch == "gpt2":
        return ModelConfig(arch="gpt2", n_heads=4, n_kv_heads=4, head_dim=16, intermediate=256, norm_eps=1e-5,
                           act="gelu_tanh", tie_word_embeddings=True, **common)
    if arch == "llama":
        return ModelConfig(arch="llama", n_heads=8, n_kv_heads=2, head_dim=8, intermediate=128, norm_eps=1e-5,
                           act="silu", rope_theta=10000.0, attention_bias=False, mlp_bias=False, **common)
    return ModelConfig(arch="bert", n_heads=4, n_kv_heads=4, head_dim=16, intermediate=128, norm_eps=1e-12,
                       act="gelu", type_vocab_size=2, **common)


def _small_config(arch: str) -> Any:
    """The tiny shape doubled in width, depth and vocabulary (hidden 128, 4 layers, vocab 512), same head counts."""
    cfg = _tiny_config(arch)
    return dataclasses.replace(cfg, hidden=128, n_layers=4, vocab_size=512, head_dim=cfg.head_dim * 2,
                               intermediate=cfg.intermediate * 2)


def _gpt2_base(layers: int) -> tuple[Any, dict[str, torch.Tensor]]:
    """GPT-2-base shape (`bench model`'s random GPT-2-style weights), keeping the first `layers` blocks."""
    from ..model import gpt2_base_params

    cfg, params = gpt2_base_params()
    keep = {f"transformer.h.{i}." for i in range(layers)}
    params = {k: v.double() for k, v in params.items()
              if not k.startswith("transformer.h.") or any(k.startswith(p) for p in keep)}
    return dataclasses.replace(cfg, n_layers=layers), params


def _packaged(name: str) -> tuple[Any, dict[str, torch.Tensor]]:
    from secureinfer.models.checkpoint import load_checkpoint, packaged_checkpoint

    return load_checkpoint(packaged_checkpoint(name), torch.float64)


MODELS: dict[str, ModelSpec] = {m.name: m for m in (
    ModelSpec("tiny-gpt2", "gpt2", False, "GPT-2 shape, 2 layers, hidden 64, 4 heads, vocab 256, random weights"),
    ModelSpec("tiny-llama", "llama", False,
              "LLaMA shape, 2 layers, hidden 64, 8 heads / 2 KV heads (GQA), vocab 256, random weights"),
    ModelSpec("tiny-bert", "bert", False, "BERT shape, 2 layers, hidden 64, 4 heads, vocab 256, random weights"),
    ModelSpec("small-gpt2", "gpt2", False, "GPT-2 shape, 4 layers, hidden 128, 4 heads, vocab 512, random weights"),
    ModelSpec("small-llama", "llama", False,
              "LLaMA shape, 4 layers, hidden 128, 8 heads / 2 KV heads (GQA), vocab 512, random weights"),
    ModelSpec("small-bert", "bert", False, "BERT shape, 4 layers, hidden 128, 4 heads, vocab 512, random weights"),
    ModelSpec("gpt2-base-2L", "gpt2", False,
              "GPT-2-base shape (hidden 768, 12 heads, vocab 50257) cut to its first 2 of 12 layers, random weights"),
    ModelSpec("gpt2-base", "gpt2", False, "GPT-2-base shape, 12 layers, random GPT-2-style weights"),
    ModelSpec("minilm", "bert", True, "all-MiniLM-L6-v2 (real weights), sentence embedding"),
    ModelSpec("smollm2", "llama", True, "SmolLM2-135M-Instruct (real weights, GGUF Q4_1 dequantized)"),
)}
_LOADERS: dict[str, Callable[[], tuple[Any, dict[str, torch.Tensor]]]] = {
    "tiny-gpt2": lambda: (_tiny_config("gpt2"), _random_params(_tiny_config("gpt2"), 11)),
    "tiny-llama": lambda: (_tiny_config("llama"), _random_params(_tiny_config("llama"), 12)),
    "tiny-bert": lambda: (_tiny_config("bert"), _random_params(_tiny_config("bert"), 13)),
    "small-gpt2": lambda: (_small_config("gpt2"), _random_params(_small_config("gpt2"), 21)),
    "small-llama": lambda: (_small_config("llama"), _random_params(_small_config("llama"), 22)),
    "small-bert": lambda: (_small_config("bert"), _random_params(_small_config("bert"), 23)),
    "gpt2-base-2L": lambda: _gpt2_base(2),
    "gpt2-base": lambda: _gpt2_base(12),
    "minilm": lambda: _packaged("all-MiniLM-L6-v2"),
    "smollm2": lambda: _packaged("SmolLM2-135M-Instruct"),
}
_TEXTS = {"minilm": "all-MiniLM-L6-v2", "smollm2": "SmolLM2-135M-Instruct"}


@functools.lru_cache(maxsize=None)
def load_model(name: str) -> tuple[Any, dict[str, torch.Tensor]]:
    """(ModelConfig, float64 params) of a sweep model, loaded once per process."""
    if name not in _LOADERS:
        raise ValueError(f"unknown sweep model {name!r}; known: {', '.join(MODELS)}")
    return _LOADERS[name]()


@functools.lru_cache(maxsize=None)
def _text_tokens(name: str) -> tuple[int, ...]:
    """Token ids of `bench model`'s benchmark text, repeated so any sequence length can be cut from it."""
    from secureinfer.models.checkpoint import load_tokenizer, packaged_checkpoint
    from ..model import MINILM_TEXT, SMOLLM2_TEXT

    tok = load_tokenizer(packaged_checkpoint(_TEXTS[name]))
    text = MINILM_TEXT if name == "minilm" else SMOLLM2_TEXT
    return tuple(tok((text + " ") * 8, add_special_tokens=False)["input_ids"])


def token_inputs(model: str, seq_len: int, batch: int) -> torch.Tensor:
    """(batch, seq_len) token ids: for real models rows are windows of the benchmark text (row r starts r*7 tokens
    in; MiniLM rows start with [CLS]), for random models seeded random ids."""
    cfg, _ = load_model(model)
    if model in _TEXTS:
        toks = _text_tokens(model)
        rows = []
        for r in range(batch):
            if model == "minilm":
                rows.append([101, *toks[r * 7:r * 7 + seq_len - 1]])  # [CLS] + text
            else:
                rows.append(list(toks[r * 7:r * 7 + seq_len]))
        return torch.tensor(rows, dtype=torch.int64)
    seed = int.from_bytes(f"{model}/{seq_len}/{batch}".encode()[:8].ljust(8, b"\0"), "little") % 2**31
    return torch.randint(0, cfg.vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(seed))
