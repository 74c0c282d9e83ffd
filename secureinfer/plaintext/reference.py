"""Plaintext reference forwards for BERT, GPT-2 and LLaMA: the shared definitions on the torch backend.

These are the references the secure models are compared against; both run secureinfer.models.arch's one definition
per architecture (see its docstring for the op order), here with torch_ops in float64 whatever the parameter dtype
(the module constant F64, read at call time: the bench sweep swaps it for lower-precision plaintext runs).
`PlainModel` prepares a model's weights once (views, no copies) and runs its forwards; the functions below are the
same forwards for one call each.
Decoders take an optional KVCache: keys/values of earlier positions, appended in place; new tokens sit at positions
cache.length.. . No padding masks for the decoders (every row of a batch has the same length).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from secureinfer.models import arch
from secureinfer.models.config import ModelConfig

from .torch_ops import TorchBuilder, TorchOps
from .torch_ops import mean_pool as _mean_pool

Params = dict[str, torch.Tensor]
F64 = torch.float64


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


class PlainModel:
    """A BERT, GPT-2 or LLaMA in the clear: the shared definition on the torch backend, weights prepared once.

    `dtype` (default F64) is the compute dtype; the weights are views of `params` (cast only where the dtypes
    differ), on the parameters' device."""

    def __init__(self, cfg: ModelConfig, params: Params, *, dtype: torch.dtype | None = None) -> None:
        self.cfg = cfg
        self.dtype = F64 if dtype is None else dtype
        self.weights = arch.load(cfg, params, TorchBuilder(self.dtype))

    def _ops(self, ids: torch.Tensor, past: int, kv: Callable | None) -> TorchOps:
        t = ids.shape[1]
        return TorchOps(torch.arange(past, past + t, device=ids.device)[None], past + t, kv)  # positions (1, T)

    def logits(self, input_ids: torch.Tensor, cache: KVCache | None = None, *,
               last_only: bool = False) -> torch.Tensor:
        """Decoder logits (B, T, V), or (B, 1, V) with `last_only`, for tokens at positions cache.length.. ."""
        cfg = self.cfg
        if not cfg.causal:
            raise ValueError(f"{cfg.arch} is not a causal language model")
        _check_ids(cfg, input_ids)
        past = _check_cache(cfg, cache, input_ids.shape[1])
        ops = self._ops(input_ids, past, None if cache is None else cache.extend)
        return arch.decoder_logits(cfg)(ops, cfg, self.weights, input_ids, last_only=last_only)

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """BERT last hidden states (B, T, hidden); attention_mask (B, T) is 1 for real tokens."""
        self._check_encoder(input_ids)
        ops = self._ops(input_ids, 0, None)
        return arch.bert_hidden(ops, self.cfg, self.weights, input_ids, attention_mask, token_type_ids)

    def classify(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """BERT sequence-classification logits (B, num_labels)."""
        self._check_encoder(input_ids)
        if not self.cfg.num_labels:
            raise ValueError("this BERT config has no classification head (num_labels == 0)")
        ops = self._ops(input_ids, 0, None)
        return arch.bert_classify(ops, self.cfg, self.weights, input_ids, attention_mask, token_type_ids)

    def _check_encoder(self, input_ids: torch.Tensor) -> None:
        if self.cfg.causal:
            raise ValueError(f"{self.cfg.arch} is not an encoder")
        _check_ids(self.cfg, input_ids)


# ---------------------------------------------------------------------------------------------------- BERT


def bert_forward(cfg: ModelConfig, params: Params, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor | None = None,
                 token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
    """BERT encoder: last hidden states (B, T, hidden) in float64; attention_mask (B, T) is 1 for real tokens."""
    return PlainModel(cfg, params).hidden(input_ids, attention_mask, token_type_ids)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the hidden states over real tokens: (B, T, C), (B, T) -> (B, C)."""
    return _mean_pool(hidden, attention_mask)


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
    return PlainModel(cfg, params).classify(input_ids, attention_mask, token_type_ids)


# ---------------------------------------------------------------------------------------------------- decoders


def gpt2_forward(cfg: ModelConfig, params: Params, input_ids: torch.Tensor,
                 cache: KVCache | None = None) -> torch.Tensor:
    """GPT-2 logits (B, T, V) in float64 for tokens at positions cache.length.. (cache extended in place)."""
    if cfg.arch != "gpt2":
        raise ValueError(f"gpt2_forward needs a gpt2 config, got {cfg.arch}")
    return PlainModel(cfg, params).logits(input_ids, cache)


def llama_forward(cfg: ModelConfig, params: Params, input_ids: torch.Tensor,
                  cache: KVCache | None = None) -> torch.Tensor:
    """LLaMA logits (B, T, V) in float64 for tokens at positions cache.length.. (cache extended in place)."""
    if cfg.arch != "llama":
        raise ValueError(f"llama_forward needs a llama config, got {cfg.arch}")
    return PlainModel(cfg, params).logits(input_ids, cache)


def rope_cos_sin(cfg: ModelConfig, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (T, head_dim) of angles pos * theta^(-2i/d), each half-table repeated twice (HF layout)."""
    return arch.rope_cos_sin(cfg.head_dim, cfg.rope_theta, positions)


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
    causal_lm_forward(cfg)  # refuses encoders
    model = PlainModel(cfg, params)
    eos = torch.tensor(cfg.eos_token_ids if eos_token_ids is None else eos_token_ids, dtype=torch.int64)
    cache = KVCache.empty(cfg.n_layers)
    logits = model.logits(prompt_ids, cache)  # (B, T, V)
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
        logits = model.logits(token[:, None], cache)
    return torch.stack(out, dim=1)
