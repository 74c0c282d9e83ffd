"""A node's Prometheus metrics, kept in the daemon's own registry and optionally served over HTTP."""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

PEER_KINDS: tuple[str, ...] = ("party", "client")
ADMISSION_LIMITS: tuple[str, ...] = ("rate", "concurrency")
SESSION_BUCKETS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, float("inf"))


class MetricsError(ValueError):
    """A metric update is out of range, or the HTTP endpoint is misused or cannot listen where it is asked to."""


def _check_label(name: str, value: str) -> str:
    if not isinstance(value, str) or not value:
        raise MetricsError(f"{name}: expected a non-empty string, got {value!r}")
    return value


def _check_count(name: str, value: float) -> float:
    if value < 0:
        raise MetricsError(f"{name}: must be >= 0, got {value}")
    return value


class NodeMetrics:
    """Counters, gauges and a histogram for one node daemon, in a registry nothing else shares."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.sessions = Counter(
            "secureinfer_sessions", "Sessions finished, by task, privacy and outcome.",
            ["task", "privacy", "status"], registry=reg,
        )
        self.bytes_sent = Counter(
            "secureinfer_bytes_sent", "Payload bytes sent, by kind of peer.", ["peer_kind"], registry=reg
        )
        self.rounds = Counter("secureinfer_rounds", "Communication rounds of finished sessions.", registry=reg)
        self.batches = Counter("secureinfer_batches", "Batched secure forwards run, by outcome.", ["status"],
                               registry=reg)
        self.batched_steps = Counter("secureinfer_batched_steps", "Request steps computed inside batched forwards.",
                                     registry=reg)
        self.gossip_rounds = Counter("secureinfer_gossip_rounds", "Gossip rounds run.", registry=reg)
        self.rejected_records = Counter(
            "secureinfer_rejected_records", "Gossiped node records rejected (bad signature, expired, ...).",
            registry=reg,
        )
        self.admission_refused = Counter(
            "secureinfer_admission_refused", "Client sessions refused by a per-client limit, by limit (rate, "
            "concurrency).", ["limit"], registry=reg,
        )
        self.active_sessions = Gauge("secureinfer_active_sessions", "Sessions running now.", registry=reg)
        self.known_nodes = Gauge("secureinfer_known_nodes", "Live node records known.", registry=reg)
        self.hosted_models = Gauge("secureinfer_hosted_models", "Models (or model shares) held.", registry=reg)
        self.session_seconds = Histogram(
            "secureinfer_session_seconds", "Session wall time, by task.", ["task"],
            buckets=SESSION_BUCKETS, registry=reg,
        )
        for kind in PEER_KINDS:  # expose both series at 0 from the start
            self.bytes_sent.labels(peer_kind=kind)
        for limit in ADMISSION_LIMITS:
            self.admission_refused.labels(limit=limit)
        self._active = 0
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # --- events ----------------------------------------------------------------------------------------------------

    def session_started(self, task: str, privacy: str) -> None:
        """Count a session as active."""
        _check_label("task", task)
        _check_label("privacy", privacy)
        with self._lock:
            self._active += 1
            self.active_sessions.inc()

    def session_finished(
        self,
        task: str,
        privacy: str,
        status: str,
        seconds: float,
        bytes_sent: int = 0,
        rounds: int = 0,
        client_bytes_sent: int = 0,
    ) -> None:
        """Record a session started with session_started: outcome, duration, party/client bytes sent and rounds."""
        labels = {
            "task": _check_label("task", task),
            "privacy": _check_label("privacy", privacy),
            "status": _check_label("status", status),
        }
        _check_count("seconds", seconds)
        _check_count("bytes_sent", bytes_sent)
        _check_count("rounds", rounds)
        _check_count("client_bytes_sent", client_bytes_sent)
        with self._lock:
            if self._active == 0:
                raise MetricsError("session_finished without a matching session_started")
            self._active -= 1
            self.active_sessions.dec()
        self.sessions.labels(**labels).inc()
        self.session_seconds.labels(task=task).observe(seconds)
        self.bytes_sent.labels(peer_kind="party").inc(bytes_sent)
        self.bytes_sent.labels(peer_kind="client").inc(client_bytes_sent)
        self.rounds.inc(rounds)

    def add_bytes_sent(self, peer_kind: str, nbytes: int) -> None:
        """Count bytes sent outside session_finished (e.g. streamed to a client as they go)."""
        if peer_kind not in PEER_KINDS:
            raise MetricsError(f"peer_kind: expected one of {PEER_KINDS}, got {peer_kind!r}")
        self.bytes_sent.labels(peer_kind=peer_kind).inc(_check_count("nbytes", nbytes))

    def batch_finished(self, status: str, steps: int) -> None:
        """Count one batched forward (OK or the status it failed with) and the request steps it held."""
        self.batches.labels(status=_check_label("status", status)).inc()
        self.batched_steps.inc(_check_count("steps", steps))

    def admission_refused_for(self, limit: str) -> None:
        """Count one client session refused by a per-client limit ("rate" or "concurrency")."""
        if limit not in ADMISSION_LIMITS:
            raise MetricsError(f"limit: expected one of {ADMISSION_LIMITS}, got {limit!r}")
        self.admission_refused.labels(limit=limit).inc()

    def gossip_round(self) -> None:
        """Count one gossip round."""
        self.gossip_rounds.inc()

    def record_rejected(self, count: int = 1) -> None:
        """Count gossiped records that were rejected."""
        self.rejected_records.inc(_check_count("count", count))

    def set_known_nodes(self, count: int) -> None:
        """Set the number of live node records known."""
        self.known_nodes.set(_check_count("count", count))

    def set_hosted_models(self, count: int) -> None:
        """Set the number of models (or model shares) this node holds."""
        self.hosted_models.set(_check_count("count", count))

    # --- exposition ------------------------------------------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return generate_latest(self.registry)

    @property
    def port(self) -> int | None:
        """The port the HTTP endpoint is bound to, or None when it is not serving."""
        return None if self._server is None else int(self._server.server_port)

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve /metrics over HTTP on host:port (0: a free port) in a background thread; return the bound port."""
        if self._server is not None:
            raise MetricsError(f"already serving on port {self.port}")
        if not 0 <= port <= 65535:
            raise MetricsError(f"port must be in 0..65535, got {port}")
        try:
            started = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            shown = f"[{host}]" if ":" in host else host
            raise MetricsError(f"cannot serve metrics on {shown}:{port}: {exc.strerror or exc}") from None
        if not isinstance(started, tuple):  # prometheus_client < 0.21 returns None: nothing to report or close
            raise MetricsError("prometheus-client >= 0.21 is needed (start_http_server must return the server)")
        self._server, self._thread = started
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop the HTTP endpoint, if serving (safe to call more than once)."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)
