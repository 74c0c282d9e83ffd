"""One computing party's state: its index, channel, pairwise PRGs and the engine configuration.

Three computing parties P0, P1, P2 sit on a ring: party i shares one PRG seed with its next neighbour (i+1) and one
with its previous neighbour (i-1). Seeds are agreed at set-up with X25519 over the (authenticated) channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .comm import Channel
from .prg import PRG, KeyAgreement
from .ring import FixedPoint

PARTY_NAMES: tuple[str, str, str] = ("P0", "P1", "P2")
N_PARTIES = 3


@dataclass(frozen=True)
class EngineConfig:
    """Settings every party of a session must agree on."""

    fxp: FixedPoint = field(default_factory=FixedPoint)
    device: str = "cpu"
    session_id: str = "session"

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)


class Party:
    """Party `index` of a 3-party session; protocols take it as their first argument."""

    def __init__(self, index: int, channel: Channel, config: EngineConfig, prg_prev: PRG, prg_next: PRG) -> None:
        if index not in range(N_PARTIES):
            raise ValueError(f"party index must be 0, 1 or 2, got {index}")
        self.index = index
        self.channel = channel
        self.config = config
        self.prg_prev = prg_prev
        self.prg_next = prg_next
        self.prg_private = PRG.fresh(config.device)
        self._helper_counter = 0

    @classmethod
    def connect(cls, index: int, channel: Channel, config: EngineConfig) -> "Party":
        """Agree on pairwise PRG seeds with both neighbours (one round of X25519 public keys) and return the party."""
        keys = KeyAgreement()
        nxt, prv = PARTY_NAMES[(index + 1) % 3], PARTY_NAMES[(index - 1) % 3]
        channel.send(nxt, keys.public_bytes, tag="setup")
        channel.send(prv, keys.public_bytes, tag="setup")
        next_public = channel.recv(nxt, tag="setup")
        prev_public = channel.recv(prv, tag="setup")
        session = config.session_id.encode()
        # The seed for the link (i, i+1) is bound to the session and to the link's ordered names.
        seed_next = keys.seed_with(next_public, session + f"|{PARTY_NAMES[index]}>{nxt}".encode())
        seed_prev = keys.seed_with(prev_public, session + f"|{prv}>{PARTY_NAMES[index]}".encode())
        return cls(index, channel, config, PRG(seed_prev, config.device), PRG(seed_next, config.device))

    @classmethod
    def receiver(cls, index: int, channel: Channel, config: EngineConfig) -> "Party":
        """A party that only receives inputs from an outside owner (publishing weights): no seeds are agreed, its
        'pairwise' PRGs are private, so it must not run protocols that need correlated randomness."""
        return cls(index, channel, config, PRG.fresh(config.device), PRG.fresh(config.device))

    # --- names and neighbours -------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return PARTY_NAMES[self.index]

    @property
    def next(self) -> int:
        return (self.index + 1) % N_PARTIES

    @property
    def prev(self) -> int:
        return (self.index - 1) % N_PARTIES

    @property
    def fxp(self) -> FixedPoint:
        return self.config.fxp

    @property
    def device(self) -> torch.device:
        return self.config.torch_device

    def send(self, to: int, payload: torch.Tensor | bytes, tag: str = "") -> None:
        self.channel.send(PARTY_NAMES[to], payload, tag)

    def recv(self, frm: int, tag: str = "") -> torch.Tensor:
        return self.channel.recv(PARTY_NAMES[frm], tag)

    # --- correlated randomness (no communication) ----------------------------------------------------------------

    def prg_with(self, other: int) -> PRG:
        """The PRG this party shares with neighbour `other` (both draw the same stream)."""
        if other == self.next:
            return self.prg_next
        if other == self.prev:
            return self.prg_prev
        raise ValueError(f"party {self.index} shares no PRG with {other}")

    def zero_share(self, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
        """This party's term of a fresh 3-out-of-3 sharing of zero: F(k_prev) - F(k_next); the terms sum to 0."""
        return self.prg_prev.ring(shape) - self.prg_next.ring(shape)

    def zero_xor_share(self, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
        """This party's term of a fresh XOR-sharing of zero."""
        return self.prg_prev.ring(shape) ^ self.prg_next.ring(shape)

    def random_pair(self, shape: torch.Size | tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """This party's (r_i, r_{i+1}) of a replicated sharing of a uniform r that no party knows."""
        return self.prg_prev.ring(shape), self.prg_next.ring(shape)

    def next_helper(self) -> int:
        """The party that plays the helper role in the next asymmetric protocol; rotates to balance traffic."""
        helper = self._helper_counter % N_PARTIES
        self._helper_counter += 1
        return helper
