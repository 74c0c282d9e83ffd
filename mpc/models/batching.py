"""Batching concurrent secure requests into one forward: several requests' steps stacked along the batch axis, run
once by the three parties, and split back so that each request gets only its own rows.

A request's step is a `BatchItem`: its one-hot token shares (B_i, T_i, V), BERT's public metadata (2, B_i, T_i) and,
for decoders, its own secret KV cache. Rows never mix: every op of the forwards works per sequence (attention within a
row's own positions, norms per position, matmuls and truncations per element), so a row's output depends only on its
own inputs; batching changes the shapes the parties compute on, not what any row computes.
  - encoders: steps of any length join; shorter ones are padded to the longest with zero one-hot rows (a trivial
    sharing of zero, no message) and padding-mask 0, which attention and the mean pool ignore;
  - decoders: steps join only with equal new positions T and cached length (`shape_key`); their caches are
    concatenated along the batch axis for the step and split back after it.
The split parts are this party's shares of each request's output; nothing is opened here. `serve_batched` is one
request's side of the step protocol of serving.py (same messages to and from its client), its computation handed to
a caller-supplied function that runs it together with other requests' steps (the node's batcher).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from secureinfer.models.config import ModelConfig
from secureinfer.models.requests import CLIENT, RequestError

from ..party import Party
from ..protocols import reveal
from ..shares import AShare, cat
from . import serving
from .blocks import SecretKVCache
from .serving import Step


@dataclass(frozen=True)
class BatchItem:
    """One request's step as this party holds it."""

    onehot: AShare  # (B, T, V) token one-hot shares
    meta: torch.Tensor | None  # (2, B, T) int64 BERT padding mask and token types (public); None for decoders
    cache: SecretKVCache | None  # decoders: this request's cache (B rows) before the step; None for encoders

    @property
    def rows(self) -> int:
        return int(self.onehot.shape[0])

    @property
    def positions(self) -> int:
        return int(self.onehot.shape[1])

    @property
    def cached(self) -> int:
        return self.cache.length if self.cache is not None else 0


def shape_key(cfg: ModelConfig, item: BatchItem) -> tuple[int, ...]:
    """Items batch together only under equal keys: decoders (new positions, cached positions); encoders () (padded)."""
    return (item.positions, item.cached) if cfg.causal else ()


def check_meta(cfg: ModelConfig, item: BatchItem) -> None:
    """RequestError unless an encoder item's metadata is a (2, B, T) int64 mask of 0/1 with types in range (a bad one
    would fail the whole batch, not just its own request)."""
    if cfg.causal:
        return
    meta = item.meta
    if not isinstance(meta, torch.Tensor) or meta.dtype != torch.int64 or \
            tuple(meta.shape) != (2, item.rows, item.positions):
        raise RequestError("malformed step metadata from the client: need a (2, B, T) int64 mask and token types")
    mask, types = meta[0], meta[1]
    if not bool(((mask == 0) | (mask == 1)).all()) or not bool(mask.any(dim=1).all()):
        raise RequestError("the padding mask must be 0/1 with at least one real token per row")
    if int(types.min()) < 0 or int(types.max()) >= max(cfg.type_vocab_size, 1):
        raise RequestError(f"token types must lie in [0, {max(cfg.type_vocab_size, 1)})")


def placeholder(cfg: ModelConfig, index: int, device: str, rows: int, positions: int, cached: int) -> BatchItem:
    """Party `index`'s zero shares standing in for a member whose step it does not hold (its client went away, or
    sent the parties different shapes): its rows are computed and discarded, and no other row depends on them."""
    zeros = torch.zeros(rows, positions, cfg.vocab_size, dtype=torch.int64, device=device)
    meta = None
    if not cfg.causal:
        meta = torch.stack([torch.ones(rows, positions, dtype=torch.int64),
                            torch.zeros(rows, positions, dtype=torch.int64)])
    cache = SecretKVCache.empty(cfg.n_layers) if cfg.causal else None
    if cache is not None and cached:
        kv = torch.zeros(rows, cfg.n_kv_heads, cached, cfg.head_dim, dtype=torch.int64, device=device)
        for layer in range(cfg.n_layers):
            cache.extend(layer, AShare(kv, kv, index), AShare(kv, kv, index))
    return BatchItem(AShare(zeros, zeros, index), meta, cache)


def _pad(x: AShare, positions: int) -> AShare:
    """(B, T, V) shares padded with zero rows to (B, positions, V)."""
    extra = positions - x.shape[1]
    if extra == 0:
        return x
    zeros = torch.zeros(x.shape[0], extra, x.shape[2], dtype=torch.int64, device=x.device)
    return cat([x, AShare(zeros, zeros, x.party)], dim=1)


def stack(cfg: ModelConfig, items: list[BatchItem]) -> tuple[AShare, torch.Tensor | None, SecretKVCache | None]:
    """The batch's one-hot shares (sum B_i, T, V), metadata (2, sum B_i, T) and cache, in item order."""
    if not items or len({shape_key(cfg, item) for item in items}) != 1:
        raise ValueError("a batch needs at least one item, all of one shape key")
    positions = max(item.positions for item in items)
    onehot = cat([_pad(item.onehot, positions) for item in items], dim=0)
    meta = None
    if not cfg.causal:
        padded = [torch.nn.functional.pad(item.meta, (0, positions - item.positions)) for item in items]
        meta = torch.cat(padded, dim=1)
    cache = None
    if cfg.causal:
        cache = SecretKVCache.empty(cfg.n_layers)
        if items[0].cached:
            for layer in range(cfg.n_layers):
                cache.extend(layer, cat([item.cache.keys[layer] for item in items], dim=0),
                             cat([item.cache.values[layer] for item in items], dim=0))
    return onehot, meta, cache


def split(cfg: ModelConfig, out: AShare, cache: SecretKVCache | None, items: list[BatchItem]
          ) -> list[tuple[AShare, SecretKVCache | None]]:
    """Each item's own rows of the batch's output shares (and positions, for per-position encoder outputs) and of the
    extended cache."""
    parts, start = [], 0
    for item in items:
        rows = slice(start, start + item.rows)
        start += item.rows
        mine = out[rows]
        if not cfg.causal and mine.lo.dim() == 3:  # "hidden": (B, T, C) padded to the longest item
            mine = mine[:, : item.positions]
        own_cache = None
        if cache is not None:
            own_cache = SecretKVCache([k[rows] for k in cache.keys], [v[rows] for v in cache.values])
        parts.append((mine.contiguous(), own_cache))
    return parts


def run(party: Party, model, step: Step, cfg: ModelConfig, items: list[BatchItem]
        ) -> list[tuple[AShare, SecretKVCache | None]]:
    """One forward over every item's step together; each item's output shares and cache, in item order."""
    onehot, meta, cache = stack(cfg, items)
    out = step(party, model, onehot, meta, cache)
    return split(cfg, out, cache, items)


Compute = Callable[[BatchItem], tuple[AShare, SecretKVCache | None]]


def serve_batched(party: Party, cfg: ModelConfig, with_meta: bool, compute: Compute, *, client: str = CLIENT
                  ) -> int:
    """One request's side of `serving.serve` with each step's computation handed to `compute` (which runs it in a
    batch and returns this request's own output shares and cache); the output goes to this client alone. Returns the
    number of steps served."""
    steps = 0
    witness = reveal.Witness(client)

    def run(onehot: AShare, meta: torch.Tensor | None, cache: SecretKVCache | None) -> SecretKVCache | None:
        nonlocal steps
        item = BatchItem(onehot, meta, cache)
        check_meta(cfg, item)
        out, cache = compute(item)
        # this request's own rows, to its own client only, vouched for to the other holders in this request's session
        reveal.reveal_to_owner(party, out, client, tag="output", witness=witness)
        steps += 1
        return cache

    serving.serve_steps(party, cfg, with_meta, run, client=client, witness=witness)
    return steps
