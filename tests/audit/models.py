"""Tiny BERT, GPT-2 and LLaMA configurations and audited secure runs on the in-process runtime."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from secureinfer.models.config import ModelConfig, parameter_shapes
from secureinfer.mpc.comm.audit import Inbound, Recorder
from secureinfer.mpc.models import serving, session
from secureinfer.mpc.party import PARTY_NAMES, EngineConfig

from .leakage import Canaries, make_canaries

VOCAB = 13


def tiny(arch: str, hidden: int = 8, layers: int = 1, vocab: int = VOCAB) -> ModelConfig:
    """A one-layer model of the family with hidden size `hidden` (two heads)."""
    common = dict(vocab_size=vocab, hidden=hidden, n_layers=layers, n_heads=2, head_dim=hidden // 2,
                  intermediate=2 * hidden, max_positions=16)
    if arch == "bert":
        return ModelConfig(arch="bert", n_kv_heads=2, norm_eps=1e-12, act="gelu", type_vocab_size=2, **common)
    if arch == "gpt2":
        return ModelConfig(arch="gpt2", n_kv_heads=2, norm_eps=1e-5, act="gelu_tanh", bos_token_id=0,
                           eos_token_ids=(1,), **common)
    return ModelConfig(arch="llama", n_kv_heads=1, norm_eps=1e-5, act="silu", rope_theta=500.0,
                       attention_bias=False, mlp_bias=False, bos_token_id=0, eos_token_ids=(1,), **common)


def params_for(cfg: ModelConfig, seed: int) -> dict[str, torch.Tensor]:
    """Random parameters of the config's shapes (test data; gains near 1)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in sorted(parameter_shapes(cfg).items()):
        noise = torch.randn(shape, generator=gen, dtype=torch.float64)
        out[name] = 1.0 + 0.1 * noise if len(shape) == 1 and name.endswith("weight") else 0.3 * noise
    return out


def embedding_output(cfg: ModelConfig, params: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """The first secret activation in ring form (B, T, C): table rows summed, exactly as the parties compute it."""
    fxp = EngineConfig().fxp
    folded = {k: fxp.encode(v) for k, v in serving.owner_params(cfg, params).items()}
    word = next(v for k, v in folded.items() if k.endswith(("word_embeddings.weight", "wte.weight",
                                                             "embed_tokens.weight")))
    out = word[ids]
    positions = [v for k, v in folded.items() if k.endswith(("position_embeddings.weight", "wpe.weight"))]
    if positions:
        out = out + positions[0][: ids.shape[1]]
    types = [v for k, v in folded.items() if k.endswith("token_type_embeddings.weight")]
    if types:
        out = out + types[0][0]
    return out


def canaries_for(cfg: ModelConfig, params: dict[str, torch.Tensor], ids: torch.Tensor) -> Canaries:
    return make_canaries(serving.owner_params(cfg, params), embedding_output(cfg, params, ids), ids, cfg.vocab_size)


def audited(cfg: ModelConfig, params: dict[str, torch.Tensor], ids: torch.Tensor, *, new_tokens: int = 0,
            public_weights: bool = False) -> tuple[list[list[Inbound]], Any]:
    """Run one secure session (BERT: encode; decoders: logits, or generation with the KV cache) with a recorder;
    returns what each party received, and the client's result."""
    recorder = Recorder(PARTY_NAMES)
    kw: dict[str, Any] = dict(public_weights=public_weights, recorder=recorder)
    if cfg.arch == "bert":
        result, _ = session.secure_encode(cfg, params, ids, output="hidden", **kw)
    elif new_tokens:
        result, _ = session.secure_generate(cfg, params, ids, new_tokens, **kw)
    else:
        result, _ = session.secure_logits(cfg, params, ids, **kw)
    return [recorder.inbound(p) for p in PARTY_NAMES], result


def repeated(run: Callable[[], tuple[list[list[Inbound]], Any]], runs: int) -> list[list[list[Inbound]]]:
    """views[i] = party i's inbound messages of each of `runs` runs."""
    views: list[list[list[Inbound]]] = [[], [], []]
    for _ in range(runs):
        inbound, _ = run()
        for i in range(3):
            views[i].append(inbound[i])
    return views
