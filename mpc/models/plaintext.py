"""Plaintext float64 reference forwards for BERT, GPT-2 and LLaMA, written from the loaded parameter dict.

These are the references the secure models are compared against, so the op order is spelled out here (no
transformers modeling at run time). Every forward computes in float64 whatever the parameter dtype.

BERT (post-LN encoder), per layer:
    a = softmax(q k^T / sqrt(d) + pad_mask) v          q, k, v = x W^T + b  (nn.Linear weights are (out, in))
    x = LayerNorm(x + a W_o^T + b_o)
    x = LayerNorm(x + gelu_erf(x W_i^T + b_i) W_out^T + b_out)
  embeddings: LayerNorm(word[ids] + position[0..T) + token_type[types]); sentence embedding = L2-normalize(mean over
  unpadded tokens) (all-MiniLM-L6-v2); classification: classifier(tanh(pooler(x[:, 0]))).
GPT-2 (pre-LN decoder), per block (Conv1D weights are (in, out): y = x W + b):
    x = x + c_proj(causal_attn(split3(c_attn(LayerNorm_1(x)))))
    x = x + mlp.c_proj(gelu_tanh(mlp.c_fc(LayerNorm_2(x))))
  embeddings: wte[ids] + wpe[positions]; logits = LayerNorm_f(x) wte^T (tied) or lm_head.
LLaMA (pre-RMSNorm decoder), per layer:
    h = RMSNorm_in(x);  q, k = RoPE(h Wq^T), RoPE(h Wk^T);  v = h Wv^T   (GQA: query head j uses KV head j // (H/KV))
    x = x + causal_attn(q, k, v) Wo^T
    x = x + (silu(RMSNorm_post(x) Wg^T) * (RMSNorm_post(x) Wu^T)) Wd^T
  RoPE is Hugging Face's rotate-half form: x*cos + rotate_half(x)*sin, angles pos * theta^(-2i/d) repeated twice;
  RMSNorm(x) = w * x / sqrt(mean(x^2) + eps); logits = RMSNorm_f(x) (embed_tokens or lm_head)^T.
Decoders take an optional KVCache: keys/values of earlier positions, appended in place; new tokens sit at positions
cache.length.. . No padding masks for the decoders (every row of a batch has the same length).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from .checkpoint import ModelConfig

Params = dict[str, torch.Tensor]
F64 = torch.float64


# ---------------------------------------------------------------------------------------------------- ops


def _w(params: Params, name: str) -> torch.Tensor:
    """Parameter `name` as float64 (a no-op for float64 parameters)."""
    if name not in params:
        raise KeyError(f"parameter {name} is missing")
    return params[name].to(F64)


def linear(x: torch.Tensor, params: Params, prefix: str, bias: bool = True) -> torch.Tensor:
    """nn.Linear: x W^T + b, W of shape (out, in)."""
    y = x @ _w(params, f"{prefix}.weight").T
    return y + _w(params, f"{prefix}.bias") if bias else y


def conv1d(x: torch.Tensor, params: Params, prefix: str) -> torch.Tensor:
    """GPT-2 Conv1D: x W + b, W of shape (in, out)."""
    return x @ _w(params, f"{prefix}.weight") + _w(params, f"{prefix}.bias")


def layer_norm(x: torch.Tensor, params: Params, prefix: str, eps: float) -> torch.Tensor:
    """LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * w + b (biased variance)."""
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * _w(params, f"{prefix}.weight") + _w(params, f"{prefix}.bias")


def rms_norm(x: torch.Tensor, params: Params, prefix: str, eps: float) -> torch.Tensor:
    """RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * w."""
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * _w(params, f"{prefix}.weight")


def activation(name: str, x: torch.Tensor) -> torch.Tensor:
    """The named activation: gelu (erf), gelu_tanh (GPT-2 gelu_new), silu, relu."""
    if name == "gelu":
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if name == "gelu_tanh":
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if name == "silu":
        return x * torch.sigmoid(x)
    if name == "relu":
        return torch.clamp(x, min=0.0)
    raise ValueError(f"unknown activation {name!r}")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) over keys where `allowed`) v; q (B, H, T, d), k/v (B, H, S, d), allowed ~(B, H, T, S)."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v  # (B, H, T, d)


def causal_allowed(t: int, past: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(T, past+T) bool: new query i (at position past+i) may attend keys 0..past+i."""
    rows = torch.arange(t, device=device)[:, None] + past
    return torch.arange(past + t, device=device)[None, :] <= rows


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, T, n*d) -> (B, n, T, d)."""
    b, t, _ = x.shape
    return x.view(b, t, n, -1).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(B, n, T, d) -> (B, T, n*d)."""
    b, n, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, n * d)


@dataclass
class KVCache:
    """Per-layer keys and values of the positions seen so far, (B, n_kv_heads, S, head_dim) each; grows in place."""

    keys: list[torch.Tensor | None] = field(default_factory=list)
    values: list[torch.Tensor | None] = field(default_factory=list)

    @classmethod
    def empty(cls, n_layers: int) -> "KVCache":
        """A cache with no positions for `n_layers` layers."""
        return cls(keys=[None] * n_layers, values=[None] * n_layers)

    @property
    def length(self) -> int:
        """Number of cached positions."""
        return 0 if not self.keys or self.keys[0] is None else int(self.keys[0].shape[2])

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's k, v (B, KV, T, d) for `layer`; returns all keys and values so far."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


def _check_cache(cfg: ModelConfig, cache: KVCache | None, t: int) -> int:
    """Validate the cache for a step of `t` new tokens; returns the first new position."""
    if cache is not None and len(cache.keys) != cfg.n_layers:
        raise ValueError(f"KV cache has {len(cache.keys)} layers, model has {cfg.n_layers}")
    past = 0 if cache is None else cache.length
    if cfg.arch == "gpt2" and past + t > cfg.max_positions:
        raise ValueError(f"sequence length {past + t} exceeds max_positions {cfg.max_positions}")
    return past


def _check_ids(cfg: ModelConfig, input_ids: torch.Tensor) -> None:
    """Token ids must be a (B, T) integer tensor inside the vocabulary."""
    if input_ids.dim() != 2 or input_ids.dtype not in (torch.int32, torch.int64) or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be a non-empty (B, T) integer tensor, got {tuple(input_ids.shape)} "
                         f"{input_ids.dtype}")
    if int(input_ids.min()) < 0 or int(input_ids.max()) >= cfg.vocab_size:
        raise ValueError(f"token id outside the vocabulary [0, {cfg.vocab_size})")


# ---------------------------------------------------------------------------------------------------- BERT


def bert_forward(cfg: ModelConfig, params: Params, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor | None = None,
                 token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
    """BERT encoder: last hidden states (B, T, hidden) in float64; attention_mask (B, T) is 1 for real tokens."""
    _check_ids(cfg, input_ids)
    b, t = input_ids.shape
    if t > cfg.max_positions:
        raise ValueError(f"sequence length {t} exceeds max_positions {cfg.max_positions}")
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
    x = (_w(params, "embeddings.word_embeddings.weight")[input_ids]
         + _w(params, "embeddings.position_embeddings.weight")[:t]
         + _w(params, "embeddings.token_type_embeddings.weight")[types])  # (B, T, C)
    x = layer_norm(x, params, "embeddings.LayerNorm", cfg.norm_eps)
    allowed = mask.bool()[:, None, None, :]  # (B, 1, 1, S): padded keys are never attended
    for n in range(cfg.n_layers):
        p = f"encoder.layer.{n}"
        q, k, v = (_heads(linear(x, params, f"{p}.attention.self.{s}"), cfg.n_heads) for s in ("query", "key", "value"))
        a = _merge(attention(q, k, v, allowed))  # (B, T, C)
        x = layer_norm(x + linear(a, params, f"{p}.attention.output.dense"), params,
                       f"{p}.attention.output.LayerNorm", cfg.norm_eps)
        h = activation(cfg.act, linear(x, params, f"{p}.intermediate.dense"))  # (B, T, I)
        x = layer_norm(x + linear(h, params, f"{p}.output.dense"), params, f"{p}.output.LayerNorm", cfg.norm_eps)
    return x


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the hidden states over real tokens: (B, T, C), (B, T) -> (B, C)."""
    m = attention_mask.to(hidden.dtype)[..., None]  # (B, T, 1)
    return (hidden * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """x / max(||x||_2, eps) along the last axis (torch.nn.functional.normalize)."""
    return x / torch.clamp(torch.linalg.vector_norm(x, dim=-1, keepdim=True), min=eps)


def sentence_embedding(cfg: ModelConfig, params: Params, input_ids: torch.Tensor,
                       attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Sentence-transformers embedding (B, hidden): BERT -> mean pooling over real tokens -> L2 normalize."""
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    return l2_normalize(mean_pool(bert_forward(cfg, params, input_ids, mask), mask))


def bert_classify(cfg: ModelConfig, params: Params, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor | None = None,
                  token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Sequence-classification logits (B, num_labels): classifier(tanh(pooler(h[:, 0])))."""
    if not cfg.num_labels:
        raise ValueError("this BERT config has no classification head (num_labels == 0)")
    h = bert_forward(cfg, params, input_ids, attention_mask, token_type_ids)[:, 0]  # (B, C)
    return linear(torch.tanh(linear(h, params, "pooler.dense")), params, "classifier")


# ---------------------------------------------------------------------------------------------------- GPT-2


def _lm_head(cfg: ModelConfig, params: Params, x: torch.Tensor, embed: str) -> torch.Tensor:
    """Logits x E^T with E the (tied) token embedding or lm_head.weight: (B, T, C) -> (B, T, V)."""
    return x @ _w(params, embed if cfg.tie_word_embeddings else "lm_head.weight").T


def gpt2_forward(cfg: ModelConfig, params: Params, input_ids: torch.Tensor,
                 cache: KVCache | None = None) -> torch.Tensor:
    """GPT-2 logits (B, T, V) in float64 for tokens at positions cache.length.. (cache extended in place)."""
    _check_ids(cfg, input_ids)
    t = input_ids.shape[1]
    past = _check_cache(cfg, cache, t)
    x = _w(params, "transformer.wte.weight")[input_ids] + _w(params, "transformer.wpe.weight")[past:past + t]
    allowed = causal_allowed(t, past, x.device)  # (T, S)
    for n in range(cfg.n_layers):
        p = f"transformer.h.{n}"
        qkv = conv1d(layer_norm(x, params, f"{p}.ln_1", cfg.norm_eps), params, f"{p}.attn.c_attn")  # (B, T, 3C)
        q, k, v = (_heads(z, cfg.n_heads) for z in qkv.split(cfg.hidden, dim=-1))
        if cache is not None:
            k, v = cache.extend(n, k, v)
        x = x + conv1d(_merge(attention(q, k, v, allowed)), params, f"{p}.attn.c_proj")
        h = activation(cfg.act, conv1d(layer_norm(x, params, f"{p}.ln_2", cfg.norm_eps), params, f"{p}.mlp.c_fc"))
        x = x + conv1d(h, params, f"{p}.mlp.c_proj")
    return _lm_head(cfg, params, layer_norm(x, params, "transformer.ln_f", cfg.norm_eps), "transformer.wte.weight")


# ---------------------------------------------------------------------------------------------------- LLaMA


def rope_cos_sin(cfg: ModelConfig, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (T, head_dim) of angles pos * theta^(-2i/d), each half-table repeated twice (HF layout)."""
    inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=F64, device=positions.device)
                                        / cfg.head_dim)  # (d/2,)
    angles = positions.to(F64)[:, None] * inv_freq[None, :]  # (T, d/2)
    emb = torch.cat([angles, angles], dim=-1)  # (T, d)
    return torch.cos(emb), torch.sin(emb)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x*cos + rotate_half(x)*sin with rotate_half(x) = (-x[d/2:], x[:d/2]); x (B, H, T, d)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def llama_forward(cfg: ModelConfig, params: Params, input_ids: torch.Tensor,
                  cache: KVCache | None = None) -> torch.Tensor:
    """LLaMA logits (B, T, V) in float64 for tokens at positions cache.length.. (cache extended in place)."""
    _check_ids(cfg, input_ids)
    t = input_ids.shape[1]
    past = _check_cache(cfg, cache, t)
    x = _w(params, "model.embed_tokens.weight")[input_ids]  # (B, T, C)
    cos, sin = rope_cos_sin(cfg, torch.arange(past, past + t, device=x.device))  # (T, d)
    allowed = causal_allowed(t, past, x.device)  # (T, S)
    group = cfg.n_heads // cfg.n_kv_heads
    for n in range(cfg.n_layers):
        p = f"model.layers.{n}"
        h = rms_norm(x, params, f"{p}.input_layernorm", cfg.norm_eps)
        q = apply_rope(_heads(linear(h, params, f"{p}.self_attn.q_proj", cfg.attention_bias), cfg.n_heads), cos, sin)
        k = apply_rope(_heads(linear(h, params, f"{p}.self_attn.k_proj", cfg.attention_bias), cfg.n_kv_heads),
                       cos, sin)  # (B, KV, T, d)
        v = _heads(linear(h, params, f"{p}.self_attn.v_proj", cfg.attention_bias), cfg.n_kv_heads)
        if cache is not None:
            k, v = cache.extend(n, k, v)  # (B, KV, S, d)
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)  # (B, H, S, d)
        x = x + linear(_merge(attention(q, k, v, allowed)), params, f"{p}.self_attn.o_proj", cfg.attention_bias)
        h = rms_norm(x, params, f"{p}.post_attention_layernorm", cfg.norm_eps)
        gated = activation(cfg.act, linear(h, params, f"{p}.mlp.gate_proj", cfg.mlp_bias)) \
            * linear(h, params, f"{p}.mlp.up_proj", cfg.mlp_bias)  # (B, T, I)
        x = x + linear(gated, params, f"{p}.mlp.down_proj", cfg.mlp_bias)
    return _lm_head(cfg, params, rms_norm(x, params, "model.norm", cfg.norm_eps), "model.embed_tokens.weight")


# ---------------------------------------------------------------------------------------------------- generation


def causal_lm_forward(cfg: ModelConfig) -> Callable[..., torch.Tensor]:
    """The decoder forward for this architecture (gpt2_forward or llama_forward)."""
    forwards = {"gpt2": gpt2_forward, "llama": llama_forward}
    if cfg.arch not in forwards:
        raise ValueError(f"{cfg.arch} is not a causal language model")
    return forwards[cfg.arch]


def greedy_generate(cfg: ModelConfig, params: Params, prompt_ids: torch.Tensor, max_new_tokens: int,
                    eos_token_ids: tuple[int, ...] | None = None) -> torch.Tensor:
    """Greedy decoding with a KV cache: new token ids (B, <= max_new_tokens); finished rows repeat their EOS."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    forward = causal_lm_forward(cfg)
    eos = torch.tensor(cfg.eos_token_ids if eos_token_ids is None else eos_token_ids, dtype=torch.int64)
    cache = KVCache.empty(cfg.n_layers)
    logits = forward(cfg, params, prompt_ids, cache)  # (B, T, V)
    done = torch.zeros(prompt_ids.shape[0], dtype=torch.bool)
    out: list[torch.Tensor] = []
    for _ in range(max_new_tokens):
        token = logits[:, -1].argmax(-1)  # (B,)
        if out:
            token = torch.where(done, out[-1], token)
        out.append(token)
        done |= torch.isin(token, eos)
        if bool(done.all()):
            break
        logits = forward(cfg, params, token[:, None], cache)
    return torch.stack(out, dim=1)
