"""Opening secrets. These are the only functions in the engine that turn shares into plaintext.

Each party i holds (x_i, x_{i+1}) and misses x_{i-1}, which party i-1 holds as its first component. Opening to
everyone therefore costs one round and one ring element per party; opening to one party costs one element.
"""

from __future__ import annotations

import torch

from ..comm import Channel, CommError
from ..party import PARTY_NAMES, Party
from ..shares import AShare, BShare, _Replicated


def _combine(x: _Replicated, missing: torch.Tensor) -> torch.Tensor:
    if isinstance(x, BShare):
        return x.lo ^ x.hi ^ missing
    return x.lo + x.hi + missing


def _check_missing(party: Party, x: _Replicated, missing: torch.Tensor, frm: int) -> torch.Tensor:
    if not isinstance(missing, torch.Tensor) or missing.shape != x.shape or missing.dtype != x.lo.dtype:
        raise CommError(f"{party.name} got a malformed share from P{frm} while revealing")
    return missing.to(x.device)


def reveal(party: Party, x: AShare | BShare, tag: str = "reveal") -> torch.Tensor:
    """Open `x` to all three parties: send x_i to the next party, receive x_{i-1} from the previous. 1 round."""
    party.send(party.next, x.lo, tag)
    missing = _check_missing(party, x, party.recv(party.prev, tag), party.prev)
    return _combine(x, missing)


def reveal_to(party: Party, x: AShare | BShare, to: int, tag: str = "reveal_to") -> torch.Tensor | None:
    """Open `x` to party `to` only (party `to`-1 sends it the missing component); others get None. 1 round."""
    if party.index == (to - 1) % 3:
        party.send(to, x.lo, tag)
    if party.index != to:
        return None
    missing = _check_missing(party, x, party.recv(party.prev, tag), party.prev)
    return _combine(x, missing)


def reveal_to_owner(party: Party, x: AShare | BShare, owner: str, tag: str = "output") -> None:
    """Send this party's first component to an outside `owner` (the client), who alone reconstructs the value."""
    party.channel.send(owner, x.lo, tag)


def reveal_at_owner(channel: Channel, kind: type = AShare, tag: str = "output",
                    parties: tuple[str, ...] = PARTY_NAMES) -> torch.Tensor:
    """Owner side of `reveal_to_owner`: receive x_0, x_1, x_2 and reconstruct the ring tensor."""
    parts = [channel.recv(p, tag) for p in parties]
    if any(not isinstance(p, torch.Tensor) or p.shape != parts[0].shape for p in parts):
        raise CommError("malformed output shares")
    if kind is BShare:
        return parts[0] ^ parts[1] ^ parts[2]
    return parts[0] + parts[1] + parts[2].to(parts[0].device)
