"""The SDK's side of the Records service and of link measurement: push performance records to a node without
waiting, pull a node's records page by page, and time a health call to each node (its round trip from here).

    future = push_records(connector, address, node_id, [record])   # never raises here; the future holds the reply
    history = pull_records(connector)                             # every row a seed has (checked as nodes check)

Rows are pushed without the client's identity and within the size a node takes (`shareable`). Only nodes may read
the records: with any other certificate `pull_records` raises RecordsDenied.
    rtts = measure_rtts(connector, [(address, node_id), ...])     # seconds, None for a node that did not answer
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import time
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from secureinfer.net.certs import NODE_SAN
from secureinfer.net.errors import NodeError
from secureinfer.net.perfwire import MAX_BATCH, MAX_PAGE, check_record, from_message, to_message
from secureinfer.perfstore import MAX_SHARED_ROW_BYTES, RunRecord, row_bytes, without_identity
from secureinfer.v1 import node_pb2, node_pb2_grpc

from .connection import Connector
from .errors import NetworkError

PUSH_TIMEOUT_S = 2.0
PULL_TIMEOUT_S = 10.0
RTT_SAMPLES = 3
RTT_TIMEOUT_S = 2.0


class RecordsDenied(NetworkError):
    """The seeds refuse this certificate a read of the performance records: only nodes may read them."""


def shareable(record: RunRecord) -> RunRecord:
    """`record` as the SDK pushes it: without the client's identity, its per-step timings dropped if it would
    otherwise weigh more than a node takes."""
    shared = without_identity(record)
    if row_bytes(shared) > MAX_SHARED_ROW_BYTES:
        shared = dataclasses.replace(shared, steps_json=None)
    return shared


def push_records(connector: Connector, address: str, node_id: str, records: Sequence[RunRecord]
                 ) -> concurrent.futures.Future:
    """Send rows to the node at `address` in the background (deadline PUSH_TIMEOUT_S); the returned future holds
    the PushRecordsReply, or the error: nothing is raised here, and nobody has to wait."""
    if len(records) > MAX_BATCH:
        raise ValueError(f"at most {MAX_BATCH} records per push, got {len(records)}")
    request = node_pb2.PushRecordsRequest(records=[to_message(shareable(r)) for r in records])

    async def push() -> node_pb2.PushRecordsReply:
        stub = node_pb2_grpc.RecordsStub(connector.channel(address, node_id))
        return await stub.Push(request, timeout=PUSH_TIMEOUT_S)

    return asyncio.run_coroutine_threadsafe(push(), connector.loop_thread.loop)


def pull_records(connector: Connector, *, max_records: int = 100_000) -> list[RunRecord]:
    """Every performance record of the first seed that answers (at most `max_records`), oldest first; rows that
    fail the nodes' checks are skipped. Raises RecordsDenied when every seed refuses this certificate a read (only
    nodes may read), NetworkError when no seed answers."""
    errors, denied = [], 0
    for seed in connector.seeds:
        try:
            return connector.loop_thread.run(_pull_all(connector, seed, max_records),
                                             timeout=PULL_TIMEOUT_S * (1 + max_records // MAX_PAGE))
        except grpc.aio.AioRpcError as exc:
            denied += exc.code() == grpc.StatusCode.PERMISSION_DENIED
            errors.append(f"{seed}: {exc.code().name} {exc.details()}")
    if connector.seeds and denied == len(connector.seeds):
        raise RecordsDenied("only nodes may read the network's performance records: " + "; ".join(errors))
    raise NetworkError("no seed node answered a records pull: " + "; ".join(errors))


async def _pull_all(connector: Connector, seed: str, max_records: int) -> list[RunRecord]:
    stub = node_pb2_grpc.RecordsStub(connector.channel(seed, NODE_SAN))
    records: list[RunRecord] = []
    cursor = 0
    while len(records) < max_records:
        reply = await stub.Pull(node_pb2.PullRecordsRequest(cursor=cursor, limit=MAX_PAGE), timeout=PULL_TIMEOUT_S)
        for message in reply.records:
            try:
                records.append(check_record(from_message(message)))
            except NodeError:
                continue
        if not reply.more or reply.next_cursor <= cursor:
            break
        cursor = reply.next_cursor
    return records[:max_records]


def measure_rtts(connector: Connector, targets: Sequence[tuple[str, str]], samples: int = RTT_SAMPLES
                 ) -> dict[str, float | None]:
    """The round trip of a health call to each (address, node_id), the least of `samples` after a first call that
    sets the channel up; None for a node that did not answer SERVING within RTT_TIMEOUT_S."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")

    async def one(address: str, node_id: str) -> float | None:
        stub = health_pb2_grpc.HealthStub(connector.channel(address, node_id))
        times = []
        try:
            for i in range(samples + 1):
                start = time.perf_counter()
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=RTT_TIMEOUT_S)
                if reply.status != health_pb2.HealthCheckResponse.SERVING:
                    return None
                if i:  # the first call may include the TLS handshake
                    times.append(time.perf_counter() - start)
        except grpc.aio.AioRpcError:
            return None
        return min(times)

    async def every() -> dict[str, float | None]:
        unique = list(dict.fromkeys(targets))
        values = await asyncio.gather(*(one(a, n) for a, n in unique))
        return {address: value for (address, _), value in zip(unique, values)}

    return connector.loop_thread.run(every(), timeout=RTT_TIMEOUT_S * (samples + 2))

