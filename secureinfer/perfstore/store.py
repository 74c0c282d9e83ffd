"""The SQLite database of performance records: insert, query, export, and the key pages anti-entropy pulls."""

from __future__ import annotations

import csv
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from .record import (BOOL_COLUMNS, COLUMN_NAMES, MIGRATIONS, SCHEMA_V1, SCHEMA_VERSION, RunRecord,
                     SchemaVersionError, StoreError)

_BUSY_TIMEOUT_S = 60.0
_SQL_BATCH = 500  # keys per IN (...) query, under SQLite's bound-parameter limit


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
    for c in BOOL_COLUMNS:
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
                for stmt in SCHEMA_V1:
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
