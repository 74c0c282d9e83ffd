"""A performance record: the row format (`RunRecord`), the versioned SQLite schema and the deterministic row key."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 1
STATUSES = ("ok", "error")
# The env_json keys a row keeps when it is shared across the network: where and how it ran, never who asked for it.
SHARED_ENV_KEYS = ("source", "committee_id", "node_ids", "predicted_s", "predicted_by")
MAX_SHARED_ROW_BYTES = 16 << 10  # the largest row (`row_bytes`) a node takes from a reporter


class StoreError(RuntimeError):
    """The store cannot be opened or written (corrupt file, duplicate key, bad query)."""


class SchemaVersionError(StoreError):
    """The store's schema is newer than this code understands."""


@dataclass
class RunRecord:
    """One measured run (one row of `runs`). Outcome fields are None when not measured or not applicable (e.g.
    per_token_s for an encoder, tokens_equal for embeddings, everything for a run that failed)."""

    key: str
    timestamp: float  # unix seconds when the run finished
    # --- request features
    model: str
    arch: str  # "bert" | "gpt2" | "llama"
    n_params: int | None
    n_layers: int | None
    hidden: int | None
    vocab: int | None
    seq_len: int  # prompt / input tokens per row
    batch: int  # rows
    gen_tokens: int  # new tokens generated (0 for encoders)
    task: str  # "generate" | "embed"
    # --- node / hardware features
    device: str  # as nodes.capability.describe_device: "cpu" or "cuda:0 (NVIDIA H200)"
    cpu_count: int
    matmul_gflops: float
    memory_bytes: int
    host: str
    # --- link features (simulated in-process for secure runs; 0 / None for plaintext runs)
    latency_s: float
    bandwidth_bytes_per_s: float | None
    # --- strategy
    mode: str  # "secure" | "plaintext"
    strategy_name: str
    strategy_json: str
    # --- outcome
    status: str = "ok"  # "ok" | "error"
    error: str | None = None
    prefill_s: float | None = None  # first forward (the whole forward for an encoder)
    per_token_s: float | None = None  # mean decode step (None without decode steps)
    total_s: float | None = None  # every step of the request
    load_s: float | None = None  # weights loaded / shared (before the request's clock starts)
    rounds: int | None = None  # critical-path communication rounds, all steps (secure)
    prefill_rounds: int | None = None
    bytes_per_party_max: int | None = None  # bytes sent, all steps, by the busiest party (secure)
    bytes_per_party_sum: int | None = None  # bytes sent, all steps, by the three parties together
    peak_rss_mb: float | None = None  # the process's peak resident memory during the run
    peak_device_mb: float | None = None  # CUDA peak allocated memory during the run
    max_abs_err: float | None = None  # vs the float64 plaintext reference (logits or embeddings)
    min_cosine: float | None = None  # min over rows of cosine similarity to the reference
    tokens_equal: bool | None = None  # greedy tokens identical to the reference's (decoders)
    repeat: int = 0  # repetition index of the same case (part of the key)
    steps_json: str | None = None  # per step: seconds, rounds, bytes per party, tokens
    env_json: str | None = None  # torch / python versions, threads, git commit, engine, notes

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise StoreError(f"status must be one of {STATUSES}; got {self.status!r}")
        if self.mode not in ("secure", "plaintext"):
            raise StoreError(f"mode must be 'secure' or 'plaintext'; got {self.mode!r}")

    def as_row(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        if row["tokens_equal"] is not None:
            row["tokens_equal"] = int(row["tokens_equal"])
        return row


def without_identity(record: RunRecord) -> RunRecord:
    """A copy of `record` fit to share across the network: its env_json keeps only SHARED_ENV_KEYS, so no client
    name (or the certificate that reported it) travels with the request's features and timings."""
    if record.env_json is None:
        return record
    try:
        env = json.loads(record.env_json)
    except json.JSONDecodeError:
        env = None
    shared = {k: env[k] for k in SHARED_ENV_KEYS if k in env} if isinstance(env, dict) else {}
    return dataclasses.replace(record, env_json=json.dumps(shared, sort_keys=True))


def row_bytes(record: RunRecord) -> int:
    """How much a row weighs: the length of its values as compact JSON (what a node stores, give or take)."""
    return len(json.dumps(record.as_row(), separators=(",", ":")).encode())


def _sql_type(annotation: str) -> str:
    base = annotation.split("|")[0].strip()
    return {"int": "INTEGER", "float": "REAL", "str": "TEXT", "bool": "INTEGER"}[base]


COLUMNS: tuple[tuple[str, str], ...] = tuple((f.name, _sql_type(str(f.type))) for f in dataclasses.fields(RunRecord))
COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _ in COLUMNS)
BOOL_COLUMNS = {f.name for f in dataclasses.fields(RunRecord) if str(f.type).startswith("bool")}
_INDEXED = ("model", "mode", "strategy_name", "device", "status")

# Schema version 1, frozen: a later version adds a migration below (and the field to RunRecord), never edits this.
SCHEMA_V1 = [
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE runs (
    key TEXT PRIMARY KEY,
    timestamp REAL NOT NULL,
    model TEXT NOT NULL,
    arch TEXT,
    n_params INTEGER,
    n_layers INTEGER,
    hidden INTEGER,
    vocab INTEGER,
    seq_len INTEGER,
    batch INTEGER,
    gen_tokens INTEGER,
    task TEXT,
    device TEXT,
    cpu_count INTEGER,
    matmul_gflops REAL,
    memory_bytes INTEGER,
    host TEXT,
    latency_s REAL,
    bandwidth_bytes_per_s REAL,
    mode TEXT NOT NULL,
    strategy_name TEXT NOT NULL,
    strategy_json TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    prefill_s REAL,
    per_token_s REAL,
    total_s REAL,
    load_s REAL,
    rounds INTEGER,
    prefill_rounds INTEGER,
    bytes_per_party_max INTEGER,
    bytes_per_party_sum INTEGER,
    peak_rss_mb REAL,
    peak_device_mb REAL,
    max_abs_err REAL,
    min_cosine REAL,
    tokens_equal INTEGER,
    repeat INTEGER,
    steps_json TEXT,
    env_json TEXT)""",
    *[f"CREATE INDEX runs_{c} ON runs ({c})" for c in _INDEXED],
]
# MIGRATIONS[v]: statements that take a version-v store to version v + 1.
MIGRATIONS: dict[int, list[str]] = {}


def run_key(**parts: Any) -> str:
    """A deterministic key for a run: sha256 of the canonical JSON of its parts (case, strategy, environment).

    Floats are written with repr (stable across runs); dict order does not matter."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


