"""A node's performance records: the SQLite store it keeps, the Records service's work, and anti-entropy with peers.

Every node keeps a performance store (`secureinfer.perfstore`; path from its config). Clients push the outcomes of the
requests they ran (Records.Push); only nodes read the store (Records.Pull and Fetch, servicers.py). A pushed row is
stored without its client's identity (`perfstore.without_identity`: nor the certificate that reported it), must
weigh at most MAX_SHARED_ROW_BYTES, and counts against its reporter's quota (`RecordLimits`: rows per window and in
total, per certificate name), so one certificate cannot fill a node's store. Each gossip round a node asks one random peer for the keys added since it last
asked that peer (Records.Pull, keys only, from a per-peer cursor) and fetches the rows it lacks (Records.Fetch), so a
row pushed to any node reaches every node. Rows from peers are checked like pushed ones; bad ones are dropped and
counted. SQLite calls run in worker threads, off the event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

from secureinfer.net.errors import BadRequest, NodeError, StoreFull
from secureinfer.net.perfwire import (DEFAULT_PAGE, MAX_BATCH, MAX_CURSOR, MAX_PAGE, check_batch, check_keys,
                                      check_record, from_message, to_message)
from secureinfer.perfstore import MAX_SHARED_ROW_BYTES, RunRecord, Store, row_bytes, without_identity
from secureinfer.v1 import node_pb2, node_pb2_grpc

MAX_RECORDS = 1_000_000  # rows a node keeps; pushes beyond are RESOURCE_EXHAUSTED, gossip stops taking rows
SYNC_PAGES = 4  # pages of keys taken from one peer in one gossip round
SYNC_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class RecordLimits:
    """What one reporter (a certificate name) may push to this node: rows per sliding window and in total (since
    the node started), each row at most `max_row_bytes` (perfstore.row_bytes)."""

    rows_per_window: int = 600
    window_s: float = 3600.0
    rows_total: int = 10_000
    max_row_bytes: int = MAX_SHARED_ROW_BYTES

    def __post_init__(self) -> None:
        if min(self.rows_per_window, self.rows_total, self.max_row_bytes) < 1 or not self.window_s > 0:
            raise ValueError(f"record limits must be positive: {self}")


class ReporterQuota:
    """Rows each reporter pushed, in the current window and in total; `charge` refuses a push over either."""

    def __init__(self, limits: RecordLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits, self.clock = limits, clock
        self._recent: dict[str, deque[tuple[float, int]]] = {}
        self._total: dict[str, int] = {}
        self._lock = threading.Lock()

    def charge(self, reporter: str, rows: int) -> None:
        """Count `rows` against `reporter`, or raise StoreFull (RESOURCE_EXHAUSTED) saying which quota is spent."""
        limits, now = self.limits, self.clock()
        with self._lock:
            recent = self._recent.setdefault(reporter, deque())
            while recent and recent[0][0] <= now - limits.window_s:
                recent.popleft()
            in_window = sum(n for _, n in recent)
            total = self._total.get(reporter, 0)
            if total + rows > limits.rows_total:
                raise StoreFull(f"{reporter} has pushed {total} records to this node, its quota is "
                                f"{limits.rows_total}")
            if in_window + rows > limits.rows_per_window:
                raise StoreFull(f"{reporter} has pushed {in_window} records in the last {limits.window_s:g} s, its "
                                f"quota is {limits.rows_per_window} per {limits.window_s:g} s")
            recent.append((now, rows))
            self._total[reporter] = total + rows


def _shareable(record: RunRecord, limits: RecordLimits) -> RunRecord:
    """`record` without its client's identity, or BadRequest if it weighs more than a row may."""
    shared = without_identity(record)
    size = row_bytes(shared)
    if size > limits.max_row_bytes:
        raise BadRequest(f"record {record.key!r} weighs {size} bytes, over the limit of {limits.max_row_bytes}")
    return shared


class RecordBook:
    """A node's performance store behind the Records service: checked writes, paged reads, a cap on its size and
    quotas per reporter."""

    def __init__(self, store: Store, max_records: int = MAX_RECORDS, limits: RecordLimits = RecordLimits()) -> None:
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        self.store = store
        self.max_records = max_records
        self.limits = limits
        self.quota = ReporterQuota(limits)
        self.rejected = 0  # rows from peers dropped as malformed
        self._count = len(store)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._count

    @property
    def full(self) -> bool:
        return self._count >= self.max_records

    def _add(self, records: Sequence[RunRecord]) -> tuple[int, int]:
        """Insert the rows whose keys are new (worker thread); returns (added, already known)."""
        with self._lock:
            new = set(self.store.missing(r.key for r in records))
            fresh = [r for r in records if r.key in new]
            if self._count + len(fresh) > self.max_records:
                raise StoreFull(f"this node's performance store holds its maximum of {self.max_records} records")
            added = self.store.insert_many(fresh) if fresh else 0
            self._count += added
        return added, len(records) - added

    async def push(self, messages: Sequence[node_pb2.PerfRecord], reporter: str) -> node_pb2.PushRecordsReply:
        """Take a reporter's rows: all are checked first (BadRequest for the first bad or oversized one) and
        stripped of client identities, the batch is charged to `reporter`'s quota, then the new ones are stored."""
        records = [_shareable(r, self.limits) for r in check_batch(messages)]
        self.quota.charge(reporter, len(records))
        added, known = await asyncio.to_thread(self._add, records)
        return node_pb2.PushRecordsReply(added=added, known=known)

    async def pull(self, request: node_pb2.PullRecordsRequest) -> node_pb2.PullRecordsReply:
        """Rows (or keys) after the request's cursor, in insertion order."""
        limit = request.limit or DEFAULT_PAGE
        if limit > MAX_PAGE:
            raise BadRequest(f"limit {limit} is above the maximum of {MAX_PAGE} records per call")
        if request.cursor > MAX_CURSOR:  # uint64 on the wire; the store's row ids are signed 64-bit
            raise BadRequest(f"cursor {request.cursor} is above the largest row id {MAX_CURSOR}")

        def read() -> node_pb2.PullRecordsReply:
            keys, cursor, more = self.store.keys_since(request.cursor, limit)
            reply = node_pb2.PullRecordsReply(next_cursor=cursor, more=more, store_id=self.store.store_id())
            if request.keys_only:
                reply.keys.extend(keys)
            else:
                reply.records.extend(to_message(r) for r in self.store.get_many(keys))
            return reply

        return await asyncio.to_thread(read)

    async def fetch(self, request: node_pb2.FetchRecordsRequest) -> node_pb2.FetchRecordsReply:
        """The rows with the requested keys that this node has."""
        keys = check_keys(request.keys, MAX_BATCH)
        rows = await asyncio.to_thread(self.store.get_many, keys)
        return node_pb2.FetchRecordsReply(records=[to_message(r) for r in rows])

    async def take_from_peer(self, messages: Sequence[node_pb2.PerfRecord], asked: set[str]) -> int:
        """Store a peer's rows that were asked for and pass the checks (the rest are dropped and counted)."""
        good: list[RunRecord] = []
        for message in messages:
            try:
                record = _shareable(check_record(from_message(message)), self.limits)
            except NodeError:
                self.rejected += 1
                continue
            if record.key in asked:
                good.append(record)
                asked.discard(record.key)
            else:
                self.rejected += 1
        if not good:
            return 0
        added, _ = await asyncio.to_thread(self._add, good)
        return added


class RecordSync:
    """Anti-entropy: pull from one peer the keys added since the last pull from it, fetch the rows missing here."""

    def __init__(self, book: RecordBook, dial: Callable[[str, str], grpc.aio.Channel],
                 timeout_s: float = SYNC_TIMEOUT_S) -> None:
        self.book = book
        self.dial = dial
        self.timeout_s = timeout_s
        self._cursors: dict[str, tuple[str, int]] = {}  # node_id -> (its store_id, cursor in its store)

    async def pull_from(self, address: str, node_id: str, pages: int = SYNC_PAGES) -> int:
        """Up to `pages` pages of keys from `node_id`; returns how many rows were new here. Raises grpc.aio errors
        and BadRequest (a malformed reply) to the caller, which logs them."""
        stub = node_pb2_grpc.RecordsStub(self.dial(address, node_id))
        store_id, cursor = self._cursors.get(node_id, ("", 0))
        added = 0
        for _ in range(pages):
            if self.book.full:
                break
            reply = await stub.Pull(node_pb2.PullRecordsRequest(cursor=cursor, limit=MAX_BATCH, keys_only=True),
                                    timeout=self.timeout_s)
            if store_id and reply.store_id != store_id and cursor:  # its store was replaced: start again
                store_id, cursor = reply.store_id, 0
                self._cursors[node_id] = (store_id, cursor)
                continue
            store_id = reply.store_id
            keys = check_keys(reply.keys, MAX_BATCH)
            missing = await asyncio.to_thread(self.book.store.missing, keys)
            if missing:
                fetched = await stub.Fetch(node_pb2.FetchRecordsRequest(keys=missing), timeout=self.timeout_s)
                added += await self.book.take_from_peer(fetched.records, set(missing))
            cursor = reply.next_cursor
            self._cursors[node_id] = (store_id, cursor)
            if not reply.more:
                break
        return added
