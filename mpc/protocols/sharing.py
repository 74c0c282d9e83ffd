"""Getting secrets into replicated form: an input owner (not a party) shares a tensor with the three parties.

The owner picks x_0 and x_1 from fresh PRG seeds and sets x_2 = x - x_0 - x_1. Party 0 needs (x_0, x_1): two
16-byte seeds. Party 1 needs (x_1, x_2): one seed and x_2. Party 2 needs (x_2, x_0): x_2 and one seed. So the owner
sends the tensor twice instead of six times, and each party's pair is uniformly random on its own.

A seed message names its component's shape: a receiver that expands whatever shape it is sent lets a few bytes
claim gigabytes. `receive_input` therefore parses every declared shape first and hands it to the caller's `check`
(the shape it expects, or its bounds) before anything is expanded.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable

import torch

from ..comm import Channel, CommError
from ..party import PARTY_NAMES, Party
from ..prg import PRG, SEED_BYTES
from ..ring import RING_DTYPE, as_ring
from ..shares import AShare, BShare

_SEED_TAG = b"S"
_MAX_DIMS = 8
_MAX_ELEMENTS = 1 << 56  # no shape beyond this is meaningful (its ring tensor alone would take 2^59 bytes)

ShapeCheck = Callable[[tuple[int, ...]], None]  # raises unless the receiver accepts a component of this shape


class InputError(CommError):
    """An input owner's message that is not a share component this party accepts (malformed, or a shape outside
    what the receiver expects)."""


def _seed_message(seed: bytes, shape: torch.Size) -> bytes:
    return _SEED_TAG + seed + struct.pack(f"<B{len(shape)}q", len(shape), *shape)


def _parse_seed_message(message: bytes) -> tuple[bytes, tuple[int, ...]]:
    """The seed and the declared shape of a seed message (nothing is expanded)."""
    if len(message) < 2 + SEED_BYTES or message[:1] != _SEED_TAG:
        raise InputError("malformed seed message from the input owner")
    seed, ndim = message[1 : 1 + SEED_BYTES], message[1 + SEED_BYTES]
    if ndim > _MAX_DIMS or len(message) != 2 + SEED_BYTES + 8 * ndim:
        raise InputError("malformed seed message from the input owner")
    return seed, struct.unpack(f"<{ndim}q", message[2 + SEED_BYTES :])


def _check_shape(shape: tuple[int, ...], check: ShapeCheck | None) -> None:
    """InputError for a shape no tensor can have; then the receiver's own `check`."""
    if any(d < 0 for d in shape) or math.prod(shape) > _MAX_ELEMENTS:
        raise InputError(f"the input owner declared an impossible shape {list(shape)}")
    if check is not None:
        check(shape)


def split(x: torch.Tensor) -> tuple[list[bytes], torch.Tensor]:
    """Owner side: seeds for x_0, x_1 and the tensor x_2 = x - x_0 - x_1 (all uniformly random on their own)."""
    as_ring(x)
    seeds = [os.urandom(SEED_BYTES), os.urandom(SEED_BYTES)]
    x0, x1 = (PRG(s, x.device).ring(x.shape) for s in seeds)
    return seeds, x - x0 - x1


def send_input(channel: Channel, x: torch.Tensor, tag: str = "input", parties: tuple[str, ...] = PARTY_NAMES) -> None:
    """Owner side: share the ring tensor `x` with the three parties (x_0 and x_1 travel as seeds)."""
    seeds, x2 = split(x)
    s0, s1 = (_seed_message(s, x.shape) for s in seeds)
    channel.send(parties[0], s0, tag)
    channel.send(parties[0], s1, tag)
    channel.send(parties[1], s1, tag)
    channel.send(parties[1], x2, tag)
    channel.send(parties[2], x2, tag)
    channel.send(parties[2], s0, tag)


def receive_input(party: Party, owner: str, tag: str = "input", *, check: ShapeCheck | None = None) -> AShare:
    """Party side: receive this party's pair of an input shared by `owner` with `send_input`. Each component's
    declared shape goes to `check` (which raises to refuse it) before a seed is expanded; the second must equal the
    first."""
    pair: list[torch.Tensor] = []
    for _ in range(2):
        message = party.channel.recv(owner, tag)
        if isinstance(message, bytes):
            seed, shape = _parse_seed_message(message)
        elif isinstance(message, torch.Tensor) and message.dtype == RING_DTYPE:
            shape = tuple(message.shape)
        else:
            raise InputError(f"{party.name} got a malformed share from {owner}")
        if pair and shape != tuple(pair[0].shape):
            raise InputError(f"{party.name} got share components of different shapes from {owner}")
        _check_shape(shape, check)
        if isinstance(message, bytes):
            pair.append(PRG(seed, party.device).ring(shape))
        else:
            pair.append(message.to(party.device))
    return AShare(pair[0], pair[1], party.index)


def public(party: Party, c: torch.Tensor, kind: type = AShare):
    """A replicated sharing of a public ring tensor (component x_0 = c); no messages."""
    c = as_ring(c).to(party.device)
    zero = torch.zeros_like(c)
    return kind(c if party.index == 0 else zero, c if party.index == 2 else zero, party.index)


def public_bits(party: Party, c: torch.Tensor) -> BShare:
    """A boolean sharing of a public bit pattern; no messages."""
    return public(party, c, BShare)
