"""Secret embeddings: the client shares one-hot rows; embedding = one-hot x secret table, with no truncation.

The one-hot rows are ring 0/1 integers (not fixed point), so one-hot @ table is already at the table's scale 2^f:
one ring matmul and one resharing (1 round; bytes: one ring element per output element), and the lookup is exact.
Positions and token types are public, so their tables are indexed locally.
The client makes the one-hot matrix with `one_hot` and shares it as a raw ring tensor (int64 inputs are not
re-encoded by `runtime.simulate` / `sharing.send_input`).
"""

from __future__ import annotations

import torch

from .. import ring
from ..party import Party
from ..protocols import mul
from ..shares import AShare


def one_hot(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Client side: token ids (...,) -> ring 0/1 one-hot rows (..., vocab_size), int64."""
    if ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"token ids must be integers, got {ids.dtype}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size})")
    return torch.nn.functional.one_hot(ids.long(), vocab_size).to(ring.RING_DTYPE)


def embedding(party: Party, onehot: AShare, table: AShare) -> AShare:
    """onehot (..., V) ring 0/1 @ table (V, C) fixed point -> (..., C) fixed point. 1 round, no truncation."""
    if onehot.shape[-1] != table.shape[0]:
        raise ValueError(f"one-hot width {onehot.shape[-1]} does not match table rows {table.shape[0]}")
    return mul.matmul(party, onehot, table)


def lookup_public(table: AShare, positions: torch.Tensor) -> AShare:
    """Rows of a secret table at public indices (positions, token types): local indexing."""
    return table[positions.to(table.device)]
