"""KV cache in slots: one row per sequence, keys and values stored at their absolute positions.

Layout: keys and values are each one tensor (L, slots, KV, S, d). Row b's token at position p lives at [:, b, :, p];
a forward over new tokens at positions pos (B, T) writes there first, then attends keys 0..pos (a mask, so rows of
different lengths share one batch and shapes can stay fixed). Positions past a row's length may hold stale values
(a rejected speculative draft, a padded prompt, a parked slot): they are never attended, since a query at position q
sees only keys <= q and every position <= q is rewritten by the row itself before that query runs.

static   S = max_len preallocated once (what CUDA graphs need: addresses and shapes never change).
dynamic  S grows with torch.cat to the longest row (memory follows the sequences; the shapes change every step).
"""

from __future__ import annotations

import torch


class KVSlots:
    """Keys and values for `slots` sequences of up to `max_len` positions, static or growing; host-side lengths."""

    def __init__(self, n_layers: int, slots: int, n_kv: int, head_dim: int, max_len: int, dtype: torch.dtype,
                 device: torch.device | str, static: bool) -> None:
        self.static, self.max_len, self.slots = static, max_len, slots
        size = max_len if static else 0
        self.k = torch.zeros(n_layers, slots, n_kv, size, head_dim, dtype=dtype, device=device)  # (L, B, KV, S, d)
        self.v = torch.zeros_like(self.k)
        self.lengths = [0] * slots  # positions held per slot (host mirror; the device never needs it)

    @property
    def capacity(self) -> int:
        """Positions currently allocated per slot (S)."""
        return int(self.k.shape[3])

    def ensure(self, need: int) -> None:
        """Make room for positions 0..need-1 (dynamic: grow with torch.cat; static: check only)."""
        if need > self.max_len:
            raise ValueError(f"sequence of {need} positions exceeds the cache's max_len={self.max_len}")
        grow = need - self.capacity
        if grow > 0:
            shape = (*self.k.shape[:3], grow, self.k.shape[4])
            self.k = torch.cat([self.k, self.k.new_zeros(shape)], dim=3)
            self.v = torch.cat([self.v, self.v.new_zeros(shape)], dim=3)

    def write_read(self, layer: int, rows: slice | torch.Tensor, pos: torch.Tensor, k: torch.Tensor,
                   v: torch.Tensor, key_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, KV, T, d) at positions pos (B, T) of `rows`; return keys, values (B, KV, key_len, d)."""
        if isinstance(rows, slice):
            kc, vc = self.k[layer, rows], self.v[layer, rows]  # views: (B, KV, S, d)
            idx = pos[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])  # (B, KV, T, d)
            kc.scatter_(2, idx, k)
            vc.scatter_(2, idx, v)
            return kc[:, :, :key_len], vc[:, :, :key_len]
        kl, vl = self.k[layer], self.v[layer]  # rows: an index tensor of slots (B,)
        kl[rows[:, None], :, pos] = k.transpose(1, 2)  # (B, T, KV, d)
        vl[rows[:, None], :, pos] = v.transpose(1, 2)
        return kl[rows, :, :key_len], vl[rows, :, :key_len]

    def reset(self) -> None:
        """Forget every sequence (lengths to 0; the memory is kept)."""
        self.lengths = [0] * self.slots

    def nbytes(self) -> int:
        """Bytes held by keys and values."""
        return 2 * self.k.numel() * self.k.element_size()
