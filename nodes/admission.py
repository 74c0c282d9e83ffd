"""Per-client admission: a token bucket (sessions per second, with a burst) and a cap on concurrent sessions for each
client certificate name; other nodes (role "node") are never limited by these client limits.

    admission = Admission(AdmissionSettings(rate_per_s=2.0, burst=4, max_concurrent=2))
    with admission.admit(caller):       # raises RateLimited or TooManySessions (RESOURCE_EXHAUSTED)
        ...                             # the session runs; its concurrency slot is freed on exit

Idle clients whose bucket has refilled are forgotten once more than `max_tracked` are known, so memory stays bounded
however many client certificates call.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc

from secureinfer.net.certs import PeerCert
from secureinfer.net.errors import NodeError

EXEMPT_ROLES: tuple[str, ...] = ("node",)
MAX_TRACKED = 4096


class AdmissionError(ValueError):
    """Admission settings are out of range."""


class Refused(NodeError):
    """A client exceeded one of its limits on this node; `limit` names it and `retry_after_s` says when to retry."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    limit = ""

    def __init__(self, message: str, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimited(Refused):
    """The client opened sessions faster than its rate limit allows."""

    limit = "rate"


class TooManySessions(Refused):
    """The client already runs its maximum number of concurrent sessions here."""

    limit = "concurrency"


@dataclass(frozen=True)
class AdmissionSettings:
    """Per-client limits: sustained sessions per second and burst (None: no rate limit), and concurrent sessions."""

    rate_per_s: float | None = None
    burst: int | None = None  # None: max(1, ceil(rate_per_s))
    max_concurrent: int | None = None  # None: only the node's max_sessions applies
    exempt_roles: tuple[str, ...] = EXEMPT_ROLES
    max_tracked: int = MAX_TRACKED

    def __post_init__(self) -> None:
        rate = self.rate_per_s
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                                 or not math.isfinite(rate) or rate <= 0):
            raise AdmissionError(f"client_rate_per_s: must be a finite number > 0, got {rate!r}")
        if self.burst is not None:
            if rate is None:
                raise AdmissionError("client_burst: only meaningful with client_rate_per_s")
            if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
                raise AdmissionError(f"client_burst: must be an integer >= 1, got {self.burst!r}")
        elif rate is not None:
            object.__setattr__(self, "burst", max(1, math.ceil(rate)))
        limit = self.max_concurrent
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise AdmissionError(f"client_max_sessions: must be an integer >= 1, got {limit!r}")
        if self.max_tracked < 1:
            raise AdmissionError(f"max_tracked: must be >= 1, got {self.max_tracked}")

    @classmethod
    def from_config(cls, config: Any) -> "AdmissionSettings":
        """The limits of a NodeConfig (its client_rate_per_s, client_burst and client_session_cap: on by default)."""
        return cls(rate_per_s=config.client_rate_per_s, burst=config.client_burst,
                   max_concurrent=config.client_session_cap)

    @property
    def limited(self) -> bool:
        return self.rate_per_s is not None or self.max_concurrent is not None


@dataclass
class _Client:
    """One client's bucket (tokens as of `stamp`) and its sessions running now."""

    tokens: float
    stamp: float
    active: int = 0


class Ticket:
    """An admitted session: frees its client's concurrency slot when closed (a context manager; idempotent)."""

    def __init__(self, release: Callable[[], None] | None) -> None:
        self._release = release

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def __enter__(self) -> "Ticket":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class Admission:
    """Admits or refuses sessions per client certificate name; thread-safe."""

    def __init__(self, settings: AdmissionSettings, node_id: str = "this node",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings, self.node_id, self._clock = settings, node_id, clock
        self._clients: dict[str, _Client] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many clients are tracked now."""
        return len(self._clients)

    def active(self, name: str) -> int:
        """Sessions client `name` runs here now."""
        client = self._clients.get(name)
        return 0 if client is None else client.active

    def admit(self, caller: PeerCert) -> Ticket:
        """A Ticket for one session of `caller`, or RateLimited / TooManySessions; nodes always pass."""
        settings = self.settings
        if caller.role in settings.exempt_roles or not settings.limited:
            return Ticket(None)
        with self._lock:
            client = self._client(caller.name)
            if settings.max_concurrent is not None and client.active >= settings.max_concurrent:
                raise TooManySessions(
                    f"client {caller.name} already runs {client.active} sessions on {self.node_id}, its limit of "
                    f"concurrent sessions is {settings.max_concurrent}: retry when one of them ends", None)
            if settings.rate_per_s is not None:
                self._take_token(caller.name, client)
            client.active += 1
        return Ticket(lambda: self._release(caller.name))

    def _client(self, name: str) -> _Client:
        """The state of client `name` (new: a full bucket), with its bucket refilled to now."""
        now = self._clock()
        burst = float(self.settings.burst or 0)
        client = self._clients.get(name)
        if client is None:
            if len(self._clients) >= self.settings.max_tracked:
                self._forget_idle(now)
            client = self._clients[name] = _Client(tokens=burst, stamp=now)
        elif self.settings.rate_per_s is not None:
            elapsed = max(now - client.stamp, 0.0)
            client.tokens = min(burst, client.tokens + elapsed * self.settings.rate_per_s)
            client.stamp = now
        return client

    def _take_token(self, name: str, client: _Client) -> None:
        rate = self.settings.rate_per_s
        if client.tokens >= 1.0:
            client.tokens -= 1.0
            return
        wait = (1.0 - client.tokens) / rate
        raise RateLimited(
            f"client {name} exceeded its rate limit on {self.node_id} of {rate:g} sessions/s (burst "
            f"{self.settings.burst}): retry in {wait:.2f} s", wait)

    def _release(self, name: str) -> None:
        with self._lock:
            client = self._clients.get(name)
            if client is not None and client.active > 0:
                client.active -= 1

    def _forget_idle(self, now: float) -> None:
        """Drop clients with no session running whose bucket would be full by now (they lose nothing)."""
        rate, burst = self.settings.rate_per_s, float(self.settings.burst or 0)
        for name, client in list(self._clients.items()):
            full = rate is None or client.tokens + (now - client.stamp) * rate >= burst
            if client.active == 0 and full:
                del self._clients[name]


__all__ = ["Admission", "AdmissionError", "AdmissionSettings", "RateLimited", "Refused",
           "Ticket", "TooManySessions"]
