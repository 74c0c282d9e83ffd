"""An in-process network: parties are threads, links are queues, with optional simulated latency and bandwidth."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

from .channel import Channel, CommError, Message, payload_bytes


@dataclass(frozen=True)
class LinkModel:
    """Simulated link: one-way latency in seconds and bandwidth in bytes per second (None: unlimited)."""

    latency_s: float = 0.0
    bandwidth_bytes_per_s: float | None = None

    def __post_init__(self) -> None:
        if self.latency_s < 0:
            raise ValueError("latency_s must be >= 0")
        if self.bandwidth_bytes_per_s is not None and self.bandwidth_bytes_per_s <= 0:
            raise ValueError("bandwidth_bytes_per_s must be > 0")

    @classmethod
    def lan(cls) -> "LinkModel":
        """A 1 Gbit/s link with 0.1 ms latency."""
        return cls(latency_s=1e-4, bandwidth_bytes_per_s=125e6)

    @classmethod
    def wan(cls) -> "LinkModel":
        """A 100 Mbit/s link with 20 ms latency."""
        return cls(latency_s=0.02, bandwidth_bytes_per_s=12.5e6)


class LinkSchedule:
    """When messages sent on one shaped link arrive: FIFO, each waits for the previous one's transfer (thread-safe)."""

    def __init__(self, latency_s: float = 0.0, bandwidth_bytes_per_s: float | None = None) -> None:
        self.latency_s = latency_s
        self.bandwidth_bytes_per_s = bandwidth_bytes_per_s
        self._free_at = 0.0
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """False for an unshaped link (no latency, unlimited bandwidth): messages arrive at once."""
        return self.latency_s > 0 or self.bandwidth_bytes_per_s is not None

    def arrival(self, size: int, now: float) -> float:
        """The monotonic time a message of `size` bytes sent at `now` arrives."""
        if not self.active:
            return now
        with self._lock:
            start = max(now, self._free_at)
            self._free_at = start + (size / self.bandwidth_bytes_per_s if self.bandwidth_bytes_per_s else 0.0)
            return self._free_at + self.latency_s


class MemoryNetwork:
    """Queues between every ordered pair of named parties; `channel(name)` is that party's endpoint.

    `link` shapes every link except those to and from the names in `unshaped` (e.g. a model owner whose one-time
    weight publishing is set-up, outside every measured figure, and would otherwise dominate a simulated slow link)."""

    def __init__(self, names: list[str], link: LinkModel | None = None, timeout_s: float = 120.0,
                 unshaped: tuple[str, ...] = ()) -> None:
        if len(set(names)) != len(names):
            raise ValueError(f"party names must be distinct: {names}")
        self.names = list(names)
        self.link = link or LinkModel()
        self.timeout_s = timeout_s
        self._queues = {(a, b): queue.Queue() for a in names for b in names if a != b}
        self._schedules = {(a, b): LinkSchedule(self.link.latency_s, self.link.bandwidth_bytes_per_s)
                           for a, b in self._queues if a not in unshaped and b not in unshaped}
        self._aborted: BaseException | None = None

    def channel(self, name: str) -> "MemoryChannel":
        if name not in self.names:
            raise ValueError(f"unknown party {name!r}; parties are {self.names}")
        return MemoryChannel(name, self)

    def abort(self, reason: BaseException) -> None:
        """Fail every pending and future receive (a party died); the first reason wins."""
        if self._aborted is None:
            self._aborted = reason

    def deliver_at(self, frm: str, to: str, size: int) -> float:
        """When a message of `size` bytes sent now on link frm->to arrives (serialised per link)."""
        now = time.monotonic()
        schedule = self._schedules.get((frm, to))
        return now if schedule is None else schedule.arrival(size, now)

    def put(self, frm: str, to: str, message: Message) -> None:
        if (frm, to) not in self._queues:
            raise CommError(f"no link from {frm!r} to {to!r}")
        self._queues[(frm, to)].put((self.deliver_at(frm, to, payload_bytes(message.payload)), message))

    def get(self, frm: str, to: str) -> Message:
        if (frm, to) not in self._queues:
            raise CommError(f"no link from {frm!r} to {to!r}")
        deadline = time.monotonic() + self.timeout_s
        while True:
            if self._aborted is not None:
                raise CommError(f"network aborted: {self._aborted!r}")
            try:
                arrive_at, message = self._queues[(frm, to)].get(timeout=0.05)
                break
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise CommError(f"{to} timed out after {self.timeout_s}s waiting for {frm}") from None
        wait = arrive_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        return message


class MemoryChannel(Channel):
    """One party's endpoint on a `MemoryNetwork`."""

    def __init__(self, name: str, network: MemoryNetwork) -> None:
        super().__init__(name)
        self.network = network

    def _deliver(self, to: str, message: Message) -> None:
        self.network.put(self.name, to, message)

    def _receive(self, frm: str) -> Message:
        return self.network.get(frm, self.name)
