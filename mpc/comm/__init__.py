"""Transports between parties: the `Channel` interface and an in-memory network for simulations and tests."""

from .channel import Channel, CommError, CommStats, Message, payload_bytes
from .memory import LinkModel, LinkSchedule, MemoryChannel, MemoryNetwork

__all__ = [
    "Channel",
    "CommError",
    "CommStats",
    "LinkModel",
    "LinkSchedule",
    "MemoryChannel",
    "MemoryNetwork",
    "Message",
    "payload_bytes",
]
