"""Boolean bit to arithmetic (B2A) and bit-times-value products, each in ONE round.

A boolean bit b (bit 0 of a BShare) is b = d ^ e with d = b_D ^ b_{D+1}, known to party D alone, and e = b_{D+2},
known to D+1 and D+2. In the ring, b = e + c*d with c = 1 - 2e. Everything below is the arithmetic form of the
split round of `split`: F = c_0 + sum_k c_k * beta_k with beta_k known to D and c_k to D+1 and D+2.
  - D sends E = beta + W to D+1 and E' = beta + W' to D+2 (W from the D/D+2 PRG, W' from the D/D+1 PRG);
  - D+2 sends M = sum_k c_k W_k + r - t2 to D+1; D+1 sends M' = sum_k c_k W'_k + s - t1 to D+2 (r: D/D+2 PRG,
    s: D/D+1 PRG; t1, t2: optional terms only D+1, resp. D+2, knows);
  - both compute T = c_0 + sum_k c_k E_k - M - s + t1 (D+1; symmetric at D+2) = F + t1 + t2 - r - s, and
    (r, s, T) is a replicated sharing of F + t1 + t2: D holds (r, s), D+1 (s, T), D+2 (T, r).
Every message is a ring value plus a fresh PRG mask its receiver does not hold, so nothing is opened. The batch is
cut in thirds and each party is D for one third, which balances traffic.

bit_to_arith: beta = (d), c_0 = e, c_1 = 1 - 2e. 1 round; 32 bytes per bit in all, 10.7 per party.
mul_bit(b, x): b*x = e*x + c*d*x, and with X = x_D + x_{D+1} (known to D), u = c*x_{D+2} (known to D+1, D+2):
  b*x = e*x_{D+2} + u*d + c*(d*X) + e*x_{D+1} + e*x_D.
  So beta = (d, d*X), c_0 = e*x_{D+2}, coefficients (u, c), t1 = e*x_{D+1} (D+1), t2 = e*x_D (D+2).
  1 round; 48 bytes per element in all, 16 per party (bit_to_arith then mul: 2 rounds, 56 bytes).
ABY3 (Mohassel-Rindal 2018, Sec. 5.4, bit injection) does this with three-party OTs; the masks here play that role.
"""

from __future__ import annotations

import torch

from ..party import Party
from ..shares import AShare, BShare
from .split import SplitStep, known_parts, role, run_split_round, split_slices


def _arith_step(party: Party, r: int, beta: torch.Tensor | None, c0: torch.Tensor | None,
                coeffs: torch.Tensor | None, extra: torch.Tensor | None, m: int, k: int) -> SplitStep:
    """This party's part of the arithmetic split round for one slice of m elements with k dealer values each."""
    if r == 0:  # dealer: beta (k, m)
        w_prev, r_mask = party.prg_prev.ring((k, m)), party.prg_prev.ring((m,))
        w_next, s_mask = party.prg_next.ring((k, m)), party.prg_next.ring((m,))
        out = {party.next: beta + w_prev, party.prev: beta + w_next}
        return SplitStep(out, {}, lambda rec: (r_mask, s_mask))
    prg = party.prg_prev if r == 1 else party.prg_next
    w_d, own = prg.ring((k, m)), prg.ring((m,))
    other = party.next if r == 1 else party.prev
    dealer = party.prev if r == 1 else party.next
    mask_msg = (coeffs * w_d).sum(0) + own - extra

    def finish(rec: dict) -> tuple[torch.Tensor, torch.Tensor]:
        t = c0 + (coeffs * rec[dealer].reshape(k, m)).sum(0) - rec[other] - own + extra
        return (own, t) if r == 1 else (t, own)

    return SplitStep({other: mask_msg}, {dealer: k * m, other: m}, finish)


def _slice_of(t: torch.Tensor, sl) -> torch.Tensor:
    return t.reshape(-1)[sl.start:sl.stop]


def _run(party: Party, n: int, make, tag: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the arithmetic split round over three dealer slices; `make(sl, r)` returns its `_arith_step`."""
    slices = split_slices(party, n)
    results = run_split_round(party, [make(sl, role(party, sl.dealer)) for sl in slices], tag)
    return torch.cat([lo for lo, _ in results]), torch.cat([hi for _, hi in results])


def _bit_parts(party: Party, b: BShare, sl, r: int) -> torch.Tensor:
    """d = b_D ^ b_{D+1} (dealer) or e = b_{D+2} (others), bit 0, as 0/1 int64."""
    lo, hi = _slice_of(b.lo, sl) & 1, _slice_of(b.hi, sl) & 1
    return (lo ^ hi, hi, lo)[r]


def bit_to_arith(party: Party, b: BShare) -> AShare:
    """Bit 0 of b as a ring integer 0/1 (not scaled by 2^f). 1 round, 32 bytes per bit in all (10.7 per party)."""
    if b.numel() == 0:
        return AShare(torch.zeros_like(b.lo), torch.zeros_like(b.hi), party.index)

    def make(sl, r):
        bit = _bit_parts(party, b, sl, r)
        if r == 0:
            return _arith_step(party, r, bit.unsqueeze(0), None, None, None, sl.size, 1)
        return _arith_step(party, r, None, bit, (1 - 2 * bit).unsqueeze(0), torch.zeros_like(bit), sl.size, 1)

    lo, hi = _run(party, b.numel(), make, "b2a")
    return AShare(lo.reshape(b.shape), hi.reshape(b.shape), party.index)


def mul_bit(party: Party, b: BShare, x: AShare) -> AShare:
    """b * x for a shared bit (bit 0 of b) and arithmetic x of the same shape; exact, no truncation. 1 round."""
    if b.shape != x.shape:
        b = b.expand(*torch.broadcast_shapes(b.shape, x.shape)).contiguous()
        x = x.expand(*b.shape).contiguous()
    if x.numel() == 0:
        return AShare(torch.zeros_like(x.lo), torch.zeros_like(x.hi), party.index)

    def make(sl, r):
        bit = _bit_parts(party, b, sl, r)
        if r == 0:
            big_x = known_parts(party, x, sl)  # x_D + x_{D+1}
            return _arith_step(party, r, torch.stack([bit, bit * big_x]), None, None, None, sl.size, 2)
        lo, hi = _slice_of(x.lo, sl), _slice_of(x.hi, sl)
        # D+1 holds (x_{D+1}, x_{D+2}); D+2 holds (x_{D+2}, x_D).
        x_common, x_own = (hi, lo) if r == 1 else (lo, hi)
        c = 1 - 2 * bit
        coeffs = torch.stack([c * x_common, c])
        return _arith_step(party, r, None, bit * x_common, coeffs, bit * x_own, sl.size, 2)

    lo, hi = _run(party, x.numel(), make, "mul_bit")
    return AShare(lo.reshape(x.shape), hi.reshape(x.shape), party.index)
