"""One computing party's state: its index, channel, pairwise PRGs and the engine configuration.

Three computing parties P0, P1, P2 sit on a ring: party i shares one PRG seed with its next neighbour (i+1) and one
with its previous neighbour (i-1). Seeds are agreed at set-up with X25519 over the (authenticated) channel; given a
`KeySigner` (the node daemon's, over its node keys), each public key travels with a signature over the session, the
link and the key, which the receiver verifies against the sender's certificate before deriving a seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from .comm import Channel
from .prg import PRG, KeyAgreement
from .ring import FixedPoint

PARTY_NAMES: tuple[str, str, str] = ("P0", "P1", "P2")
N_PARTIES = 3
PUBLIC_KEY_BYTES = 32  # an X25519 public key, raw


class KeySigner(Protocol):
    """Signs this party's key-agreement messages and verifies its neighbours' (e.g. with the nodes' certificates)."""

    def sign(self, message: bytes) -> bytes:
        """A signature of `message` by this party's long-term key."""

    def verify(self, party: int, message: bytes, signature: bytes) -> None:
        """Raise unless `signature` is party `party`'s signature of `message`."""


def setup_message(session_id: str, sender: str, receiver: str, public: bytes) -> bytes:
    """What a key-agreement message's signature covers: the session, the ordered link and the public key."""
    return b"secureinfer-setup|" + session_id.encode() + f"|{sender}>{receiver}|".encode() + public


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
    def connect(cls, index: int, channel: Channel, config: EngineConfig, signer: KeySigner | None = None
                ) -> "Party":
        """Agree on pairwise PRG seeds with both neighbours (one round of X25519 public keys, each signed and
        verified when a `signer` is given) and return the party."""
        keys = KeyAgreement()
        nxt, prv = (index + 1) % 3, (index - 1) % 3
        for to in (nxt, prv):
            channel.send(PARTY_NAMES[to], _signed_key(keys.public_bytes, index, to, config, signer), tag="setup")
        next_public = _verified_key(channel.recv(PARTY_NAMES[nxt], tag="setup"), nxt, index, config, signer)
        prev_public = _verified_key(channel.recv(PARTY_NAMES[prv], tag="setup"), prv, index, config, signer)
        nxt, prv = PARTY_NAMES[nxt], PARTY_NAMES[prv]
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


def _signed_key(public: bytes, sender: int, receiver: int, config: EngineConfig, signer: KeySigner | None) -> bytes:
    """The key-agreement message from `sender` to `receiver`: the public key, then its signature if signing."""
    if signer is None:
        return public
    message = setup_message(config.session_id, PARTY_NAMES[sender], PARTY_NAMES[receiver], public)
    return public + signer.sign(message)


def _verified_key(payload: bytes, sender: int, receiver: int, config: EngineConfig, signer: KeySigner | None
                  ) -> bytes:
    """The public key of a key-agreement message from `sender`, its signature verified first if signing."""
    if signer is None:
        return payload
    if not isinstance(payload, (bytes, bytearray)) or len(payload) <= PUBLIC_KEY_BYTES:
        raise ValueError(f"party {PARTY_NAMES[sender]} sent a malformed key-agreement message")
    payload = bytes(payload)
    public = payload[:PUBLIC_KEY_BYTES]
    message = setup_message(config.session_id, PARTY_NAMES[sender], PARTY_NAMES[receiver], public)
    signer.verify(sender, message, payload[PUBLIC_KEY_BYTES:])
    return public
