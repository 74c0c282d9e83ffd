"""Performance records keep no client identity, only nodes read them, and one certificate cannot fill a node's store.

Each attack here worked before: any certificate of the network pulled every row (with the name of the client that
reported it), a row's env_json carried whatever names the client put there, and a reporter could push rows until the
store held its maximum (a million rows of up to ~90 kB).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from secureinfer.client.records import shareable
from secureinfer.net.errors import BadRequest, StoreFull
from secureinfer.net.perfwire import from_message, to_message
from secureinfer.nodes.records import RecordBook, RecordLimits, ReporterQuota
from secureinfer.perfstore import MAX_SHARED_ROW_BYTES, open_store, row_bytes, without_identity
from secureinfer.v1 import node_pb2, node_pb2_grpc

from .netutil import Cluster, LoopThread, Pki, unary_outcome, wait_until
from .test_records import row

Code = grpc.StatusCode
NODES = ("n2", "n3")
IDENTITY = {"source": "t", "client": "alice", "reported_by": "mallory", "user": "alice@example.org"}


@pytest.fixture(scope="module")
def net(pki: Pki, loop: LoopThread) -> Iterator[Cluster]:
    cluster = Cluster(pki, loop)
    try:
        seeds: tuple[str, ...] = ()
        for name in NODES:
            cluster.start(name, seeds=seeds, gossip_interval_s=0.3, record_ttl_s=3.0)
            seeds = (cluster.address(NODES[0]),)
        yield cluster
    finally:
        cluster.close()


def rpc(net: Cluster, who: str, node: str, method: str, request: Any) -> Any:
    async def go() -> Any:
        stub = node_pb2_grpc.RecordsStub(net.channel(who, node))
        return await unary_outcome(getattr(stub, method)(request, timeout=10))

    return net.run(go())


def push(net: Cluster, who: str, node: str, records: list[Any]) -> Any:
    return rpc(net, who, node, "Push", node_pb2.PushRecordsRequest(records=[to_message(r) for r in records]))


def test_a_client_cannot_read_the_records(net: Cluster) -> None:
    assert push(net, "alice", "n2", [row("read", 0)]).code == Code.OK  # a client may write its own
    for who in ("alice", "olivia"):
        pulled = rpc(net, who, "n2", "Pull", node_pb2.PullRecordsRequest())
        fetched = rpc(net, who, "n2", "Fetch", node_pb2.FetchRecordsRequest(keys=[row("read", 0).key]))
        assert pulled.code == fetched.code == Code.PERMISSION_DENIED, (pulled, fetched)
        assert not pulled.received and not fetched.received
    node = rpc(net, "n3", "n2", "Fetch", node_pb2.FetchRecordsRequest(keys=[row("read", 0).key]))
    assert node.code == Code.OK and [m.key for m in node.received[0].records] == [row("read", 0).key]


def test_records_carry_no_client_identity(net: Cluster) -> None:
    """Whatever names a client puts in a row, neither the node it pushed to nor the one gossip brings it to keeps
    them, nor the name of the certificate that reported it."""
    pushed = row("identity", 0, env_json=json.dumps(IDENTITY))
    assert push(net, "alice", "n2", [pushed]).code == Code.OK
    wait_until(lambda: pushed.key in net.daemons["n3"].records.store.keys(), 10.0, "the row reaching n3")
    for node in NODES:
        (kept,) = net.daemons[node].records.store.get_many([pushed.key])
        assert json.loads(kept.env_json) == {"source": "t"}, kept.env_json
        assert "alice" not in json.dumps(kept.as_row()) and "mallory" not in json.dumps(kept.as_row())
        assert dataclasses.replace(kept, env_json=pushed.env_json) == pushed  # the rest is kept as it was


def test_a_reporter_over_its_quota_is_refused(net: Cluster) -> None:
    book = net.daemons["n3"].records
    book.limits = RecordLimits(rows_per_window=4, window_s=3600.0, rows_total=10)
    book.quota = ReporterQuota(book.limits)
    try:
        assert push(net, "bob", "n3", [row("quota", i) for i in range(3)]).code == Code.OK
        over = push(net, "bob", "n3", [row("quota", i) for i in range(3, 5)])
        assert over.code == Code.RESOURCE_EXHAUSTED and "bob" in over.details and "quota" in over.details
        assert row("quota", 3).key not in book.store.keys()
        assert push(net, "alice", "n3", [row("quota-alice", 0)]).code == Code.OK  # another reporter's own quota
        huge = row("quota-huge", 0, steps_json="[" + ",".join(["1"] * 20_000) + "]")  # 40 kB: once within a row
        refused = push(net, "alice", "n3", [huge])
        assert refused.code == Code.INVALID_ARGUMENT and "weighs" in refused.details
    finally:
        book.limits = RecordLimits()
        book.quota = ReporterQuota(book.limits)


def test_quotas_per_window_and_in_total(tmp_path: Path) -> None:
    now = [0.0]
    quota = ReporterQuota(RecordLimits(rows_per_window=3, window_s=60.0, rows_total=5), clock=lambda: now[0])
    quota.charge("bob", 3)
    with pytest.raises(StoreFull, match="in the last 60 s"):
        quota.charge("bob", 1)
    quota.charge("carol", 3)  # per reporter
    now[0] = 61.0  # the window has passed: bob may push again, up to his total
    quota.charge("bob", 2)
    now[0] = 1000.0
    with pytest.raises(StoreFull, match="its quota is 5"):
        quota.charge("bob", 1)
    book = RecordBook(open_store(tmp_path / "q.sqlite"), limits=RecordLimits(rows_per_window=2))
    asyncio.run(book.push([to_message(row("book", i)) for i in range(2)], "bob"))
    with pytest.raises(StoreFull):
        asyncio.run(book.push([to_message(row("book", 2))], "bob"))
    with pytest.raises(BadRequest, match="weighs"):
        asyncio.run(book.push([to_message(row("book", 3, steps_json="[" + "1," * 9000 + "1]"))], "carol"))


def test_the_sdk_pushes_rows_without_identity_and_within_a_rows_size() -> None:
    named = row("sdk", 0, env_json=json.dumps({**IDENTITY, "committee_id": "c", "node_ids": ["n0"]}))
    assert json.loads(shareable(named).env_json) == {"source": "t", "committee_id": "c", "node_ids": ["n0"]}
    long = row("sdk", 1, steps_json=json.dumps([{"seconds": 0.123456, "tokens": 1}] * 2000))
    assert row_bytes(long) > MAX_SHARED_ROW_BYTES
    trimmed = shareable(long)
    assert trimmed.steps_json is None and row_bytes(trimmed) <= MAX_SHARED_ROW_BYTES
    assert from_message(to_message(trimmed)) == trimmed
    assert without_identity(row("sdk", 2, env_json=None)).env_json is None
