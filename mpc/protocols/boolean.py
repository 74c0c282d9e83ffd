"""Boolean protocols on XOR replicated shares: AND, bit planes, the split first round, prefix carries, and A2B.

AND (ABY3, Mohassel-Rindal 2018, Sec. 3.2, in GF(2)): local cross terms x_i&y_i ^ x_i&y_{i+1} ^ x_{i+1}&y_i plus a
fresh XOR-sharing of zero, then `mul.reshare`. 1 round, 8 bytes per 64-bit word per party.

Bit planes: adders work on *bit-sliced* data. Plane j of a batch of n elements holds bit j of every element, eight
elements per uint8 byte, so a level of a carry tree ANDs exactly the bits it needs and every byte sent is full.

The split first round (this engine's A2B front end; the 3-party OT idea of ABY3 Sec. 5.3 taken further): write
x = a + v with a = x_{d+2}, known to parties d+1 and d+2, and v = x_d + x_{d+1}, known to party d alone. Any
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

Carries: the block generate/propagate pairs (G, P) then go through a Sklansky parallel-prefix network
(Sklansky 1960; fewer ANDs than Kogge-Stone at the same depth), trimmed by liveness to the carries actually needed.

A2B of 64-bit values with blocks of w = 2 bits: round 1 gives per block G, P and the in-block sums; 5 Sklansky
levels over 32 blocks give the block carries; 1 AND round folds them in. 7 rounds; 37.3 bytes per element per
party (measured, large batches). w = 4: 6 rounds, 41.1 bytes; w = 1: 7 rounds, 59.8 bytes. For comparison, a
carry-save layer plus a word-level Kogge-Stone adder costs 8 rounds and ~104 bytes.
Small batches pay for byte padding: each dealer slice is rounded up to 8 elements per bit plane.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import torch

from ..party import Party
from ..prg import PRG
from ..ring import RING_BITS
from ..shares import AShare, BShare
from . import mul

BLOCK_BITS = 2  # default block width of the split round (1, 2 or 4): 2 minimises bytes, 4 saves one round


# --- word-level AND ------------------------------------------------------------------------------------------------


def and_(party: Party, x: BShare, y: BShare) -> BShare:
    """Bitwise AND of packed 64-bit boolean shares. 1 round, 8 bytes per element per party."""
    x._check(y)
    z = (x.lo & (y.lo ^ y.hi)) ^ (x.hi & y.lo)
    return mul.reshare(party, z ^ party.zero_xor_share(z.shape), kind=BShare, tag="and")


def or_(party: Party, x: BShare, y: BShare) -> BShare:
    """Bitwise OR: x ^ y ^ (x & y). 1 round."""
    return x ^ y ^ and_(party, x, y)


# --- bit planes ----------------------------------------------------------------------------------------------------


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


def stack_planes(items: Sequence[Planes]) -> Planes:
    """Stack plane shares along a new leading axis."""
    return Planes(torch.stack([p.lo for p in items]), torch.stack([p.hi for p in items]))


def and_planes(party: Party, x: Planes, y: Planes, tag: str = "and_planes") -> Planes:
    """AND of bit-plane shares: 1 round, one bit per ANDed bit per party (8 elements per byte)."""
    z = (x.lo & (y.lo ^ y.hi)) ^ (x.hi & y.lo)
    z = z ^ rand_bytes(party.prg_prev, z.shape, z.device) ^ rand_bytes(party.prg_next, z.shape, z.device)
    party.send(party.prev, z, tag)
    return Planes(z, party.recv(party.next, tag))


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

    def tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        blocks = torch.tensor(self.out_block, dtype=torch.long, device=device)
        tables = torch.tensor(self.tables, dtype=torch.uint8, device=device) * 255  # (n_out, A, S)
        return blocks, tables


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
    flips = torch.tensor([[0 if (a >> i) & 1 else 255 for i in range(w)] for a in range(size)], dtype=torch.uint8,
                         device=device)  # (A, w)
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


# --- parallel prefix (Sklansky), trimmed to the carries that are needed --------------------------------------------


class PrefixOp(NamedTuple):
    """G_u ^= P_u & G_L (if do_g) and P_u &= P_L (if do_p), both from the values before the level."""

    u: int
    low: int
    do_g: bool
    do_p: bool


@functools.lru_cache(maxsize=None)
def prefix_plan(n: int, outputs: frozenset) -> tuple[tuple[tuple[PrefixOp, ...], ...], frozenset, frozenset]:
    """Sklansky levels over n blocks, keeping only ops whose results reach `outputs` (final G indices).

    Returns (levels, G inputs needed, P inputs needed). Final G_u is the generate of blocks 0..u."""
    levels, k = [], 0
    while (1 << k) < n:
        half = 1 << k
        level = []
        for gs in range(0, n, 2 * half):
            low = gs + half - 1
            level.extend((u, low) for u in range(gs + half, min(gs + 2 * half, n)))
        levels.append(level)
        k += 1
    need_g, need_p, plan = set(outputs), set(), []
    for level in reversed(levels):
        ops, new_g, new_p = [], set(need_g), set(need_p)
        for u, low in level:
            do_g, do_p = u in need_g, u in need_p
            new_g.discard(u)
            new_p.discard(u)
            if do_g:
                new_g.update((u, low))
                new_p.add(u)
            if do_p:
                new_p.update((u, low))
            if do_g or do_p:
                ops.append(PrefixOp(u, low, do_g, do_p))
        need_g, need_p = new_g, new_p
        if ops:
            plan.append(tuple(ops))
    return tuple(reversed(plan)), frozenset(need_g), frozenset(need_p)


def run_prefix(party: Party, g: dict, p: dict, plan: Sequence[Sequence[PrefixOp]], tag: str = "prefix") -> dict:
    """Run a prefix plan on plane shares (dicts block -> Planes of shape (nbytes,)); one AND round per level."""
    g, p = dict(g), dict(p)
    for level in plan:
        lefts, rights = [], []
        for op in level:
            if op.do_g:
                lefts.append(p[op.u])
                rights.append(g[op.low])
            if op.do_p:
                lefts.append(p[op.u])
                rights.append(p[op.low])
        res = and_planes(party, stack_planes(lefts), stack_planes(rights), tag)
        k = 0
        for op in level:
            if op.do_g:
                g[op.u] = g[op.u] ^ res[k]
                k += 1
            if op.do_p:
                p[op.u] = res[k]
                k += 1
    return g


# --- A2B -----------------------------------------------------------------------------------------------------------


def bit_of_sum(j: int) -> BlockFn:
    """Bit j of a + v (the in-block sum with carry-in 0)."""
    return block_fn(("sum", j), lambda a, b: ((a + b) >> j) & 1)


def all_propagate(j: int) -> BlockFn:
    """The low j bits all propagate: (a ^ v) mod 2^j == 2^j - 1 (1 for j = 0)."""
    mask = (1 << j) - 1
    return block_fn(("prop", j), lambda a, b: int(((a ^ b) & mask) == mask))


_FNS: dict = {}


def block_fn(key, fn: BlockFn) -> BlockFn:
    """One function object per key, so tables are shared and specs are hashable by identity."""
    return _FNS.setdefault(key, fn)


def block_generate(w: int) -> BlockFn:
    """Carry out of a w-bit block: bit w of a + v."""
    return bit_of_sum(w)


def block_propagate(w: int) -> BlockFn:
    """All w bits propagate: a ^ v == 2^w - 1."""
    return all_propagate(w)


@functools.lru_cache(maxsize=None)
def _a2b_spec(w: int) -> tuple[BlockSpec, dict, tuple]:
    nb = RING_BITS // w
    plan, need_g, need_p = prefix_plan(nb, frozenset(range(nb - 1)))
    outputs, index = [], {}

    def add(key, block, fn):
        index[key] = len(outputs)
        outputs.append((block, fn))

    for b in range(nb):
        if b in need_g:
            add(("G", b), b, block_generate(w))
        if b in need_p:
            add(("P", b), b, block_propagate(w))
        for j in range(w):
            add(("X", b, j), b, bit_of_sum(j))  # in-block sum bit j, carry-in 0
        if b > 0:
            for j in range(2, w):
                add(("Y", b, j), b, all_propagate(j))  # bits below j all propagate (Y_1 is X_0)
    return make_spec(w, nb, outputs), index, plan


def a2b(party: Party, x: AShare, block_bits: int = BLOCK_BITS) -> BShare:
    """Arithmetic to boolean sharing of 64-bit values (same shape). 7 rounds; 37.3 bytes per element per party (w=2)."""
    w = block_bits
    spec, index, plan = _a2b_spec(w)
    nb = spec.blocks
    if x.numel() == 0:
        return BShare(torch.zeros_like(x.lo), torch.zeros_like(x.hi), party.index)
    planes, layout = split_bool_round(party, x, spec, tag="a2b")
    g = {key[1]: planes[i] for key, i in index.items() if key[0] == "G"}
    p = {key[1]: planes[i] for key, i in index.items() if key[0] == "P"}
    g = run_prefix(party, g, p, plan, tag="a2b_prefix")
    carry = {b: g[b - 1] for b in range(1, nb)}  # carry into block b
    sums = {(0, j): planes[index[("X", 0, j)]] for j in range(w)}
    if w > 1:
        lefts, rights, keys = [], [], []
        for b in range(1, nb):
            for j in range(1, w):
                y_key = ("X", b, 0) if j == 1 else ("Y", b, j)
                lefts.append(planes[index[y_key]])
                rights.append(carry[b])
                keys.append((b, j))
        res = and_planes(party, stack_planes(lefts), stack_planes(rights), tag="a2b_sum")
        for k, key in enumerate(keys):
            sums[key] = planes[index[("X",) + key]] ^ res[k]
    for b in range(1, nb):
        sums[(b, 0)] = planes[index[("X", b, 0)]] ^ carry[b]
    bits = stack_planes([sums[(b, j)] for b in range(nb) for j in range(w)])  # (64, total_bytes)
    lo, hi = layout.words(bits.lo), layout.words(bits.hi)
    return BShare(lo.reshape(x.shape), hi.reshape(x.shape), party.index)
