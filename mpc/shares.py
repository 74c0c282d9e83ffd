"""Replicated secret shares and their local (communication-free) operations.

A secret x is split as x = x_0 + x_1 + x_2 (arithmetic, mod 2^64) or x = x_0 ^ x_1 ^ x_2 (boolean, bitwise);
party i holds the pair (x_i, x_{i+1}), called `lo` and `hi`. Any two parties can reconstruct; one alone sees
uniformly random values. Operations here need no messages; those that do live in `protocols`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .ring import RING_DTYPE


class ShareError(ValueError):
    """Shares that cannot be combined (different parties, shapes or kinds)."""


@dataclass(frozen=True)
class _Replicated:
    """Common shape handling for both kinds of replicated share."""

    lo: torch.Tensor  # x_i
    hi: torch.Tensor  # x_{i+1}
    party: int

    def __post_init__(self) -> None:
        if self.lo.dtype != RING_DTYPE or self.hi.dtype != RING_DTYPE:
            raise ShareError(f"share components must be int64, got {self.lo.dtype}, {self.hi.dtype}")
        if self.lo.shape != self.hi.shape:
            raise ShareError(f"share components differ in shape: {tuple(self.lo.shape)} vs {tuple(self.hi.shape)}")

    @property
    def shape(self) -> torch.Size:
        return self.lo.shape

    @property
    def device(self) -> torch.device:
        return self.lo.device

    def numel(self) -> int:
        return self.lo.numel()

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        """Apply the same linear, shape-only or bitwise-local map to both components."""
        return type(self)(fn(self.lo), fn(self.hi), self.party)

    def reshape(self, *shape: int):
        return self.map(lambda t: t.reshape(*shape))

    def transpose(self, a: int, b: int):
        return self.map(lambda t: t.transpose(a, b))

    def permute(self, *dims: int):
        return self.map(lambda t: t.permute(*dims))

    def unsqueeze(self, dim: int):
        return self.map(lambda t: t.unsqueeze(dim))

    def expand(self, *shape: int):
        return self.map(lambda t: t.expand(*shape))

    def contiguous(self):
        return self.map(lambda t: t.contiguous())

    def __getitem__(self, index):
        return self.map(lambda t: t[index])

    def _check(self, other: "_Replicated") -> None:
        if type(other) is not type(self):
            raise ShareError(f"cannot combine {type(self).__name__} with {type(other).__name__}")
        if other.party != self.party:
            raise ShareError(f"shares of parties {self.party} and {other.party} cannot be combined")


@dataclass(frozen=True)
class AShare(_Replicated):
    """Arithmetic replicated share over Z_2^64."""

    def __add__(self, other: "AShare") -> "AShare":
        self._check(other)
        return AShare(self.lo + other.lo, self.hi + other.hi, self.party)

    def __sub__(self, other: "AShare") -> "AShare":
        self._check(other)
        return AShare(self.lo - other.lo, self.hi - other.hi, self.party)

    def __neg__(self) -> "AShare":
        return AShare(-self.lo, -self.hi, self.party)

    def add_public(self, c: torch.Tensor | int) -> "AShare":
        """x + c for a public ring value c (added to component x_0, which P0 holds as lo and P2 as hi)."""
        c = torch.as_tensor(c, dtype=RING_DTYPE, device=self.device)
        lo = self.lo + c if self.party == 0 else self.lo.expand(torch.broadcast_shapes(self.shape, c.shape))
        hi = self.hi + c if self.party == 2 else self.hi.expand(torch.broadcast_shapes(self.shape, c.shape))
        return AShare(lo, hi, self.party)

    def mul_public(self, c: torch.Tensor | int) -> "AShare":
        """x * c for a public ring value c (elementwise; no truncation)."""
        c = torch.as_tensor(c, dtype=RING_DTYPE, device=self.device)
        return AShare(self.lo * c, self.hi * c, self.party)

    def matmul_public(self, w: torch.Tensor, *, left: bool = False) -> "AShare":
        """x @ w (or w @ x when `left`) for a public ring matrix w; no truncation."""
        from .ring import matmul

        if left:
            return AShare(matmul(w, self.lo), matmul(w, self.hi), self.party)
        return AShare(matmul(self.lo, w), matmul(self.hi, w), self.party)

    def sum(self, dim: int, keepdim: bool = False) -> "AShare":
        return self.map(lambda t: t.sum(dim=dim, keepdim=keepdim))

    def lshift(self, bits: int) -> "AShare":
        """x * 2^bits."""
        return self.map(lambda t: t << bits)


@dataclass(frozen=True)
class BShare(_Replicated):
    """Boolean (XOR) replicated share: each int64 carries 64 independently shared bits."""

    def __xor__(self, other: "BShare") -> "BShare":
        self._check(other)
        return BShare(self.lo ^ other.lo, self.hi ^ other.hi, self.party)

    def xor_public(self, c: torch.Tensor | int) -> "BShare":
        """x ^ c for a public bit pattern c (applied to component x_0)."""
        c = torch.as_tensor(c, dtype=RING_DTYPE, device=self.device)
        lo = self.lo ^ c if self.party == 0 else self.lo.expand(torch.broadcast_shapes(self.shape, c.shape))
        hi = self.hi ^ c if self.party == 2 else self.hi.expand(torch.broadcast_shapes(self.shape, c.shape))
        return BShare(lo, hi, self.party)

    def and_public(self, c: torch.Tensor | int) -> "BShare":
        """x & c for a public bit pattern c."""
        c = torch.as_tensor(c, dtype=RING_DTYPE, device=self.device)
        return BShare(self.lo & c, self.hi & c, self.party)

    def invert(self) -> "BShare":
        """Bitwise NOT."""
        return self.xor_public(-1)

    def lshift(self, bits: int) -> "BShare":
        return self.map(lambda t: t << bits)

    def rshift(self, bits: int) -> "BShare":
        """Logical right shift of every component (zeros shifted in)."""
        from .ring import logical_rshift

        return self.map(lambda t: logical_rshift(t, bits))


def cat(shares: list, dim: int = 0):
    """Concatenate shares of one kind along `dim`."""
    first = shares[0]
    for s in shares[1:]:
        first._check(s)
    return type(first)(torch.cat([s.lo for s in shares], dim), torch.cat([s.hi for s in shares], dim), first.party)


def stack(shares: list, dim: int = 0):
    """Stack shares of one kind along a new `dim`."""
    first = shares[0]
    for s in shares[1:]:
        first._check(s)
    return type(first)(torch.stack([s.lo for s in shares], dim), torch.stack([s.hi for s in shares], dim), first.party)


def add(x: AShare, y: AShare | torch.Tensor | None) -> AShare:
    """x + y for y secret (an AShare), public (a ring tensor, added to component x_0 as `add_public` does) or None
    (x itself). Model code whose weights may be secret or public (open models) adds biases and tables with this."""
    if y is None:
        return x
    return x + y if isinstance(y, AShare) else x.add_public(y)


def public_component(party: int, c: torch.Tensor, kind: type = AShare) -> _Replicated:
    """A replicated sharing of a public value c: component x_0 = c, x_1 = x_2 = 0 (no randomness needed)."""
    zero = torch.zeros_like(c)
    return kind(c if party == 0 else zero, c if party == 2 else zero, party)


def components(x: _Replicated, kind: type | None = None) -> list:
    """Local sharings of each summand x_0, x_1, x_2 of `x` on their own (as `kind`, default x's kind).

    Summand x_j is known to party j (its lo) and party j-1 (its hi), so sharing it as (x_j, 0, 0)-style components
    needs no messages. A2B uses this to feed the three summands into a boolean adder.
    """
    kind = kind or type(x)
    zero = torch.zeros_like(x.lo)
    out = []
    for j in range(3):
        lo = x.lo if j == x.party else zero
        hi = x.hi if j == (x.party + 1) % 3 else zero
        out.append(kind(lo, hi, x.party))
    return out
