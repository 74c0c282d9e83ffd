"""AES-128 (FIPS-197) and its counter mode (NIST SP 800-38A, section 6.5) in torch integer ops, on any torch device.

The cipher is FIPS-197's round in its 32-bit table form: SubBytes, ShiftRows and MixColumns of one round become, for
each output column, four look-ups in tables of 256 words (one per input row) XORed together, followed by the round key
(AddRoundKey); the last round, which has no MixColumns, looks up the S-box alone. ShiftRows is a strided view of the
state stored twice over, so a batch of blocks goes through a round in five whole-tensor operations (the table indices,
one gather, three XORs): the same code runs on the CPU and on a GPU, never leaves the device, has no data-dependent
control flow (a CUDA graph can capture it), and uses no randomness of torch's.

Counter mode encrypts the counter blocks T_i = (initial + i) mod 2^128, each a 16-byte big-endian integer (the
standard incrementing function over the whole block), and the keystream is their ciphertexts in order; this is what
the `cryptography` package's `modes.CTR(initial.to_bytes(16, "big"))` produces.

Knobs: `AesCtr(key, device, initial_counter=0, chunk_blocks=CHUNK_BLOCKS)`; `chunk_blocks` is how many blocks one
batch of operations encrypts, which bounds the temporary memory of a draw (a few hundred bytes per block) while
keeping each operation large enough to fill a GPU.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

BLOCK_BYTES = 16
KEY_BYTES = 16
ROUNDS = 10
CHUNK_BLOCKS = 1 << 18  # 4 MiB of keystream per batch

_COUNTER_MODULUS = 1 << 128
_HALF_MODULUS = 1 << 64
_REDUCTION = 0x11B  # x^8 + x^4 + x^3 + x + 1, FIPS-197 section 4.2
# MixColumns' matrix (FIPS-197 section 5.1.3), by column: input row j contributes MIX_COLUMNS[j][r] * s_j to row r.
_MIX_COLUMNS = ((2, 1, 1, 3), (3, 2, 1, 1), (1, 3, 2, 1), (1, 1, 3, 2))


def _xtime(b: int) -> int:
    """b times x in GF(2^8) (FIPS-197 section 4.2.1)."""
    b <<= 1
    return b ^ _REDUCTION if b & 0x100 else b


def _times(b: int, factor: int) -> int:
    """b times 1, 2 or 3 in GF(2^8), the factors MixColumns uses."""
    return {1: b, 2: _xtime(b), 3: _xtime(b) ^ b}[factor]


@functools.cache
def sbox() -> tuple[int, ...]:
    """FIPS-197's S-box (section 5.1.1): the inverse in GF(2^8) (0 for 0), then the affine transformation."""
    exp, log = [0] * 255, [0] * 256
    power = 1
    for i in range(255):  # 3 generates the multiplicative group
        exp[i], log[power] = power, i
        power ^= _xtime(power)
    box = []
    for a in range(256):
        inverse = exp[-log[a] % 255] if a else 0
        rotations = (((inverse << k) | (inverse >> (8 - k))) & 0xFF for k in range(1, 5))
        box.append(functools.reduce(int.__xor__, rotations, inverse) ^ 0x63)
    return tuple(box)


def expand_key(key: bytes) -> bytes:
    """The 11 round keys of AES-128 (FIPS-197 section 5.2), 176 bytes, round key r at [16r, 16r + 16)."""
    if len(key) != KEY_BYTES:
        raise ValueError(f"an AES-128 key is {KEY_BYTES} bytes, got {len(key)}")
    box = sbox()
    words = [list(key[i : i + 4]) for i in range(0, KEY_BYTES, 4)]
    round_constant = 1
    for i in range(4, 4 * (ROUNDS + 1)):
        temp = words[-1]
        if i % 4 == 0:  # RotWord, SubWord, Rcon
            temp = [box[b] for b in temp[1:] + temp[:1]]
            temp[0] ^= round_constant
            round_constant = _xtime(round_constant)
        words.append([a ^ b for a, b in zip(words[i - 4], temp)])
    return bytes(b for word in words for b in word)


class _Tables(NamedTuple):
    """The cipher's constants on one device."""

    row_offsets: torch.Tensor  # (4, 1) int32: where row j's table starts in `round_table`, 256 j
    round_table: torch.Tensor  # (1024,) int32: row j's table at [256 j, 256 j + 256), a word's bytes are its 4 rows
    sbox: torch.Tensor  # (256,) uint8: the last round's look-up
    counter_shifts: torch.Tensor  # (8,) int64: the shifts that cut a 64-bit counter half into big-endian bytes


@functools.cache
def _tables(device: torch.device) -> _Tables:
    box = sbox()
    round_bytes = [_times(box[x], factor) for column in _MIX_COLUMNS for x in range(256) for factor in column]
    return _Tables(
        row_offsets=torch.tensor([[256 * j] for j in range(4)], dtype=torch.int32, device=device),
        round_table=torch.tensor(round_bytes, dtype=torch.uint8).view(torch.int32).to(device),
        sbox=torch.tensor(box, dtype=torch.uint8, device=device),
        counter_shifts=torch.arange(56, -1, -8, dtype=torch.int64, device=device),
    )


def _shifted_rows(doubled: torch.Tensor, *, row_major: bool) -> torch.Tensor:
    """ShiftRows as a view: byte (row j, column c) of the result is byte (j, c + j mod 4) of the state.

    `doubled` is an (n, 2, 4) int32 tensor holding each state twice (column c's word at [:, 0, c] and [:, 1, c]), so
    column c + j is column c + j of its 8 columns and no index wraps: the view is (n, row, column) with strides
    (32, 5, 4) bytes if `row_major`, else (n, column, row) with strides (32, 4, 5).
    """
    strides = (32, 5, 4) if row_major else (32, 4, 5)
    return doubled.view(torch.uint8).as_strided((doubled.shape[0], 4, 4), strides)


def _signed(value: int) -> int:
    """An unsigned 64-bit value as the int64 with the same bits."""
    return value - _HALF_MODULUS if value >= _HALF_MODULUS >> 1 else value


class AesCtr:
    """The AES-128-CTR keystream of one key, made on one torch device; the expanded key stays inside the object."""

    def __init__(
        self, key: bytes, device: torch.device | str = "cpu", *, initial_counter: int = 0,
        chunk_blocks: int = CHUNK_BLOCKS,
    ) -> None:
        if not 0 <= initial_counter < _COUNTER_MODULUS:
            raise ValueError("the initial counter block is a 128-bit unsigned integer")
        if chunk_blocks < 1:
            raise ValueError(f"chunk_blocks must be positive, got {chunk_blocks}")
        self.device = torch.device(device)
        self._tables = _tables(self.device)
        expanded = torch.tensor(list(expand_key(key)), dtype=torch.uint8)
        # Each round key's 4 words, twice (2, 4): XORed into the doubled state (see _shifted_rows) by broadcasting.
        words = expanded.view(torch.int32).view(ROUNDS + 1, 1, 4).to(self.device)
        self._round_keys = words.expand(-1, 2, -1).unbind(0)
        self._initial = initial_counter
        self._chunk_blocks = chunk_blocks

    def encrypt_blocks(self, blocks: torch.Tensor) -> torch.Tensor:
        """AES-128 of each row of an (n, 16) uint8 tensor on this device (the cipher alone, as in FIPS-197)."""
        if blocks.dtype != torch.uint8 or blocks.dim() != 2 or blocks.shape[1] != BLOCK_BYTES:
            got = f"{blocks.dtype} {tuple(blocks.shape)}"
            raise ValueError(f"blocks must be an (n, {BLOCK_BYTES}) uint8 tensor, got {got}")
        tables, count, state = self._tables, blocks.shape[0], blocks.contiguous()
        if state.storage_offset() % 4:  # read as int32 words below
            state = state.clone()
        first_key, *middle_keys, last_key = self._round_keys
        # Two buffers every round rewrites in place (`out=`, which also fixes their layout): the state after
        # AddRoundKey, doubled (see _shifted_rows), and the table indices; their views are made once.
        doubled = torch.empty((count, 2, 4), dtype=torch.int32, device=self.device)
        indices = torch.empty((count, 4, 4), dtype=torch.int32, device=self.device)
        shifted_by_row, flat_indices = _shifted_rows(doubled, row_major=True), indices.view(-1)
        torch.bitwise_xor(state.view(torch.int32).view(count, 1, 4), first_key, out=doubled)
        for key in middle_keys:
            torch.add(shifted_by_row, tables.row_offsets, out=indices)
            looked_up = tables.round_table.index_select(0, flat_indices)  # (block, row j, column c)
            rows_01, rows_23 = looked_up.view(count, 2, 8).unbind(1)
            rows_02, rows_13 = (rows_01 ^ rows_23).view(count, 2, 1, 4).unbind(1)
            torch.bitwise_xor(rows_02 ^ rows_13, key, out=doubled)  # MixColumns' words, then AddRoundKey
        indices.copy_(_shifted_rows(doubled, row_major=False))
        substituted = tables.sbox.index_select(0, flat_indices).view(count, BLOCK_BYTES)
        return (substituted.view(torch.int32) ^ last_key[0]).view(torch.uint8)

    def keystream(self, offset: int, nbytes: int) -> torch.Tensor:
        """Bytes [offset, offset + nbytes) of the keystream: a fresh contiguous uint8 tensor at storage offset 0."""
        if offset < 0 or nbytes < 0:
            raise ValueError(f"offset and nbytes must be non-negative, got {offset} and {nbytes}")
        if nbytes == 0:
            return torch.empty(0, dtype=torch.uint8, device=self.device)
        first, skip = divmod(offset, BLOCK_BYTES)
        count = -(-(skip + nbytes) // BLOCK_BYTES)
        if count <= self._chunk_blocks:
            flat = self._ciphered_counters(first, count).view(-1)
            return flat[:nbytes] if skip == 0 else flat[skip : skip + nbytes].clone()
        out = torch.empty(nbytes, dtype=torch.uint8, device=self.device)
        done = 0
        for start in range(0, count, self._chunk_blocks):
            flat = self._ciphered_counters(first + start, min(self._chunk_blocks, count - start)).view(-1)
            piece = flat[skip if start == 0 else 0 :][: nbytes - done]
            out[done : done + piece.numel()] = piece
            done += piece.numel()
        return out

    def _ciphered_counters(self, first: int, count: int) -> torch.Tensor:
        return self.encrypt_blocks(self._counter_blocks(first, count))

    def _counter_blocks(self, first: int, count: int) -> torch.Tensor:
        """Counter blocks first .. first + count - 1 as (count, 16) uint8, made on the device (no host copy)."""
        value = (self._initial + first) % _COUNTER_MODULUS
        high, low = divmod(value, _HALF_MODULUS)
        before_carry = min(count, _HALF_MODULUS - low)  # blocks before the low half wraps and carries into the high
        blocks = self._counter_run(high, low, before_carry)
        if before_carry == count:
            return blocks
        return torch.cat((blocks, self._counter_run((high + 1) % _HALF_MODULUS, 0, count - before_carry)))

    def _counter_run(self, high: int, low: int, count: int) -> torch.Tensor:
        """`count` big-endian blocks with the high half `high` and low halves low, low + 1, ... (no wrap inside)."""
        lows = torch.arange(count, dtype=torch.int64, device=self.device).add_(_signed(low))
        halves = torch.stack((torch.full_like(lows, _signed(high)), lows), dim=1)
        shifts = self._tables.counter_shifts
        return ((halves.unsqueeze(2) >> shifts) & 0xFF).to(torch.uint8).view(count, BLOCK_BYTES)
