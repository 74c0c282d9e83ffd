"""Bit planes: bit-sliced XOR replicated shares, and their AND (ABY3's GF(2) AND, Mohassel-Rindal 2018, Sec. 3.2).

Plane j of a batch of n elements holds bit j of every element, eight elements per uint8 byte, so a level of a carry
tree ANDs exactly the bits it needs and every byte sent is full. AND: local cross terms x_i&y_i ^ x_i&y_{i+1} ^
x_{i+1}&y_i plus a fresh XOR-sharing of zero from the pairwise PRGs, sent to the previous party: 1 round, one bit
per ANDed bit per party.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import torch

from ..party import Party
from ..prg import PRG
from ..ring import RING_BITS


def _shifts(device: torch.device) -> torch.Tensor:
    return torch.arange(8, dtype=torch.uint8, device=device)


def rand_bytes(prg: PRG, shape: Sequence[int], device: torch.device) -> torch.Tensor:
    """Uniform uint8 tensor of `shape` drawn from `prg` (AES on the CPU, written into the tensor; on `device`)."""
    return prg.uint8(tuple(int(s) for s in shape)).to(device)


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """(..., n) 0/1 uint8 -> (..., ceil(n/8)) uint8, element e in bit e % 8 of byte e // 8."""
    n = bits.shape[-1]
    pad = (-n) % 8
    if pad:
        bits = torch.nn.functional.pad(bits, (0, pad))
    bits = bits.reshape(*bits.shape[:-1], -1, 8)
    return (bits << _shifts(bits.device)).sum(-1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of `pack_bits`: (..., nbytes) uint8 -> (..., n) 0/1 uint8."""
    bits = (packed.unsqueeze(-1) >> _shifts(packed.device)) & 1
    return bits.reshape(*packed.shape[:-1], -1)[..., :n]


def to_planes(x: torch.Tensor) -> torch.Tensor:
    """(n,) int64 -> (64, ceil(n/8)) uint8: plane j holds bit j of every element."""
    n = x.numel()
    raw = x.reshape(-1).contiguous().view(torch.uint8).reshape(n, 8)  # little-endian bytes
    bits = ((raw.unsqueeze(-1) >> _shifts(x.device)) & 1).reshape(n, RING_BITS)  # (n, 64), column j = bit j
    return pack_bits(bits.t())


def from_planes(planes: torch.Tensor, n: int) -> torch.Tensor:
    """(64, nbytes) uint8 planes -> (n,) int64 words (inverse of `to_planes`)."""
    bits = unpack_bits(planes, n).t().contiguous().reshape(n, 8, 8)  # (n, byte, bit)
    raw = (bits << _shifts(planes.device)).sum(-1, dtype=torch.uint8)  # (n, 8)
    return raw.contiguous().view(torch.int64).reshape(n)


@dataclass(frozen=True)
class Planes:
    """Replicated XOR shares of bit planes: uint8 tensors (..., nbytes), party i holding (x_i, x_{i+1})."""

    lo: torch.Tensor
    hi: torch.Tensor

    def __xor__(self, other: "Planes") -> "Planes":
        return Planes(self.lo ^ other.lo, self.hi ^ other.hi)

    def __getitem__(self, index) -> "Planes":
        return Planes(self.lo[index], self.hi[index])


def gather(planes: Planes, rows: torch.Tensor) -> Planes:
    """The rows `rows` (an int64 index tensor) of (k, nbytes) plane shares, in that order (a copy)."""
    return Planes(planes.lo.index_select(0, rows), planes.hi.index_select(0, rows))


@functools.lru_cache(maxsize=None)
def row_index(rows: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """`rows` as an int64 index tensor on `device` (made once per tuple and device)."""
    return torch.tensor(rows, dtype=torch.int64, device=device)


def and_planes(party: Party, x: Planes, y: Planes, tag: str = "and_planes") -> Planes:
    """AND of bit-plane shares: 1 round, one bit per ANDed bit per party (8 elements per byte)."""
    z = (x.lo & (y.lo ^ y.hi)) ^ (x.hi & y.lo)
    z = z ^ rand_bytes(party.prg_prev, z.shape, z.device) ^ rand_bytes(party.prg_next, z.shape, z.device)
    party.send(party.prev, z, tag)
    return Planes(z, party.recv(party.next, tag))
