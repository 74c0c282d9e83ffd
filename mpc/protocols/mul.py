"""Secret x secret multiplication and matrix product on replicated shares (ABY3, Mohassel-Rindal 2018, Sec. 3.2).

Steps: (1) each party computes its cross terms x_i*y_i + x_i*y_{i+1} + x_{i+1}*y_i locally, a 3-out-of-3 sharing of
x*y; (2) it adds its term of a fresh zero-sharing so the term alone is uniform; (3) it sends the term to the previous
party and receives the next party's: a replicated sharing again. 1 round, one ring element per output per party.
The fixed-point variants truncate straight from the 3-out-of-3 terms (see `trunc`): 2 rounds in all.
"""

from __future__ import annotations

import torch

from .. import ring
from ..party import Party
from ..shares import AShare, _Replicated
from . import trunc


def reshare(party: Party, z: torch.Tensor, kind: type = AShare, tag: str = "reshare") -> _Replicated:
    """Turn this party's masked 3-out-of-3 term z_i into the pair (z_i, z_{i+1}). 1 round, |z| elements sent."""
    party.send(party.prev, z, tag)
    return kind(z, party.recv(party.next, tag), party.index)


def _cross_terms(x: AShare, y: AShare) -> torch.Tensor:
    # x_i y_i + x_i y_{i+1} + x_{i+1} y_i, with one product saved by factoring x_i.
    return x.lo * (y.lo + y.hi) + x.hi * y.lo


def _cross_terms_matmul(x: AShare, y: AShare) -> torch.Tensor:
    return ring.matmul(x.lo, y.lo + y.hi) + ring.matmul(x.hi, y.lo)


def mul(party: Party, x: AShare, y: AShare) -> AShare:
    """Elementwise x*y in the ring (no truncation). 1 round."""
    z = _cross_terms(x, y)
    return reshare(party, z + party.zero_share(z.shape), tag="mul")


def matmul(party: Party, x: AShare, y: AShare) -> AShare:
    """x @ y in the ring (no truncation), batched over leading dims like torch.matmul. 1 round."""
    z = _cross_terms_matmul(x, y)
    return reshare(party, z + party.zero_share(z.shape), tag="matmul")


def mul_fixed(party: Party, x: AShare, y: AShare) -> AShare:
    """Fixed-point x*y: the ring product truncated by frac_bits, error below 1 ulp. 2 rounds."""
    z = _cross_terms(x, y)
    return trunc.from_additive(party, z + party.zero_share(z.shape), party.fxp.frac_bits)


def matmul_fixed(party: Party, x: AShare, y: AShare) -> AShare:
    """Fixed-point x @ y, truncated by frac_bits, error below 1 ulp per output. 2 rounds."""
    z = _cross_terms_matmul(x, y)
    return trunc.from_additive(party, z + party.zero_share(z.shape), party.fxp.frac_bits)


def square_fixed(party: Party, x: AShare) -> AShare:
    """Fixed-point x*x (one local product fewer than `mul_fixed`). 2 rounds."""
    z = x.lo * (x.lo + 2 * x.hi)
    return trunc.from_additive(party, z + party.zero_share(z.shape), party.fxp.frac_bits)


def mul_public_fixed(party: Party, x: AShare, c: torch.Tensor | float) -> AShare:
    """Fixed-point x*c for a public real c: encode c, multiply locally, truncate. 2 rounds."""
    return trunc.trunc(party, x.mul_public(party.fxp.encode(c, x.device)), party.fxp.frac_bits)


def matmul_public_fixed(party: Party, x: AShare, w: torch.Tensor) -> AShare:
    """Fixed-point x @ w for a public real matrix w. 2 rounds."""
    return trunc.trunc(party, x.matmul_public(party.fxp.encode(w, x.device)), party.fxp.frac_bits)


def mean(party: Party, x: AShare, dim: int, keepdim: bool = False, extra_bits: int = 0) -> AShare:
    """Fixed-point mean along `dim`: the local sum times round(2^(f+e) / n), truncated by f+e bits. 2 rounds.

    Error (real units): at most 2^-f (the truncation) plus |sum| * 2^-(f+e+1) (rounding 1/n; zero when n is a power
    of two up to 2^(f+e)). Range: |mean| < 2^(62-2f-e). Knob: e = `extra_bits` trades range for precision; with the
    default e = 0 this is `mul_public_fixed(sum, 1/n)`, and e >= log2(n) makes the error at most 2^-f + |mean| 2^-(f+1).
    """
    if extra_bits < 0:
        raise ValueError(f"extra_bits must be >= 0, got {extra_bits}")  # trunc checks that f + e bits is in range
    n = x.shape[dim]
    bits = party.fxp.frac_bits + extra_bits
    return trunc.trunc(party, x.sum(dim, keepdim).mul_public(round(2**bits / n)), bits)
