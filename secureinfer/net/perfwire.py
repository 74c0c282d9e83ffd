"""Performance records on the wire: `RunRecord` <-> `PerfRecord` (field for field, no pickle), and the checks a node
makes of every row it is given (bounded sizes, finite non-negative measurements, a strategy that parses and fits).

A row that fails a check raises BadRequest (INVALID_ARGUMENT, through nodes/errors.py) naming the row and field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Sequence
from typing import Any

from secureinfer import strategy as strategies
from secureinfer.perfstore import STATUSES, RunRecord
from secureinfer.v1 import node_pb2

from .errors import BadRequest

MAX_BATCH = 256  # rows per Push or Fetch
MAX_PAGE = 1000  # rows (or keys) per Pull
MAX_CURSOR = (1 << 63) - 1  # the largest Pull cursor: SQLite row ids are signed 64-bit (the wire field is uint64)
DEFAULT_PAGE = 256
MAX_FUTURE_S = 60.0  # how far ahead of this node's clock a row's timestamp may be
KEY = re.compile(r"[A-Za-z0-9._:-]{1,128}")
TASKS = ("embed", "generate", "logits")
MODES = ("secure", "plaintext")
_MAX_CHARS = {"model": 128, "arch": 32, "device": 128, "host": 256, "strategy_name": 128, "strategy_json": 4096,
              "error": 4096, "steps_json": 64 * 1024, "env_json": 16 * 1024}
_MIN_ONE = ("seq_len", "batch")
_COSINE_SLACK = 1e-6

PerfRecord = node_pb2.PerfRecord
_FIELDS = tuple(dataclasses.fields(RunRecord))
_PROTO_FIELDS = PerfRecord.DESCRIPTOR.fields_by_name


def nullable(field: dataclasses.Field) -> bool:
    """Whether a RunRecord field may be None (its annotation says `| None`)."""
    return "None" in str(field.type)


def to_message(record: RunRecord) -> node_pb2.PerfRecord:
    """The wire form of a row (None fields left unset)."""
    message = PerfRecord()
    for f in _FIELDS:
        value = getattr(record, f.name)
        if value is not None:
            setattr(message, f.name, value)
    return message


def from_message(message: node_pb2.PerfRecord) -> RunRecord:
    """The row a wire record carries, unchecked (see `check_record`); unset optional fields are None."""
    values: dict[str, Any] = {}
    for f in _FIELDS:
        present = not _PROTO_FIELDS[f.name].has_presence or message.HasField(f.name)
        values[f.name] = getattr(message, f.name) if present else None
    try:
        return RunRecord(**values)
    except Exception as exc:  # noqa: BLE001 - RunRecord refuses a bad mode or status with StoreError
        raise BadRequest(f"record {message.key[:40]!r}: {exc}") from None


def _text(record: RunRecord, name: str, value: Any, limit: int) -> None:
    if value is None:
        return
    if len(value) > limit:
        raise BadRequest(f"record {record.key!r}: {name} is {len(value)} characters, the limit is {limit}")
    if any(ord(ch) < 0x20 and ch not in "\t\n\r" for ch in value):
        raise BadRequest(f"record {record.key!r}: {name} holds control characters")


def _number(record: RunRecord, name: str, value: Any, minimum: float) -> None:
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRequest(f"record {record.key!r}: {name} is {value}, not a finite number")
    if value < minimum:
        raise BadRequest(f"record {record.key!r}: {name} is {value}, must be >= {minimum:g}")


def _json(record: RunRecord, name: str, kind: type) -> None:
    text = getattr(record, name)
    if text is None:
        return
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"record {record.key!r}: {name} is not JSON ({exc.msg})") from None
    if not isinstance(parsed, kind):
        raise BadRequest(f"record {record.key!r}: {name} must be a JSON {'list' if kind is list else 'object'}")


def _strategy(record: RunRecord) -> None:
    try:
        chosen = strategies.from_json(record.strategy_json)
    except strategies.StrategyError as exc:
        raise BadRequest(f"record {record.key!r}: strategy_json: {exc}") from None
    if chosen.mode != record.mode or chosen.name != record.strategy_name:
        raise BadRequest(f"record {record.key!r}: strategy_json is {chosen.mode} {chosen.name!r}, but the row says "
                         f"{record.mode} {record.strategy_name!r}")


def check_record(record: RunRecord, now: float | None = None) -> RunRecord:
    """Return `record` if it is a well-formed row; else raise BadRequest saying which field is wrong and why."""
    now = time.time() if now is None else now
    if KEY.fullmatch(record.key) is None:
        raise BadRequest(f"record key {record.key[:40]!r} must be 1-128 characters of [A-Za-z0-9._:-]")
    if not record.model or not record.arch:
        raise BadRequest(f"record {record.key!r}: model and arch must not be empty")
    if record.task not in TASKS or record.mode not in MODES or record.status not in STATUSES:
        raise BadRequest(f"record {record.key!r}: task, mode and status must be one of {TASKS}, {MODES}, {STATUSES}; "
                         f"got {record.task!r}, {record.mode!r}, {record.status!r}")
    for f in _FIELDS:
        value = getattr(record, f.name)
        if isinstance(value, str):
            _text(record, f.name, value, _MAX_CHARS.get(f.name, 64))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            _number(record, f.name, value, 1 if f.name in _MIN_ONE else (-1 - _COSINE_SLACK if f.name == "min_cosine"
                                                                          else 0))
    if record.min_cosine is not None and record.min_cosine > 1 + _COSINE_SLACK:
        raise BadRequest(f"record {record.key!r}: min_cosine is {record.min_cosine}, above 1")
    if not 0 < record.timestamp <= now + MAX_FUTURE_S:
        raise BadRequest(f"record {record.key!r}: timestamp {record.timestamp} is not a time up to now")
    if record.bandwidth_bytes_per_s is not None and record.bandwidth_bytes_per_s <= 0:
        raise BadRequest(f"record {record.key!r}: bandwidth_bytes_per_s must be > 0 (or unset: unlimited)")
    if record.status == "ok" and record.total_s is None:
        raise BadRequest(f"record {record.key!r}: a run with status ok needs total_s")
    if record.status == "error" and not record.error:
        raise BadRequest(f"record {record.key!r}: a run with status error needs its error message")
    _json(record, "steps_json", list)
    _json(record, "env_json", dict)
    _strategy(record)
    return record


def check_batch(messages: Sequence[node_pb2.PerfRecord], now: float | None = None) -> list[RunRecord]:
    """The rows of a Push (all well formed, at most MAX_BATCH, keys distinct), or BadRequest for the first bad one."""
    if len(messages) > MAX_BATCH:
        raise BadRequest(f"{len(messages)} records in one call; the limit is {MAX_BATCH}")
    records = [check_record(from_message(m), now) for m in messages]
    keys = [r.key for r in records]
    if len(set(keys)) != len(keys):
        raise BadRequest("the same record key appears twice in one call")
    return records


def check_keys(keys: Sequence[str], limit: int) -> list[str]:
    """Keys of a Fetch (or a peer's Pull reply): at most `limit`, each well formed; BadRequest otherwise."""
    if len(keys) > limit:
        raise BadRequest(f"{len(keys)} keys in one call; the limit is {limit}")
    for key in keys:
        if KEY.fullmatch(key) is None:
            raise BadRequest(f"record key {key[:40]!r} must be 1-128 characters of [A-Za-z0-9._:-]")
    return list(keys)


def stamp_reporter(record: RunRecord, reporter: str) -> RunRecord:
    """A copy of a checked `record` whose env_json names the certificate that reported it (`reported_by`, set by
    the node that accepted the push, so a reporter cannot claim another's name); check the copy again."""
    env = json.loads(record.env_json) if record.env_json else {}
    env["reported_by"] = reporter
    return dataclasses.replace(record, env_json=json.dumps(env, sort_keys=True))
