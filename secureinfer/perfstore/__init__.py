"""The performance store: one SQLite row per measured run, the selector's training data.

Nodes keep these rows and spread them by gossip; the selector trains on them; benchmarks write them. The row format
and schema are in `record.py`, the database in `store.py`.

A row holds what the selector may condition on and what it predicts:
  request   model name, architecture and size (n_params, n_layers, hidden, vocab), seq_len, batch, gen_tokens, task
  node      device, cpu_count, matmul_gflops, memory_bytes, host (what a node measures of itself at start)
  link      latency_s (one way), bandwidth_bytes_per_s (NULL: unlimited)
  strategy  mode, name and JSON (`secureinfer.strategy.from_json(strategy_json)` is the executable strategy)
  outcome   prefill_s, per_token_s, total_s, load_s, rounds, bytes per party (max and sum over the three parties),
            peak memory, accuracy against the float64 plaintext reference, status ('ok' / 'error' + message)
Rows shared across the network carry no client identity: `without_identity` keeps only the env_json keys that say
where and how a request ran (SHARED_ENV_KEYS), and a node takes rows of at most MAX_SHARED_ROW_BYTES (`row_bytes`).
Each row has a `key`: a deterministic hash of the case, the strategy and the environment (`run_key`), so a sweep that
is interrupted can resume by skipping keys already present.

    store = open_store("sweep.sqlite")                    # creates, or migrates an older schema
    store.insert(record); store.has(record.key); store.query(model="minilm", mode="secure", status="ok")
    store.export_csv("sweep.csv")
    keys, cursor, more = store.keys_since(0, limit=100)   # insertion order: what a peer pulls by anti-entropy

The schema is versioned (table `meta`, key `schema_version`): `open_store` creates the current schema, migrates an
older one in place, and refuses a store written by a newer secureinfer (SchemaVersionError). The database runs in
WAL mode with a busy timeout, so several processes (sweep workers, nodes sharing records) may insert at once.
Only the standard library is used here.
"""

from __future__ import annotations

from .record import (COLUMN_NAMES, COLUMNS, MAX_SHARED_ROW_BYTES, MIGRATIONS, SCHEMA_VERSION, SHARED_ENV_KEYS,
                     STATUSES, RunRecord, SchemaVersionError, StoreError, row_bytes, run_key, without_identity)
from .store import Store, open_store

__all__ = ["COLUMN_NAMES", "COLUMNS", "MAX_SHARED_ROW_BYTES", "MIGRATIONS", "SCHEMA_VERSION", "SHARED_ENV_KEYS",
           "STATUSES", "RunRecord", "SchemaVersionError", "Store", "StoreError", "open_store", "row_bytes", "run_key",
           "without_identity"]
