"""The worker's side of a public session: the same step protocol as serving.py, with tokens and outputs in the clear.

For open models and non-private prompts: one worker runs the plaintext forward (plaintext.py, with its KV cache
for decoders) on its device. Control messages, metadata and step order are those of `serving.serve`, so the
client code is shared (`serving.PUBLIC`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..comm import Channel
from . import plaintext
from .checkpoint import ModelConfig
from .serving import CLIENT, DECODE_OUTPUTS, ENCODE_OUTPUTS, RequestError


@dataclass(frozen=True)
class PublicModel:
    """An open model held in the clear by a worker: its config and parameters on the worker's device."""

    cfg: ModelConfig
    params: dict[str, torch.Tensor]


def _encode(model: PublicModel, ids: torch.Tensor, meta: torch.Tensor, output: str) -> torch.Tensor:
    cfg, params = model.cfg, model.params
    if not isinstance(meta, torch.Tensor) or meta.shape != (2, *ids.shape):
        raise RequestError("malformed step metadata from the client")
    mask, types = meta[0], meta[1]
    if int(types.min()) < 0 or int(types.max()) >= max(cfg.type_vocab_size, 1):
        raise RequestError(f"token types must lie in [0, {cfg.type_vocab_size})")
    if output == "logits":
        if not cfg.num_labels:
            raise RequestError("this model has no classification head")
        return plaintext.bert_classify(cfg, params, ids, mask, types)
    hidden = plaintext.bert_forward(cfg, params, ids, mask, types)
    return hidden if output == "hidden" else plaintext.mean_pool(hidden, mask)


def _check_ids(cfg: ModelConfig, ids: object, seen: int) -> torch.Tensor:
    if not isinstance(ids, torch.Tensor) or ids.dtype != torch.int64 or ids.dim() != 2 or 0 in ids.shape:
        raise RequestError("tokens must be a non-empty (B, T) int64 tensor")
    if int(ids.min()) < 0 or int(ids.max()) >= cfg.vocab_size:
        raise RequestError(f"token ids must lie in [0, {cfg.vocab_size})")
    if seen + ids.shape[1] > cfg.max_positions:
        raise RequestError(f"{seen} cached + {ids.shape[1]} new positions exceed max_positions={cfg.max_positions}")
    return ids


def serve_public(channel: Channel, model: PublicModel, output: str, *, client: str = CLIENT,
                 device: str = "cpu") -> list[float]:
    """Say ready, then serve the client's steps in the clear until it says stop; returns each step's seconds."""
    cfg = model.cfg
    allowed = DECODE_OUTPUTS if cfg.causal else ENCODE_OUTPUTS
    if output not in allowed:
        raise RequestError(f"unknown output {output!r} for {cfg.arch}; choose from {', '.join(allowed)}")
    forward = plaintext.causal_lm_forward(cfg) if cfg.causal else None
    channel.send(client, b"ready", "ready")
    cache = plaintext.KVCache.empty(cfg.n_layers) if cfg.causal else None
    steps: list[float] = []
    while True:
        ctrl = channel.recv(client, "ctrl")
        if ctrl == b"stop":
            return steps
        if ctrl == b"reset":
            cache = plaintext.KVCache.empty(cfg.n_layers) if cfg.causal else None
            continue
        if ctrl != b"step":
            raise RequestError("unexpected control message from the client")
        meta = None if cfg.causal else channel.recv(client, "meta")
        seen = cache.length if cache is not None else 0
        ids = _check_ids(cfg, channel.recv(client, "tokens"), seen).to(device)
        start = time.perf_counter()
        with torch.no_grad():
            if forward is None:
                out = _encode(model, ids, meta.to(device) if isinstance(meta, torch.Tensor) else meta, output)
            else:
                out = forward(cfg, model.params, ids, cache)
                out = out[:, -1:] if output == "last" else out
        channel.send(client, out.to("cpu", torch.float64).contiguous(), "output")
        steps.append(time.perf_counter() - start)
