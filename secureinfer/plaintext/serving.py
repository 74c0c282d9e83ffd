"""A plaintext worker's side of a public session: a secure committee's step protocol, tokens and outputs in the clear.

For open models and non-private prompts: one worker runs the plaintext forward (reference.PlainModel: the shared
definition on the torch backend in float64, weights prepared once per session, with its KV cache for decoders) on
its device. Control messages, metadata and step order are those of the secure parties' `serve`
(secureinfer.mpc.models.serving), so the client code is shared (`serving.PUBLIC`).

With a PlaintextStrategy, a GPT-2 / LLaMA decoder asked for "last" runs on a FastDecoder (fast/decoder.py) built
once per session on the worker's device: the first step after ready / reset prefills the prompt rows, each later
step extends them (one new token per row: a decode step). Outputs keep their shape and dtype ((B, 1, V) float64).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from secureinfer.models.config import ModelConfig
from secureinfer.models.requests import CLIENT, DECODE_OUTPUTS, ENCODE_OUTPUTS, RequestError
from secureinfer.mpc.comm import Channel
from secureinfer.strategy import PlaintextStrategy, StrategyError

from . import reference as plaintext

FAST_ARCHS = ("gpt2", "llama")  # the decoders FastDecoder runs


@dataclass(frozen=True)
class PublicModel:
    """An open model held in the clear by a worker: its config and parameters on the worker's device."""

    cfg: ModelConfig
    params: dict[str, torch.Tensor]


def _encode(model: plaintext.PlainModel, ids: torch.Tensor, meta: torch.Tensor, output: str) -> torch.Tensor:
    cfg = model.cfg
    if not isinstance(meta, torch.Tensor) or meta.shape != (2, *ids.shape):
        raise RequestError("malformed step metadata from the client")
    mask, types = meta[0], meta[1]
    if int(types.min()) < 0 or int(types.max()) >= max(cfg.type_vocab_size, 1):
        raise RequestError(f"token types must lie in [0, {cfg.type_vocab_size})")
    if output == "logits":
        if not cfg.num_labels:
            raise RequestError("this model has no classification head")
        return model.classify(ids, mask, types)
    hidden = model.hidden(ids, mask, types)
    return hidden if output == "hidden" else plaintext.mean_pool(hidden, mask)


def _check_ids(cfg: ModelConfig, ids: object, seen: int) -> torch.Tensor:
    if not isinstance(ids, torch.Tensor) or ids.dtype != torch.int64 or ids.dim() != 2 or 0 in ids.shape:
        raise RequestError("tokens must be a non-empty (B, T) int64 tensor")
    if int(ids.min()) < 0 or int(ids.max()) >= cfg.vocab_size:
        raise RequestError(f"token ids must lie in [0, {cfg.vocab_size})")
    if seen + ids.shape[1] > cfg.max_positions:
        raise RequestError(f"{seen} cached + {ids.shape[1]} new positions exceed max_positions={cfg.max_positions}")
    return ids


def same_device_class(a: str, b: str) -> bool:
    """Whether two device names are of one kind ("cpu" vs "cuda" / "cuda:N")."""
    return torch.device(a).type == torch.device(b).type


def check_strategy(cfg: ModelConfig, strategy: PlaintextStrategy, device: str) -> None:
    """Raise RequestError unless this worker (on `device`) can serve `cfg` with `strategy`."""
    if not isinstance(strategy, PlaintextStrategy):
        raise RequestError(f"a public session runs plaintext strategies, not {type(strategy).__name__}")
    if cfg.arch not in FAST_ARCHS:
        raise RequestError(f"plaintext strategies run {', '.join(FAST_ARCHS)} decoders, not {cfg.arch}")
    if not same_device_class(strategy.device, device):
        raise RequestError(f"strategy {strategy.name} asks for device {strategy.device!r}, but this worker computes "
                           f"on {device!r}")
    if strategy.speculation != "none":
        raise RequestError("speculative decoding is not available to step-by-step sessions (the client samples "
                           "each token); use speculation='none'")


class _FastSteps:
    """A session's steps on a FastDecoder: prefill after ready / reset, then one extension per step."""

    def __init__(self, model: PublicModel, strategy: PlaintextStrategy, device: str) -> None:
        from .fast import FastDecoder  # local import: only sessions with a strategy need it

        try:
            self.decoder = FastDecoder(model.cfg, model.params, dataclasses.replace(strategy, device=device))
        except (StrategyError, ValueError) as exc:
            raise RequestError(f"strategy {strategy.name}: {exc}") from exc
        self.rows = 0  # 0: the next step prefills

    def reset(self) -> None:
        self.rows = 0

    @property
    def length(self) -> int:
        return self.decoder.cache.lengths[0] if self.rows else 0

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1, V) at the last of the new tokens ids (B, T)."""
        dec = self.decoder
        b, t = ids.shape
        if self.length + t > dec.max_len:
            raise RequestError(f"{self.length} cached + {t} new positions exceed this decoder's "
                               f"max_len={dec.max_len}")
        if not self.rows:
            if dec.graphs is not None and b > dec.max_batch:
                raise RequestError(f"a batch of {b} exceeds the captured graphs' max_batch={dec.max_batch}")
            dec.reset(b)
            out = dec.prefill(ids)[:, None]
            self.rows = b
        elif b != self.rows:
            raise RequestError(f"a step of {b} rows in a session of {self.rows}; reset first")
        elif t == 1:
            out = dec.decode_step(ids[:, 0])[:, None]
        else:
            out = dec.extend(ids)[:, -1:]
        return out


def serve_public(channel: Channel, model: PublicModel, output: str, *, client: str = CLIENT,
                 device: str = "cpu", strategy: PlaintextStrategy | None = None) -> list[float]:
    """Say ready, then serve the client's steps in the clear until it says stop; returns each step's seconds.

    `strategy` (decoders, output "last"): run the steps on a FastDecoder configured by it, on `device`."""
    cfg = model.cfg
    allowed = DECODE_OUTPUTS if cfg.causal else ENCODE_OUTPUTS
    if output not in allowed:
        raise RequestError(f"unknown output {output!r} for {cfg.arch}; choose from {', '.join(allowed)}")
    if strategy is not None:
        check_strategy(cfg, strategy, device)
    fast = _FastSteps(model, strategy, device) if strategy is not None and cfg.causal and output == "last" else None
    plain = plaintext.PlainModel(cfg, model.params)
    channel.send(client, b"ready", "ready")
    cache = plaintext.KVCache.empty(cfg.n_layers) if cfg.causal else None
    steps: list[float] = []
    while True:
        ctrl = channel.recv(client, "ctrl")
        if ctrl == b"stop":
            return steps
        if ctrl == b"reset":
            cache = plaintext.KVCache.empty(cfg.n_layers) if cfg.causal else None
            if fast is not None:
                fast.reset()
            continue
        if ctrl != b"step":
            raise RequestError("unexpected control message from the client")
        meta = None if cfg.causal else channel.recv(client, "meta")
        seen = fast.length if fast is not None else cache.length if cache is not None else 0
        ids = _check_ids(cfg, channel.recv(client, "tokens"), seen).to(device)
        start = time.perf_counter()
        with torch.no_grad():
            if fast is not None:
                out = fast.step(ids)
            elif not cfg.causal:
                out = _encode(plain, ids, meta.to(device) if isinstance(meta, torch.Tensor) else meta, output)
            else:
                out = plain.logits(ids, cache, last_only=output == "last")
        channel.send(client, out.to("cpu", torch.float64).contiguous(), "output")
        steps.append(time.perf_counter() - start)
