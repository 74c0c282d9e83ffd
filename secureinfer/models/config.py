"""A Transformer's architecture, independent of file format: `ModelConfig`, read from a Hugging Face `config.json`,
and the parameter shapes it implies.

Parameter names are canonical Hugging Face names, one family each:
  BERT   the bare `BertModel` names (`embeddings.*`, `encoder.layer.N.*`, optional `pooler.dense.*`), plus
         `classifier.*` for a sequence-classification head;
  GPT-2  `GPT2LMHeadModel` names (`transformer.*`, `lm_head.weight` only when not tied);
  LLaMA  `LlamaForCausalLM` names (`model.*`, `lm_head.weight` only when not tied).
Linear weights keep Hugging Face layouts: `nn.Linear` is (out, in); GPT-2's `Conv1D` is (in, out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ARCHS = ("bert", "gpt2", "llama")
_ACTS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "silu": "silu", "swish": "silu",
         "relu": "relu"}


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
    tokenizer: str = ""            # a packaged model (checkpoint.PACKAGED_MODELS) whose tokenizer encodes text

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
        if not isinstance(self.tokenizer, str):
            raise CheckpointError(f"tokenizer must be a packaged model's name (a string), got {self.tokenizer!r}")

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

