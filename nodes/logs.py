"""Structured logs: one JSON object per line (ts, level, node, msg, extra fields, error) on a per-node logger."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

from .config import LOG_LEVELS, ConfigError

LOGGER_PREFIX = "secureinfer.node."
BASE_KEYS: tuple[str, ...] = ("ts", "level", "node", "msg", "error")
# Attributes every LogRecord has: anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonLinesFormatter(logging.Formatter):
    """Formats each record as one JSON line; `extra=` fields are added beside the base keys."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single-line JSON object."""
        entry: dict[str, Any] = {
            key: value for key, value in record.__dict__.items() if key not in _RECORD_ATTRS and key not in BASE_KEYS
        }
        entry["ts"] = datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds")
        entry["level"] = record.levelname
        entry["node"] = self.node_id
        entry["msg"] = record.getMessage()
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["error"] = record.exc_text
        ordered = {key: entry.pop(key) for key in BASE_KEYS if key in entry}
        ordered.update(entry)
        return json.dumps(ordered, default=str, ensure_ascii=False)


def _level(level: str | int) -> int:
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    if isinstance(level, str) and level.upper() in LOG_LEVELS:
        return logging.getLevelName(level.upper())
    raise ConfigError(f"log level: expected one of {list(LOG_LEVELS)} or an int, got {level!r}")


def configure(node_id: str, level: str, stream: TextIO | None = None) -> logging.Logger:
    """The logger `secureinfer.node.<node_id>`, writing JSON lines to `stream` (default: sys.stderr at call time).

    It does not propagate to the root logger; calling again replaces its handler (never adds a second one).
    """
    if not isinstance(node_id, str) or not node_id:
        raise ConfigError(f"node_id: expected a non-empty string, got {node_id!r}")
    logger = logging.getLogger(LOGGER_PREFIX + node_id)
    for old in [h for h in logger.handlers if getattr(h, "secureinfer_json", False)]:
        logger.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.secureinfer_json = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonLinesFormatter(node_id))
    logger.addHandler(handler)
    logger.setLevel(_level(level))
    logger.propagate = False
    return logger


def log_event(logger: logging.Logger, level: str | int, msg: str, /, *, exc_info: Any = None, **fields: Any) -> None:
    """Log `msg` at `level` with `fields` as top-level JSON keys (reserved names, e.g. the base keys, are refused)."""
    clash = sorted(set(fields) & (_RECORD_ATTRS | set(BASE_KEYS)))
    if clash:
        raise ValueError(f"log field names {clash} are reserved")
    logger.log(_level(level), msg, exc_info=exc_info, extra=fields, stacklevel=2)
