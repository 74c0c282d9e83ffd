"""One definition per architecture: BERT, GPT-2 and LLaMA, written once against the backend interface (ops.py).

Each family has a loader (checkpoint names -> weights, through a WeightBuilder) and a forward (through ModelOps).
The secure models (secureinfer.mpc.models: the secure_ops backend), the float64 references
(secureinfer.plaintext.reference), the plaintext worker (secureinfer.plaintext.serving) and the fast decoder
(secureinfer.plaintext.fast: the torch_ops backend) all run these, so the order of
ops, the residuals, the norms, the activations and the attention variant cannot drift between them.

GPT-2 (pre-LN decoder; Conv1D weights are (in, out)):
    x = wte[ids] + wpe[positions]
    per block: x = x + c_proj(causal_attn(c_attn(LN_1(x)))); x = x + mlp.c_proj(act(mlp.c_fc(LN_2(x))))
    logits = LN_f(x) @ (wte or lm_head)^T
LLaMA (pre-RMSNorm decoder; nn.Linear weights (out, in)):
    x = embed_tokens[ids]
    per layer: h = RMSNorm_in(x); q, k, v = h Wq, h Wk, h Wv (fused), q and k rotated (Hugging Face rotate-half
        RoPE), grouped-query attention (query head j reads KV head j // (H / KV)); x = x + o_proj(attn)
        x = x + down_proj(act(gate_proj(h')) * up_proj(h')), h' = RMSNorm_post(x)
    logits = RMSNorm_f(x) @ (embed_tokens or lm_head)^T
BERT (post-LN encoder):
    x = LN(word[ids] + position[0..T) + token_type[types])
    per layer: x = LN(x + attention(x)) (padded keys never attended); x = LN(x + W_out act(W_i x + b_i) + b_out)
    pooling: mean over real tokens; classification: classifier(tanh(pooler(x[:, 0]))).
Decoders take `last_only` (the last block's queries, MLP, final norm and head run on the rows ops.last picks) and
`n_layers` (run only the first n blocks, then the final norm and head: the fast decoder's early-exit draft).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from .config import ModelConfig
from .ops import ModelOps, WeightBuilder

Params = dict[str, Any]


@dataclass(frozen=True)
class Norm:
    """LayerNorm (`center`, weight and bias) or RMSNorm (weight, bias None) over the last axis."""

    weight: Any
    bias: Any | None
    eps: float
    center: bool


@dataclass(frozen=True)
class DecoderBlock:
    """One GPT-2 / LLaMA block: pre-norms, attention block, MLP (GPT-2: c_fc; LLaMA: gate|up fused) and down."""

    norm1: Norm
    attn: Any
    norm2: Norm
    up: Any
    down: Any


@dataclass(frozen=True)
class DecoderWeights:
    """A decoder's weights in one backend's form."""

    embed: Any  # token table (V, C)
    positions: Any | None  # GPT-2 learned positions (P, C); None for rotary (LLaMA)
    blocks: list[DecoderBlock]
    final_norm: Norm
    head: Any  # the LM head table (V, C): the token table itself when tied


@dataclass(frozen=True)
class EncoderLayer:
    """One BERT layer: attention, post-attention LayerNorm, MLP, output LayerNorm."""

    attn: Any
    norm1: Norm
    fc1: Any
    fc2: Any
    norm2: Norm


@dataclass(frozen=True)
class EncoderWeights:
    """A BERT encoder's weights in one backend's form (pooler and classifier None when absent)."""

    word: Any
    position: Any
    token_type: Any
    emb_norm: Norm
    layers: list[EncoderLayer]
    pooler: Any | None
    classifier: Any | None


class _Source:
    """Parameters by checkpoint name; with `consume`, each is popped as it is taken (peak memory ~ one copy)."""

    def __init__(self, params: Params, consume: bool) -> None:
        self.params, self.consume = params, consume

    def take(self, name: str) -> Any:
        if name not in self.params:
            raise KeyError(f"parameter {name} is missing")
        return self.params.pop(name) if self.consume else self.params[name]

    def has(self, name: str) -> bool:
        return name in self.params


# ---------------------------------------------------------------------------------------------------- loaders


def load_gpt2(cfg: ModelConfig, params: Params, b: WeightBuilder, *, consume: bool = False) -> DecoderWeights:
    """GPT2LMHeadModel-named parameters as DecoderWeights (c_attn is already the fused q|k|v)."""
    _check_arch(cfg, "gpt2")
    s = _Source(params, consume)

    def conv(prefix: str) -> Any:
        return b.linear(s.take(f"{prefix}.weight"), s.take(f"{prefix}.bias"), out_in=False)

    def norm(prefix: str) -> Norm:
        return Norm(b.param(s.take(f"{prefix}.weight")), b.param(s.take(f"{prefix}.bias")), cfg.norm_eps, True)

    embed, positions = b.table(s.take("transformer.wte.weight")), b.param(s.take("transformer.wpe.weight"))
    blocks = []
    for n in range(cfg.n_layers):
        p = f"transformer.h.{n}"
        attn = b.attention(conv(f"{p}.attn.c_attn"), conv(f"{p}.attn.c_proj"), cfg.n_heads, cfg.n_heads,
                           cfg.head_dim)
        blocks.append(DecoderBlock(norm(f"{p}.ln_1"), attn, norm(f"{p}.ln_2"), conv(f"{p}.mlp.c_fc"),
                                   conv(f"{p}.mlp.c_proj")))
    final = norm("transformer.ln_f")
    head = embed if cfg.tie_word_embeddings else b.table(s.take("lm_head.weight"))
    return DecoderWeights(embed, positions, blocks, final, head)


def load_llama(cfg: ModelConfig, params: Params, b: WeightBuilder, *, consume: bool = False) -> DecoderWeights:
    """LlamaForCausalLM-named parameters as DecoderWeights (q|k|v and gate|up fused)."""
    _check_arch(cfg, "llama")
    s = _Source(params, consume)

    def linear(prefix: str, bias: bool) -> Any:
        return b.linear(s.take(f"{prefix}.weight"), s.take(f"{prefix}.bias") if bias else None, out_in=True)

    def norm(prefix: str) -> Norm:
        return Norm(b.param(s.take(f"{prefix}.weight")), None, cfg.norm_eps, False)

    ab, mb = cfg.attention_bias, cfg.mlp_bias
    embed = b.table(s.take("model.embed_tokens.weight"))
    blocks = []
    for n in range(cfg.n_layers):
        p = f"model.layers.{n}"
        qkv = b.fuse([linear(f"{p}.self_attn.{x}_proj", ab) for x in ("q", "k", "v")])
        attn = b.attention(qkv, linear(f"{p}.self_attn.o_proj", ab), cfg.n_heads, cfg.n_kv_heads, cfg.head_dim)
        gate_up = b.fuse([linear(f"{p}.mlp.gate_proj", mb), linear(f"{p}.mlp.up_proj", mb)])
        blocks.append(DecoderBlock(norm(f"{p}.input_layernorm"), attn, norm(f"{p}.post_attention_layernorm"),
                                   gate_up, linear(f"{p}.mlp.down_proj", mb)))
    final = norm("model.norm")
    head = embed if cfg.tie_word_embeddings else b.table(s.take("lm_head.weight"))
    return DecoderWeights(embed, None, blocks, final, head)


def load_bert(cfg: ModelConfig, params: Params, b: WeightBuilder, *, consume: bool = False) -> EncoderWeights:
    """BertModel-named parameters (plus optional pooler / classifier) as EncoderWeights (q|k|v fused)."""
    _check_arch(cfg, "bert")
    s = _Source(params, consume)

    def linear(prefix: str) -> Any:
        return b.linear(s.take(f"{prefix}.weight"), s.take(f"{prefix}.bias"), out_in=True)

    def norm(prefix: str) -> Norm:
        return Norm(b.param(s.take(f"{prefix}.weight")), b.param(s.take(f"{prefix}.bias")), cfg.norm_eps, True)

    word = b.table(s.take("embeddings.word_embeddings.weight"))
    position = b.param(s.take("embeddings.position_embeddings.weight"))
    token_type = b.param(s.take("embeddings.token_type_embeddings.weight"))
    emb_norm = norm("embeddings.LayerNorm")
    layers = []
    for n in range(cfg.n_layers):
        p = f"encoder.layer.{n}"
        qkv = b.fuse([linear(f"{p}.attention.self.{x}") for x in ("query", "key", "value")])
        attn = b.attention(qkv, linear(f"{p}.attention.output.dense"), cfg.n_heads, cfg.n_heads, cfg.head_dim)
        layers.append(EncoderLayer(attn, norm(f"{p}.attention.output.LayerNorm"), linear(f"{p}.intermediate.dense"),
                                   linear(f"{p}.output.dense"), norm(f"{p}.output.LayerNorm")))
    pooler = linear("pooler.dense") if s.has("pooler.dense.weight") else None
    classifier = linear("classifier") if s.has("classifier.weight") else None
    return EncoderWeights(word, position, token_type, emb_norm, layers, pooler, classifier)


def load(cfg: ModelConfig, params: Params, b: WeightBuilder, *, consume: bool = False
         ) -> DecoderWeights | EncoderWeights:
    """The family's loader for `cfg.arch`."""
    loaders = {"bert": load_bert, "gpt2": load_gpt2, "llama": load_llama}
    return loaders[cfg.arch](cfg, params, b, consume=consume)


def _check_arch(cfg: ModelConfig, arch: str) -> None:
    if cfg.arch != arch:
        raise ValueError(f"this loader needs a {arch} config, got {cfg.arch}")


# ---------------------------------------------------------------------------------------------------- forwards


def _blocks(w: DecoderWeights, n_layers: int | None) -> list[DecoderBlock]:
    """The first n_layers blocks (all when None)."""
    blocks = w.blocks if n_layers is None else w.blocks[:n_layers]
    if not blocks:
        raise ValueError(f"a decoder forward needs at least one block, got n_layers={n_layers}")
    return blocks


def gpt2_logits(ops: ModelOps, cfg: ModelConfig, w: DecoderWeights, tokens: Any, *, last_only: bool = False,
                n_layers: int | None = None) -> Any:
    """GPT-2 logits (B, T, V), or (B, 1, V) with `last_only`, for tokens (B, T[, V]) after the cached positions."""
    pos = ops.positions(tokens.shape[1])
    x = ops.embed(tokens, w.embed, [(w.positions, pos)])  # (B, T, C)
    blocks = _blocks(w, n_layers)
    for n, blk in enumerate(blocks):
        last = last_only and n == len(blocks) - 1
        a = ops.attention(ops.norm(x, blk.norm1), blk.attn, n, causal=True, last_only=last)
        x = (ops.last(x) if last else x) + a
        h = ops.dense(ops.norm(x, blk.norm2), blk.up, "mlp.fc1")  # (B, T, I)
        h = ops.act(h, cfg.act, "mlp.gelu")
        x = x + ops.dense(h, blk.down, "mlp.fc2")
    return ops.lm_head(ops.norm(x, w.final_norm), w.head)


def llama_logits(ops: ModelOps, cfg: ModelConfig, w: DecoderWeights, tokens: Any, *, last_only: bool = False,
                 n_layers: int | None = None) -> Any:
    """LLaMA logits (B, T, V), or (B, 1, V) with `last_only`, for tokens (B, T[, V]) after the cached positions."""
    pos = ops.positions(tokens.shape[1])
    rope = ops.rotary(pos, cfg.head_dim, cfg.rope_theta)
    x = ops.embed(tokens, w.embed)  # (B, T, C)
    inter = cfg.intermediate
    blocks = _blocks(w, n_layers)
    for n, blk in enumerate(blocks):
        last = last_only and n == len(blocks) - 1
        a = ops.attention(ops.norm(x, blk.norm1), blk.attn, n, causal=True, rope=rope, last_only=last)
        x = (ops.last(x) if last else x) + a
        gu = ops.dense(ops.norm(x, blk.norm2), blk.up, "mlp.fc1")  # (B, T, 2I): gate | up
        g = ops.act(gu[..., :inter], cfg.act, "mlp.silu")
        h = ops.mul(g, gu[..., inter:], "mlp.gate_mul")  # (B, T, I)
        x = x + ops.dense(h, blk.down, "mlp.fc2")
    return ops.lm_head(ops.norm(x, w.final_norm), w.head)


def decoder_logits(cfg: ModelConfig) -> Callable[..., Any]:
    """The decoder forward for this architecture (gpt2_logits or llama_logits)."""
    forwards = {"gpt2": gpt2_logits, "llama": llama_logits}
    if cfg.arch not in forwards:
        raise ValueError(f"{cfg.arch} is not a causal language model")
    return forwards[cfg.arch]


def bert_hidden(ops: ModelOps, cfg: ModelConfig, w: EncoderWeights, tokens: Any,
                attention_mask: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None) -> Any:
    """BERT last hidden states (B, T, C); attention_mask (B, T) public, 1 for real tokens."""
    b, t = tokens.shape[0], tokens.shape[1]
    if t > cfg.max_positions:
        raise ValueError(f"sequence length {t} exceeds max_positions {cfg.max_positions}")
    types = torch.zeros(b, t, dtype=torch.int64) if token_type_ids is None else token_type_ids.long()
    x = ops.embed(tokens, w.word, [(w.position, ops.positions(t)), (w.token_type, types)])  # (B, T, C)
    x = ops.norm(x, w.emb_norm)
    for n, layer in enumerate(w.layers):
        a = ops.attention(x, layer.attn, n, causal=False, key_mask=attention_mask)
        x = ops.norm(x + a, layer.norm1)
        h = ops.act(ops.dense(x, layer.fc1, "mlp.fc1"), cfg.act, "mlp.gelu")  # (B, T, I)
        x = ops.norm(x + ops.dense(h, layer.fc2, "mlp.fc2"), layer.norm2)
    return x


def bert_pooled(ops: ModelOps, cfg: ModelConfig, w: EncoderWeights, tokens: Any,
                attention_mask: torch.Tensor | None = None) -> Any:
    """Mean of the last hidden states over real tokens (B, C) (sentence-transformers L2-normalises it after)."""
    return ops.mean_pool(bert_hidden(ops, cfg, w, tokens, attention_mask), attention_mask)


def bert_classify(ops: ModelOps, cfg: ModelConfig, w: EncoderWeights, tokens: Any,
                  attention_mask: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None) -> Any:
    """Sequence-classification logits (B, num_labels): classifier(tanh(pooler(h[:, 0])))."""
    if w.pooler is None or w.classifier is None:
        raise ValueError("this BERT has no pooler/classifier weights")
    h = bert_hidden(ops, cfg, w, tokens, attention_mask, token_type_ids)[:, 0]  # (B, C)
    with ops.section("head"):
        return ops.dense(ops.tanh(ops.dense(h, w.pooler)), w.classifier)


# ---------------------------------------------------------------------------------------------------- rotary


def rope_cos_sin(head_dim: int, theta: float, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (*positions.shape, head_dim) in float64 of angles pos * theta^(-2i/d), each half repeated (HF)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64, device=positions.device)
                               / head_dim)  # (d/2,)
    angles = positions.to(torch.float64)[..., None] * inv_freq  # (..., d/2)
    emb = torch.cat([angles, angles], dim=-1)  # (..., d)
    return torch.cos(emb), torch.sin(emb)

