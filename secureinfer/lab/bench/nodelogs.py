"""Reading what node processes logged (JSON lines, one object per event) after a point in time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any


def unix_time(iso: str) -> float:
    """Unix seconds of an ISO-8601 timestamp as nodes log it (0.0 for one that does not parse)."""
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def entries_after(log: Path, after: float) -> Iterator[dict[str, Any]]:
    """The log's entries stamped at or after `after` (unix seconds); lines that are not JSON are skipped."""
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if unix_time(entry.get("ts", "")) >= after:
            yield entry
