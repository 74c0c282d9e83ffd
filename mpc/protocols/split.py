"""The split first round (this engine's A2B front end; the 3-party OT idea of ABY3 Sec. 5.3 taken further).

Write x = a + v with a = x_{d+2}, known to parties d+1 and d+2, and v = x_d + x_{d+1}, known to party d alone. Any
function F of a w-bit block of a and v is, by its algebraic normal form in v, F = XOR_S c_S(a) & v^S (v^S the
product of the v bits in S). So:
  - d sends E_S = v^S ^ W_S to d+1 and E'_S = v^S ^ W'_S to d+2, for the 2^w - 1 non-empty S (W from the d/d+2
    PRG, W' from the d/d+1 PRG; each receiver misses its mask, so E and E' are uniform to it);
  - d+2 sends M = XOR_S c_S(a) & W_S ^ r to d+1 and d+1 sends M' = XOR_S c_S(a) & W'_S ^ s to d+2 (r from the
    d/d+2 PRG, s from the d/d+1 PRG: uniform to the receiver);
  - both then know T = F ^ r ^ s, and (r, s, T) is a replicated sharing of F: d holds (r, s), d+1 (s, T),
    d+2 (T, r). All messages go out at once: 1 round for any set of block functions.
No party opens anything: each message is a value XOR a fresh PRG mask that its receiver does not hold.
The elements are split in three slices and each party is the dealer d of one slice, so traffic is balanced.
Small batches pay for byte padding: each dealer slice is rounded up to 8 elements per bit plane.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Sequence

import torch

from ..party import Party
from ..shares import AShare, BShare
from .planes import Planes, from_planes, rand_bytes, to_planes, unpack_bits


# --- the split round: who knows what -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slice:
    """Elements [start, stop) of a flattened input, with `dealer` the party d that knows v = x_d + x_{d+1}."""

    start: int
    stop: int
    dealer: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def split_slices(party: Party, n: int, granule: int = 1) -> list[Slice]:
    """Three near-equal slices (whole multiples of `granule` elements but the last), one per dealer.

    The first dealer rotates from call to call (party.next_helper), so small batches spread over the parties too."""
    first = party.next_helper()
    units = -(-n // granule)
    base, extra = divmod(units, 3)
    out, start = [], 0
    for k in range(3):
        stop = min(n, start + granule * (base + (1 if k < extra else 0)))
        if stop > start:
            out.append(Slice(start, stop, (first + k) % 3))
        start = stop
    return out


def role(party: Party, dealer: int) -> int:
    """0 for the dealer d, 1 for d+1, 2 for d+2."""
    return (party.index - dealer) % 3


def known_parts(party: Party, x: AShare, sl: Slice) -> torch.Tensor:
    """What this party knows of slice `sl` of the flat x: v = x_d + x_{d+1} (dealer) or a = x_{d+2} (others)."""
    lo, hi = x.lo.reshape(-1)[sl.start:sl.stop], x.hi.reshape(-1)[sl.start:sl.stop]
    return (lo + hi, hi, lo)[role(party, sl.dealer)]


class SplitStep(NamedTuple):
    """One slice's part of a split round: messages out (by party), element counts in, and how to finish."""

    outgoing: dict
    expect: dict
    finish: Callable[[dict], object]


def run_split_round(party: Party, steps: Sequence[SplitStep], tag: str) -> list:
    """Send every slice's messages (one tensor per neighbour), receive, and finish each slice. 1 round."""
    for dest in (party.next, party.prev):
        parts = [s.outgoing[dest].reshape(-1) for s in steps if dest in s.outgoing]
        if parts:
            party.send(dest, torch.cat(parts), tag)
    received: list[dict] = [{} for _ in steps]
    for src in (party.prev, party.next):
        sizes = [s.expect.get(src, 0) for s in steps]
        if sum(sizes):
            flat = party.recv(src, tag).to(party.device)
            for k, piece in enumerate(torch.split(flat, sizes)):
                if sizes[k]:
                    received[k][src] = piece
    return [s.finish(r) for s, r in zip(steps, received)]


# --- block functions in algebraic normal form ----------------------------------------------------------------------

BlockFn = Callable[[int, int], int]  # F(a_block, v_block) -> bit, on w-bit block values


def anf_table(fn: BlockFn, w: int) -> list[list[int]]:
    """C[a][S] = the coefficient of the monomial v^S in F(a, .): XOR of F(a, b) over b a subset of S."""
    size = 1 << w
    return [[functools.reduce(lambda acc, b: acc ^ (fn(a, b) & 1), (b for b in range(size) if b & ~s == 0), 0)
             for s in range(size)] for a in range(size)]


@dataclass(frozen=True)
class BlockSpec:
    """Which function of which block the split round evaluates: out_block[k], tables[k] (ANF, as 0x00/0xFF)."""

    width: int  # w
    blocks: int  # number of w-bit blocks, counted from bit 0
    out_block: tuple[int, ...]
    tables: tuple[tuple[tuple[int, ...], ...], ...]  # (n_out, 2^w, 2^w) bits
    _on_device: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # device -> tensors()

    def tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The output blocks (n_out,) and the ANF tables as 0x00/0xFF bytes (n_out, A, S) on `device` (made once
        per device: specs are cached per width and use)."""
        device = torch.device(device)
        if device not in self._on_device:
            blocks = torch.tensor(self.out_block, dtype=torch.long, device=device)
            tables = torch.tensor(self.tables, dtype=torch.uint8, device=device) * 255
            self._on_device[device] = (blocks, tables)
        return self._on_device[device]


@functools.lru_cache(maxsize=None)
def _flips(w: int, device: torch.device) -> torch.Tensor:
    """(2^w, w) bytes: 0x00 where bit i of a is 1, else 0xFF (so bit ^ flip is [bit == a_i] as a byte mask)."""
    return torch.tensor([[0 if (a >> i) & 1 else 255 for i in range(w)] for a in range(1 << w)], dtype=torch.uint8,
                        device=device)


def make_spec(w: int, blocks: int, outputs: Sequence[tuple[int, BlockFn]]) -> BlockSpec:
    """A BlockSpec from (block, function) pairs; tables are computed once per distinct function."""
    if w not in (1, 2, 4):
        raise ValueError(f"block width must be 1, 2 or 4, got {w}")
    cache: dict = {}
    tables = []
    for _, fn in outputs:
        if fn not in cache:
            cache[fn] = tuple(tuple(row) for row in anf_table(fn, w))
        tables.append(cache[fn])
    return BlockSpec(w, blocks, tuple(b for b, _ in outputs), tuple(tables))


def _blocks_of(planes: torch.Tensor, spec: BlockSpec) -> torch.Tensor:
    """(64, nbytes) planes -> (blocks, w, nbytes) for the low blocks * w bits."""
    return planes[: spec.blocks * spec.width].reshape(spec.blocks, spec.width, -1)


def _monomials(bits: torch.Tensor) -> torch.Tensor:
    """(B, w, nbytes) v-bit planes -> (B, 2^w, nbytes) products v^S (S = 0 is the all-ones plane)."""
    w = bits.shape[1]
    mono = [torch.full_like(bits[:, 0], 255)]
    for s in range(1, 1 << w):
        top = s.bit_length() - 1
        mono.append(mono[s ^ (1 << top)] & bits[:, top])
    return torch.stack(mono, 1)


def _coefficients(bits: torch.Tensor, spec: BlockSpec, device: torch.device) -> torch.Tensor:
    """(B, w, nbytes) a-bit planes -> (n_out, 2^w, nbytes) planes of c_S(a) for each output."""
    w = spec.width
    size = 1 << w
    out_block, tables = spec.tensors(device)
    flips = _flips(w, torch.device(device))  # (A, w)
    minterms = torch.full((bits.shape[0], size, bits.shape[2]), 255, dtype=torch.uint8, device=device)
    for i in range(w):
        minterms &= bits[:, None, i] ^ flips[None, :, i, None]  # [a == a'], one-hot over a'
    minterms = minterms[out_block]  # (n_out, A, nbytes)
    coef = torch.zeros(len(spec.out_block), size, bits.shape[2], dtype=torch.uint8, device=device)
    for a in range(size):
        coef ^= minterms[:, a, None, :] & tables[:, a, :, None]
    return coef


def _apply(coef: torch.Tensor, masked: torch.Tensor, out_block: torch.Tensor, with_const: bool) -> torch.Tensor:
    """XOR_S c_S & X_S per output, X = masked monomials (B, 2^w - 1, nbytes); the S = 0 term when `with_const`."""
    xs = masked[out_block]
    acc = coef[:, 0].clone() if with_const else torch.zeros_like(coef[:, 0])
    for s in range(1, coef.shape[1]):
        acc ^= coef[:, s] & xs[:, s - 1]
    return acc


def _split_bool_step(party: Party, value: torch.Tensor, r: int, spec: BlockSpec) -> SplitStep:
    """This party's part of the boolean split round for one slice (role r; value = v or a, int64 (m,))."""
    dev = party.device
    bits = _blocks_of(to_planes(value), spec)  # (B, w, nbytes)
    nbytes = bits.shape[2]
    n_mono = (1 << spec.width) - 1
    mono_shape, out_shape = (spec.blocks, n_mono, nbytes), (len(spec.out_block), nbytes)
    n_mono_elems = spec.blocks * n_mono * nbytes
    out_block, _ = spec.tensors(dev)
    if r == 0:  # dealer: mask the monomials of v twice
        mono = _monomials(bits)[:, 1:]
        w_prev, r_mask = rand_bytes(party.prg_prev, mono_shape, dev), rand_bytes(party.prg_prev, out_shape, dev)
        w_next, s_mask = rand_bytes(party.prg_next, mono_shape, dev), rand_bytes(party.prg_next, out_shape, dev)
        out = {party.next: mono ^ w_prev, party.prev: mono ^ w_next}
        return SplitStep(out, {}, lambda rec: Planes(r_mask, s_mask))
    coef = _coefficients(bits, spec, dev)
    prg = party.prg_prev if r == 1 else party.prg_next  # the PRG shared with the dealer
    w_d, own = rand_bytes(prg, mono_shape, dev), rand_bytes(prg, out_shape, dev)
    other = party.next if r == 1 else party.prev  # the other non-dealer
    dealer = party.prev if r == 1 else party.next
    mask_msg = _apply(coef, w_d, out_block, with_const=False) ^ own

    def finish(rec: dict) -> Planes:
        masked = rec[dealer].reshape(mono_shape)
        t = _apply(coef, masked, out_block, with_const=True) ^ rec[other].reshape(out_shape) ^ own
        return Planes(own, t) if r == 1 else Planes(t, own)

    n_out = len(spec.out_block) * nbytes
    return SplitStep({other: mask_msg}, {dealer: n_mono_elems, other: n_out}, finish)


@dataclass(frozen=True)
class PlaneLayout:
    """Where each slice's elements sit in the concatenated byte axis of plane shares."""

    slices: tuple[Slice, ...]

    @property
    def offsets(self) -> list[int]:
        out, acc = [], 0
        for sl in self.slices:
            out.append(acc)
            acc += (sl.size + 7) // 8
        return out

    def bits(self, planes: torch.Tensor) -> torch.Tensor:
        """(k, total_bytes) -> (k, n) int64 0/1, elements in their original order."""
        parts = [unpack_bits(planes[:, o:o + (sl.size + 7) // 8], sl.size) for sl, o in zip(self.slices, self.offsets)]
        return torch.cat(parts, -1).to(torch.int64)

    def words(self, planes: torch.Tensor) -> torch.Tensor:
        """(64, total_bytes) -> (n,) int64 words."""
        parts = [from_planes(planes[:, o:o + (sl.size + 7) // 8], sl.size) for sl, o in zip(self.slices, self.offsets)]
        return torch.cat(parts)


def split_bool_round(party: Party, x: AShare, spec: BlockSpec, alpha_map: Callable | None = None,
                     tag: str = "split") -> tuple[Planes, PlaneLayout]:
    """Evaluate the spec's block functions of (a, v) for every element of x: (n_out, total_bytes) plane shares.

    `alpha_map`, if given, is applied to a (by both of its holders) before the blocks are cut, e.g. negation."""
    slices = split_slices(party, x.numel(), granule=8)
    steps = []
    for sl in slices:
        value = known_parts(party, x, sl)
        r = role(party, sl.dealer)
        if r != 0 and alpha_map is not None:
            value = alpha_map(value)
        steps.append(_split_bool_step(party, value, r, spec))
    results = run_split_round(party, steps, tag)
    return Planes(torch.cat([p.lo for p in results], -1), torch.cat([p.hi for p in results], -1)), \
        PlaneLayout(tuple(slices))


def planes_to_bshare(party: Party, plane: Planes, layout: PlaneLayout, shape: Sequence[int]) -> BShare:
    """A single result plane (total_bytes,) as a BShare of `shape` with the bit in bit 0."""
    lo = layout.bits(plane.lo.unsqueeze(0))[0].reshape(tuple(shape))
    hi = layout.bits(plane.hi.unsqueeze(0))[0].reshape(tuple(shape))
    return BShare(lo, hi, party.index)
