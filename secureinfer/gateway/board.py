"""What the status page shows: the nodes (operator, roles, device, measured speed, health), the committees and the
models they host, and the gateway's recent requests per mode with their latency.

Nodes come from the membership view; a node the gateway saw before and whose record has since expired is shown as
down, so a stopped node stays on the page instead of silently vanishing. Requests are the ones this gateway served
(their model, mode, status and latency; never their text).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from secureinfer.net.membership import MembershipTable, record_operator
from secureinfer.v1 import node_pb2

from . import catalog

UNKNOWN = ""


@dataclass(frozen=True)
class Finished:
    """One request the gateway answered."""

    at: float  # unix seconds when it ended
    endpoint: str  # "chat", "completions", "embeddings"
    model: str
    mode: str  # "secure" or "plaintext"
    status: int  # the HTTP status it got (499: the caller went away)
    latency_s: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    committee: str = ""
    strategy: str = ""


class RecentRequests:
    """The last `size` finished requests (thread-safe)."""

    def __init__(self, size: int) -> None:
        self._items: deque[Finished] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, item: Finished) -> None:
        with self._lock:
            self._items.append(item)

    def items(self) -> list[Finished]:
        with self._lock:
            return list(self._items)

    def by_mode(self) -> dict[str, dict[str, Any]]:
        """Per mode: how many requests, how many failed, and the latency of the successful ones."""
        out: dict[str, dict[str, Any]] = {}
        for mode in ("secure", "plaintext"):
            rows = [r for r in self.items() if r.mode == mode]
            ok = [r.latency_s for r in rows if r.status == 200]
            out[mode] = {"requests": len(rows), "failed": len(rows) - len(ok),
                         "mean_s": statistics.fmean(ok) if ok else None,
                         "median_s": statistics.median(ok) if ok else None,
                         "max_s": max(ok) if ok else None}
        return out


def operator_of(record: node_pb2.NodeRecord) -> str:
    """Who runs a node, as the CA names its operator in the record's certificate; "" where the certificate names none
    (the page shows "-")."""
    return record_operator(record) or UNKNOWN


class NodeBoard:
    """Every node the gateway has seen, with its last record and when it was last live (thread-safe)."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[node_pb2.NodeRecord, float]] = {}
        self._lock = threading.Lock()

    def nodes(self, table: MembershipTable | None, now: float | None = None) -> list[dict[str, Any]]:
        """The nodes to show: the live ones of `table` (None: the view could not be read) and those seen before."""
        now = time.time() if now is None else now
        live = {r.node_id: r for r in table.live()} if table is not None else {}
        with self._lock:
            for node_id, record in live.items():
                self._seen[node_id] = (record, now)
            seen = dict(self._seen)
        return [_node(record, node_id in live, last, now) for node_id, (record, last) in sorted(seen.items())]


def _node(record: node_pb2.NodeRecord, live: bool, last_seen: float, now: float) -> dict[str, Any]:
    cap = record.capability
    health = ("up" if record.healthy else "unhealthy") if live else "down"
    return {"node_id": record.node_id, "address": record.address, "operator": operator_of(record),
            "roles": list(record.roles), "device": cap.device or "cpu", "gflops": round(cap.matmul_gflops, 1),
            "cpus": cap.cpu_count, "memory_gib": round(cap.memory_bytes / 2**30, 1), "health": health,
            "models": sorted({m.model_id for m in record.models}), "seen_s_ago": round(max(now - last_seen, 0.0), 1),
            "record_age_s": round(max(now - record.issued_at, 0.0), 1)}


def committees(models: list[catalog.HostedModel]) -> list[dict[str, Any]]:
    """Committees and workers with the models each holds, whole (up) or not."""
    grouped: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
    for model in models:
        for place in model.placements:
            entry = grouped.setdefault((place.committee_id, place.node_ids), {
                "committee_id": place.committee_id, "mode": place.mode, "nodes": list(place.node_ids),
                "models": [], "up": True})
            entry["models"].append(model.model_id)
            entry["up"] = entry["up"] and place.up
    return sorted(grouped.values(), key=lambda c: (c["mode"] != "secret", c["models"], c["committee_id"]))


def snapshot(table: MembershipTable | None, error: str | None, board: NodeBoard, recent: RecentRequests,
             gateway: dict[str, Any]) -> dict[str, Any]:
    """The status page's data as JSON-ready values."""
    models = catalog.hosted_models(table) if table is not None else []
    return {"time": time.time(), "error": error, "gateway": gateway, "nodes": board.nodes(table),
            "committees": committees(models), "models": [m.as_openai() for m in models],
            "requests": {"by_mode": recent.by_mode(), "recent": [asdict(r) for r in reversed(recent.items())][:50]}}
