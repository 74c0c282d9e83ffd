"""The performance store: one SQLite row per measured run, the selector's training data (DESIGN.md, "Selector").

It lives here, in nodes/, because nodes keep and gossip these rows and sit below the selector in the layers;
`secureinfer.selector.store` re-exports every name (`from secureinfer.selector.store import open_store, RunRecord`).

A row holds what the selector may condition on and what it predicts:
  request   model name, architecture and size (n_params, n_layers, hidden, vocab), seq_len, batch, gen_tokens, task
  node      device, cpu_count, matmul_gflops, memory_bytes, host (nodes/capability.py's measure())
  link      latency_s (one way), bandwidth_bytes_per_s (NULL: unlimited)
  strategy  mode, name and JSON (mpc/models/strategy.py: `from_json(strategy_json)` gives the executable strategy)
  outcome   prefill_s, per_token_s, total_s, load_s, rounds, bytes per party (max and sum over the three parties),
            peak memory, accuracy against the float64 plaintext reference, status ('ok' / 'error' + message)
Each row has a `key`: a deterministic hash of the case, the strategy and the environment (`run_key`), so a sweep that
is interrupted can resume by skipping keys already present.

    store = open_store("benchmarks/sweep/sweep.sqlite")   # creates, or migrates an older schema
    store.insert(record); store.has(record.key); store.query(model="minilm", mode="secure", status="ok")
    store.export_csv("sweep.csv")
    keys, cursor, more = store.keys_since(0, limit=100)   # insertion order: what a peer pulls by anti-entropy

The schema is versioned (table `meta`, key `schema_version`): `open_store` creates the current schema, migrates an
older one in place, and refuses a store written by a newer secureinfer (SchemaVersionError). The database runs in
WAL mode with a busy timeout, so several processes (sweep workers, nodes sharing records) may insert at once.
Only the standard library is used here.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

SCHEMA_VERSION = 1
STATUSES = ("ok", "error")
_BUSY_TIMEOUT_S = 60.0
_SQL_BATCH = 500  # keys per IN (...) query, under SQLite's bound-parameter limit


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


def _sql_type(annotation: str) -> str:
    base = annotation.split("|")[0].strip()
    return {"int": "INTEGER", "float": "REAL", "str": "TEXT", "bool": "INTEGER"}[base]


COLUMNS: tuple[tuple[str, str], ...] = tuple((f.name, _sql_type(str(f.type))) for f in dataclasses.fields(RunRecord))
COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _ in COLUMNS)
_BOOL_COLUMNS = {f.name for f in dataclasses.fields(RunRecord) if str(f.type).startswith("bool")}
_INDEXED = ("model", "mode", "strategy_name", "device", "status")

# Schema version 1, frozen: a later version adds a migration below (and the field to RunRecord), never edits this.
_SCHEMA_V1 = [
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


class Store:
    """An open performance store. Thread-safe (one connection behind a lock); several processes may share a file."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._lock = threading.Lock()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: the write lock is taken up front, waiting up to the busy
        timeout for another writer)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # --- writing

    def insert(self, record: RunRecord, *, replace: bool = False) -> None:
        """Add one row. A key already present raises StoreError unless `replace` (then the row is overwritten)."""
        row = record.as_row()
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        sql = f"{verb} INTO runs ({', '.join(COLUMN_NAMES)}) VALUES ({', '.join('?' * len(COLUMN_NAMES))})"
        try:
            with self._tx() as conn:
                conn.execute(sql, [row[c] for c in COLUMN_NAMES])
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"run {record.key} is already in the store (use replace=True)") from exc

    def insert_many(self, records: Iterable[RunRecord], *, replace: bool = False) -> int:
        """Add several rows in one transaction (e.g. records shared by another node); returns how many."""
        rows = [r.as_row() for r in records]
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        sql = f"{verb} INTO runs ({', '.join(COLUMN_NAMES)}) VALUES ({', '.join('?' * len(COLUMN_NAMES))})"
        with self._tx() as conn:
            cur = conn.executemany(sql, [[r[c] for c in COLUMN_NAMES] for r in rows])
        return cur.rowcount

    def delete(self, key: str) -> bool:
        """Remove a row (e.g. to re-run a failed case); True if it was there."""
        with self._tx() as conn:
            return conn.execute("DELETE FROM runs WHERE key = ?", (key,)).rowcount > 0

    def rename_key(self, old: str, new: str) -> None:
        """Give a row a new key (after the key recipe changed); StoreError if `new` is taken or `old` is absent."""
        try:
            with self._tx() as conn:
                if conn.execute("UPDATE runs SET key = ? WHERE key = ?", (new, old)).rowcount != 1:
                    raise StoreError(f"no run with key {old}")
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"key {new} is already in the store") from exc

    def set_meta(self, key: str, value: str) -> None:
        """A free-form note in the `meta` table (e.g. why a strategy was skipped); schema_version is reserved."""
        if key in ("schema_version", "store_id"):
            raise StoreError(f"{key} is managed by the store")
        with self._tx() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # --- reading

    def meta(self) -> dict[str, str]:
        with self._lock:
            return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    def has(self, key: str) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM runs WHERE key = ?", (key,)).fetchone() is not None

    def keys(self) -> set[str]:
        with self._lock:
            return {k for (k,) in self._conn.execute("SELECT key FROM runs")}

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The given keys that are not in the store, in the given order."""
        wanted = list(dict.fromkeys(keys))
        present: set[str] = set()
        with self._lock:
            for i in range(0, len(wanted), _SQL_BATCH):
                part = wanted[i:i + _SQL_BATCH]
                sql = f"SELECT key FROM runs WHERE key IN ({', '.join('?' * len(part))})"
                present.update(k for (k,) in self._conn.execute(sql, part))
        return [k for k in wanted if k not in present]

    def get_many(self, keys: Iterable[str]) -> list[RunRecord]:
        """The rows with these keys (absent keys are skipped), in insertion order."""
        wanted = list(dict.fromkeys(keys))
        rows: list[tuple] = []
        with self._lock:
            for i in range(0, len(wanted), _SQL_BATCH):
                part = wanted[i:i + _SQL_BATCH]
                sql = (f"SELECT {', '.join(COLUMN_NAMES)} FROM runs WHERE key IN ({', '.join('?' * len(part))}) "
                       "ORDER BY rowid")
                rows.extend(self._conn.execute(sql, part).fetchall())
        return [_record(r) for r in rows]

    def keys_since(self, cursor: int, limit: int) -> tuple[list[str], int, bool]:
        """Keys of the rows inserted after position `cursor` (0: from the start), at most `limit`, in insertion
        order; returns them, the cursor to continue from, and whether more rows follow.

        Positions are SQLite rowids: they only grow while rows are added (a replaced row moves to the end), so a
        peer that remembers the cursor sees every later row. They are local to this file: see `store_id`."""
        if cursor < 0 or limit < 1:
            raise StoreError(f"cursor must be >= 0 and limit >= 1; got {cursor}, {limit}")
        with self._lock:
            rows = self._conn.execute("SELECT rowid, key FROM runs WHERE rowid > ? ORDER BY rowid LIMIT ?",
                                      (cursor, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return [k for _, k in rows], (rows[-1][0] if rows else cursor), more

    def store_id(self) -> str:
        """A random id of this store file, made on first use (kept in `meta`): a peer's cursor is valid only while
        the id it was taken under stays the same."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
        if row is not None:
            return row[0]
        with self._tx() as conn:
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', ?)", (secrets.token_hex(8),))
            return conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0]

    def count(self, **where: Any) -> int:
        clause, args = _where(where)
        with self._lock:
            return self._conn.execute(f"SELECT COUNT(*) FROM runs{clause}", args).fetchone()[0]

    def query(self, *, order_by: str = "timestamp", limit: int | None = None, **where: Any) -> list[RunRecord]:
        """Rows whose columns equal the given values (a list/tuple/set value means IN; None means IS NULL),
        ordered by `order_by` (a column name, '-name' for descending)."""
        clause, args = _where(where)
        desc = order_by.startswith("-")
        column = order_by.lstrip("-")
        if column not in COLUMN_NAMES:
            raise StoreError(f"unknown column {column!r} to order by")
        sql = f"SELECT {', '.join(COLUMN_NAMES)} FROM runs{clause} ORDER BY {column}{' DESC' if desc else ''}, key"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [_record(r) for r in rows]

    def __iter__(self) -> Iterator[RunRecord]:
        return iter(self.query())

    def __len__(self) -> int:
        return self.count()

    def export_csv(self, path: str | Path, **where: Any) -> int:
        """Write the rows (optionally filtered as in `query`) as CSV with a header of column names; returns rows
        written. NULLs are empty cells; booleans are 0/1."""
        records = self.query(**where)
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(COLUMN_NAMES)
            for r in records:
                row = r.as_row()
                writer.writerow(["" if row[c] is None else row[c] for c in COLUMN_NAMES])
        return len(records)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _where(where: dict[str, Any]) -> tuple[str, list[Any]]:
    parts, args = [], []
    for column, value in where.items():
        if column not in COLUMN_NAMES:
            raise StoreError(f"unknown column {column!r}; columns are {', '.join(COLUMN_NAMES)}")
        if value is None:
            parts.append(f"{column} IS NULL")
        elif isinstance(value, (list, tuple, set, frozenset)):
            values = list(value)
            if not values:
                parts.append("0")
                continue
            parts.append(f"{column} IN ({', '.join('?' * len(values))})")
            args.extend(int(v) if isinstance(v, bool) else v for v in values)
        else:
            parts.append(f"{column} = ?")
            args.append(int(value) if isinstance(value, bool) else value)
    return (" WHERE " + " AND ".join(parts)) if parts else "", args


def _record(row: tuple) -> RunRecord:
    values = dict(zip(COLUMN_NAMES, row))
    for c in _BOOL_COLUMNS:
        if values[c] is not None:
            values[c] = bool(values[c])
    return RunRecord(**values)


def _version(conn: sqlite3.Connection) -> int | None:
    """The store's schema version; None for an empty database."""
    tables = {t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return None
    if "meta" not in tables:
        raise StoreError(f"not a performance store (no meta table; tables: {sorted(tables)})")
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        raise StoreError("not a performance store (meta has no schema_version)")
    try:
        return int(row[0])
    except ValueError as exc:
        raise StoreError(f"bad schema_version {row[0]!r}") from exc


def open_store(path: str | Path) -> Store:
    """Open the store at `path` (':memory:' for a private in-memory one), creating or migrating its schema.

    Raises SchemaVersionError for a store written by a newer secureinfer, StoreError for a file that is not a store.
    """
    memory = str(path) == ":memory:"
    path = Path(path)
    if not memory:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Autocommit mode: every write goes through an explicit BEGIN IMMEDIATE ... COMMIT (Store._tx).
        conn = sqlite3.connect(":memory:" if memory else str(path), timeout=_BUSY_TIMEOUT_S,
                               check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open performance store {path}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        if not memory:
            conn.execute("PRAGMA journal_mode = WAL")
        # Create or migrate under one write lock, so two processes opening a fresh file do not both create it.
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = _version(conn)
            if version is None:
                for stmt in _SCHEMA_V1:
                    conn.execute(stmt)
                version = 1
                conn.execute("INSERT INTO meta (key, value) VALUES ('created', ?)", (str(time.time()),))
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"store {path} has schema version {version}, newer than this secureinfer understands "
                    f"({SCHEMA_VERSION}); upgrade secureinfer or use another store")
            while version < SCHEMA_VERSION:
                if version not in MIGRATIONS:
                    raise StoreError(f"no migration from schema version {version} (store {path})")
                for stmt in MIGRATIONS[version]:
                    conn.execute(stmt)
                version += 1
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(version),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"cannot open performance store {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return Store(path, conn)
