"""The `Channel` interface every transport implements, with per-peer counters of rounds, messages and bytes."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

Payload = torch.Tensor | bytes


class CommError(RuntimeError):
    """A message could not be delivered or received (peer gone, timeout, out-of-step tag)."""


@dataclass(frozen=True)
class Message:
    """What travels between parties: a payload, the sender's logical clock, and the protocol step's tag."""

    payload: Payload
    clock: int
    tag: str = ""


def payload_bytes(payload: Payload) -> int:
    """Bytes a payload occupies on the wire."""
    if isinstance(payload, torch.Tensor):
        return payload.numel() * payload.element_size()
    return len(payload)


@dataclass
class CommStats:
    """Counters for one party: rounds on the critical path (a Lamport clock), messages and bytes sent."""

    rounds: int = 0
    messages_sent: int = 0
    bytes_sent: int = 0
    bytes_to: dict[str, int] = field(default_factory=dict)

    def snapshot(self) -> "CommStats":
        return CommStats(self.rounds, self.messages_sent, self.bytes_sent, dict(self.bytes_to))

    def since(self, before: "CommStats") -> "CommStats":
        """What happened between `before` (a snapshot) and now."""
        return CommStats(
            rounds=self.rounds - before.rounds,
            messages_sent=self.messages_sent - before.messages_sent,
            bytes_sent=self.bytes_sent - before.bytes_sent,
            bytes_to={k: v - before.bytes_to.get(k, 0) for k, v in self.bytes_to.items()},
        )


class Channel(ABC):
    """Point-to-point messages between named parties, in FIFO order per (sender, receiver) pair.

    Rounds are counted with a Lamport clock: a message carries its sender's clock and receiving it moves the
    receiver's clock to at least that value plus one. The clock is the depth of the communication critical path,
    so independent messages sent together cost one round, and a chain of k dependent exchanges costs k.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.stats = CommStats()
        self._lock = threading.Lock()

    def send(self, to: str, payload: Payload, tag: str = "") -> None:
        """Send `payload` to party `to`; the payload must not be modified afterwards."""
        if to == self.name:
            raise CommError(f"{self.name} cannot send to itself")
        size = payload_bytes(payload)
        with self._lock:
            self.stats.messages_sent += 1
            self.stats.bytes_sent += size
            self.stats.bytes_to[to] = self.stats.bytes_to.get(to, 0) + size
            clock = self.stats.rounds
        self._deliver(to, Message(payload, clock, tag))

    def recv(self, frm: str, tag: str = "") -> Payload:
        """Receive the next payload from party `frm`; if `tag` is given it must match the sender's tag."""
        message = self._receive(frm)
        if tag and message.tag and tag != message.tag:
            raise CommError(f"{self.name} expected step {tag!r} from {frm}, got {message.tag!r}")
        with self._lock:
            self.stats.rounds = max(self.stats.rounds, message.clock + 1)
        return message.payload

    def exchange(self, to: str, payload: Payload, frm: str, tag: str = "") -> Payload:
        """Send to one party and receive from another in the same round."""
        self.send(to, payload, tag)
        return self.recv(frm, tag)

    @abstractmethod
    def _deliver(self, to: str, message: Message) -> None:
        """Hand a message to the transport."""

    @abstractmethod
    def _receive(self, frm: str) -> Message:
        """Block until the next message from `frm` arrives (or raise `CommError`)."""
