"""The performance store, the selector's training data: see nodes/perfstore.py, where it lives (nodes keep and gossip
its rows, and nodes/ sits below selector/ in the layers); every public name is re-exported here.

    from secureinfer.selector.store import open_store, RunRecord, run_key
"""

from __future__ import annotations

from ..nodes.perfstore import (COLUMN_NAMES, COLUMNS, MIGRATIONS, SCHEMA_VERSION, STATUSES, RunRecord,
                               SchemaVersionError, Store, StoreError, open_store, run_key)

__all__ = ["COLUMN_NAMES", "COLUMNS", "MIGRATIONS", "SCHEMA_VERSION", "STATUSES", "RunRecord", "SchemaVersionError",
           "Store", "StoreError", "open_store", "run_key"]
