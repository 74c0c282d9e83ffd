"""The ring Z_2^64 on torch int64 tensors, and fixed-point encoding into it.

Every secret in the engine is an int64 tensor whose additions and multiplications wrap mod 2^64 (two's complement),
on CPU and CUDA alike. Real numbers are encoded in fixed point with `frac_bits` fractional bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

RING_BITS = 64
RING_DTYPE = torch.int64
DEFAULT_FRAC_BITS = 18  # PUMA's precision: every default fixed point (sessions, strategies, hosted models) is this one


class RingError(ValueError):
    """A value cannot be represented in the ring, or tensors do not fit the ring's rules."""


@dataclass(frozen=True)
class FixedPoint:
    """Fixed-point format: value = ring element / 2^frac_bits, signed, in Z_2^64."""

    frac_bits: int = DEFAULT_FRAC_BITS

    def __post_init__(self) -> None:
        if not 0 <= self.frac_bits <= 40:
            raise RingError(f"frac_bits must be in [0, 40], got {self.frac_bits}")

    @property
    def scale(self) -> int:
        return 1 << self.frac_bits

    @property
    def max_abs(self) -> float:
        """Largest magnitude that encodes without wrapping (with headroom for one product before truncation)."""
        return float(2 ** (RING_BITS - 2 - 2 * self.frac_bits))

    def encode(self, x: torch.Tensor | float, device: torch.device | str | None = None) -> torch.Tensor:
        """Round a real tensor to the nearest fixed-point ring element."""
        t = torch.as_tensor(x, dtype=torch.float64, device=device)
        if not torch.isfinite(t).all():
            raise RingError("cannot encode NaN or infinity in fixed point")
        scaled = torch.round(t * self.scale)
        if scaled.numel() and scaled.abs().max().item() >= 2.0**62:
            raise RingError(f"value too large for fixed point with {self.frac_bits} fractional bits")
        return scaled.to(RING_DTYPE)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Map ring elements (read as signed) back to float64 reals."""
        if x.dtype != RING_DTYPE:
            raise RingError(f"expected an int64 ring tensor, got {x.dtype}")
        return x.to(torch.float64) / self.scale


def as_ring(x: torch.Tensor) -> torch.Tensor:
    """Check that `x` is a ring tensor and return it."""
    if x.dtype != RING_DTYPE:
        raise RingError(f"expected an int64 ring tensor, got {x.dtype}")
    return x


def logical_rshift(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Shift right treating int64 as unsigned 64-bit (zeros shifted in)."""
    if bits == 0:
        return x
    return (x >> bits) & ((1 << (RING_BITS - bits)) - 1)


def msb(x: torch.Tensor) -> torch.Tensor:
    """The top bit of each ring element as 0/1 int64 (plaintext helper)."""
    return logical_rshift(x, RING_BITS - 1)


def low_bits(x: torch.Tensor, bits: int) -> torch.Tensor:
    """x mod 2^bits for 0 < bits < 64."""
    return x & ((1 << bits) - 1)


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact matrix product in Z_2^64 on any device.

    CPU runs torch's native int64 matmul (fastest there); CUDA has no int64 GEMM, so the product is assembled from
    float64 GEMMs over 16-bit limbs (see `limb_matmul`).
    """
    as_ring(a)
    as_ring(b)
    if a.device.type == "cpu":
        return torch.matmul(a, b)
    return limb_matmul(a, b)


_LIMB_BITS = 16
_LIMBS = RING_BITS // _LIMB_BITS  # 4
_MAX_EXACT_K = 1 << 19  # 4K products of 2^32 each stay below 2^53, exact in float64


def _limbs(x: torch.Tensor) -> list[torch.Tensor]:
    """Split ring elements into four unsigned 16-bit limbs, as float64 (exact)."""
    return [((x >> (_LIMB_BITS * j)) & 0xFFFF).to(torch.float64) for j in range(_LIMBS)]


def limb_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact Z_2^64 matmul from four float64 GEMMs over 16-bit limbs, for devices with no int64 GEMM.

    a = sum_j a_j 2^(16j), b = sum_l b_l 2^(16l); mod 2^64 only limb pairs with j + l <= 3 matter (10 products).
    Products of equal weight j + l = s are fused into one GEMM by concatenating along K, so there are 4 GEMMs with
    K, 2K, 3K and 4K columns. Each partial sum is below 4K * 2^32 < 2^53 for K < 2^19, hence exact in float64.
    """
    if b.dim() == 1:  # matrix-vector: torch.matmul semantics, via a one-column matrix
        return limb_matmul(a, b.unsqueeze(-1)).squeeze(-1)
    k = a.shape[-1]
    if k >= _MAX_EXACT_K:
        raise RingError(f"limb matmul is exact only for K < {_MAX_EXACT_K}, got K={k}")
    a_limbs, b_limbs = _limbs(a), _limbs(b)
    out = None
    for s in range(_LIMBS):
        lhs = torch.cat([a_limbs[j] for j in range(s + 1)], dim=-1)
        rhs = torch.cat([b_limbs[s - j] for j in range(s + 1)], dim=-2)
        part = torch.matmul(lhs, rhs).to(RING_DTYPE) << (_LIMB_BITS * s)
        out = part if out is None else out + part
    return out
