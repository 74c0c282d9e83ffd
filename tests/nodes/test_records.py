"""Performance records on the network: the wire form mirrors RunRecord, Push/Pull/Fetch check what they are given
(oversized, malformed, unauthenticated: clear errors, nothing stored, the daemon stays healthy), gossip spreads a row
pushed to one node to every node, and a node's store lives on disk under its data directory. Rows carry no client
identity, only nodes read them, and each reporter has a quota (the attacks of test_record_privacy.py).

Three daemons (r0, r1, r2 are the PKI's n2, n3, n4) gossip every 0.3 s; each test pushes rows with its own keys.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from secureinfer.lab.stores import CPU_STORE
from secureinfer.net.errors import BadRequest
from secureinfer.net.perfwire import MAX_BATCH, check_batch, check_record, from_message, nullable, to_message
from secureinfer.nodes.records import RecordBook
from secureinfer.perfstore import RunRecord, open_store, run_key
from secureinfer.selector.records import read_records
from secureinfer.strategy import PlaintextStrategy, SecureStrategy, to_json
from secureinfer.v1 import node_pb2, node_pb2_grpc

from .netutil import Cluster, LoopThread, Pki, unary_outcome, wait_until

NODES = ("n2", "n3", "n4")
INTERVAL_S = 0.3
SPREAD_S = 20 * INTERVAL_S + 3.0  # generous: the box is shared; a spread usually takes a few rounds
Code = grpc.StatusCode
SECURE = SecureStrategy(profile="lean")


def row(tag: str, i: int = 0, **changes: Any) -> RunRecord:
    """A well-formed served-request row with a key unique to (tag, i)."""
    base = RunRecord(
        key=run_key(test=tag, i=i), timestamp=time.time() - 10, model="tiny", arch="gpt2", n_params=1234,
        n_layers=1, hidden=8, vocab=13, seq_len=3, batch=2, gen_tokens=4, task="generate", device="cpu",
        cpu_count=2, matmul_gflops=40.0, memory_bytes=2**33, host="n2", latency_s=2e-4, bandwidth_bytes_per_s=None,
        mode="secure", strategy_name=SECURE.name, strategy_json=to_json(SECURE), status="ok", prefill_s=0.5,
        per_token_s=0.1, total_s=0.9, rounds=400, bytes_per_party_max=10_000, bytes_per_party_sum=29_000,
        min_cosine=None, tokens_equal=None, steps_json='[{"seconds": 0.5, "tokens": 6}]', env_json='{"source": "t"}')
    return dataclasses.replace(base, **changes)


# ------------------------------------------------------------------------------------------------ wire and checks


def test_wire_form_mirrors_every_run_record_field() -> None:
    proto = node_pb2.PerfRecord.DESCRIPTOR.fields_by_name
    fields = {f.name: f for f in dataclasses.fields(RunRecord)}
    assert set(proto) == set(fields)
    for name, f in fields.items():
        assert proto[name].has_presence == nullable(f), name  # `optional` exactly where the column may be NULL
    full = row("wire", tokens_equal=True, min_cosine=0.5, error=None, load_s=0.25, peak_device_mb=1.5)
    sparse = row("wire", 1, rounds=None, bytes_per_party_max=None, steps_json=None, env_json=None, prefill_s=None)
    for record in (full, sparse):
        message = node_pb2.PerfRecord.FromString(to_message(record).SerializeToString())
        assert from_message(message) == record


@pytest.mark.parametrize("change, words", [
    (dict(key="no spaces allowed"), "key"),
    (dict(key="x" * 129), "key"),
    (dict(model="m" * 129), "model is 129 characters"),
    (dict(total_s=math.nan), "total_s is nan"),
    (dict(per_token_s=-1.0), "per_token_s is -1.0"),
    (dict(seq_len=0), "seq_len is 0"),
    (dict(timestamp=time.time() + 3600), "timestamp"),
    (dict(task="dance"), "task, mode and status"),
    (dict(status="ok", total_s=None), "needs total_s"),
    (dict(status="error", error=None), "error message"),
    (dict(strategy_json="{oops"), "strategy_json"),
    (dict(strategy_name="secure-accurate-f18-cpu"), "but the row says"),
    (dict(mode="plaintext"), "but the row says"),
    (dict(env_json="[1, 2]"), "env_json must be a JSON object"),
    (dict(steps_json="{}"), "steps_json must be a JSON list"),
    (dict(env_json='{"x": "' + "y" * 20_000 + '"}'), "env_json is"),
    (dict(host="a\x00b"), "control characters"),
    (dict(min_cosine=1.5), "min_cosine"),
])
def test_malformed_rows_are_refused_with_the_field_named(change: dict, words: str) -> None:
    with pytest.raises(BadRequest, match=words.replace("(", r"\(").replace("[", r"\[")):
        check_record(row("bad", **change))


def test_a_plaintext_row_and_the_sweep_rows_pass() -> None:
    committed = read_records(CPU_STORE)  # the measured store secureinfer ships, opened read-only
    assert len(committed) > 100
    for record in committed:  # the committed dataset can be pushed to and gossiped by nodes as it is
        check_record(record)
    plain = PlaintextStrategy(precision="fp32", static_cache=True)
    check_record(row("ok", mode="plaintext", strategy_name=plain.name, strategy_json=to_json(plain), rounds=None))
    with pytest.raises(BadRequest, match="limit is 256"):
        check_batch([to_message(row("many", i)) for i in range(MAX_BATCH + 1)])
    with pytest.raises(BadRequest, match="twice"):
        check_batch([to_message(row("dup")), to_message(row("dup"))])


def test_store_cursor_keys_and_id(tmp_path) -> None:
    """keys_since pages in insertion order (a replaced row moves to the end); missing/get_many take many keys."""
    store = open_store(tmp_path / "c.sqlite")
    rows = [row("cursor", i) for i in range(5)]
    store.insert_many(rows)
    keys, cursor, more = store.keys_since(0, 2)
    assert keys == [r.key for r in rows[:2]] and more
    keys, cursor, more = store.keys_since(cursor, 10)
    assert keys == [r.key for r in rows[2:]] and not more
    assert store.keys_since(cursor, 10) == ([], cursor, False)
    store.insert(dataclasses.replace(rows[0], total_s=2.0), replace=True)
    assert store.keys_since(cursor, 10)[0] == [rows[0].key]  # a replaced row is new to a peer's cursor again
    many = [f"absent-{i}" for i in range(1200)] + [rows[3].key]
    assert store.missing(many) == many[:-1]
    assert [r.key for r in store.get_many(many)] == [rows[3].key]
    ident = store.store_id()
    assert ident == store.store_id() and len(ident) == 16
    with pytest.raises(Exception, match="managed by the store"):
        store.set_meta("store_id", "forged")
    store.close()
    assert open_store(tmp_path / "c.sqlite").store_id() == ident  # kept in the file


def test_rows_from_a_peer_are_checked_and_only_asked_for_rows_kept(tmp_path) -> None:
    book = RecordBook(open_store(tmp_path / "p.sqlite"), max_records=3)
    good, other = row("peer", 0), row("peer", 1)
    bad = to_message(row("peer", 2))
    bad.total_s = math.inf
    added = asyncio.run(book.take_from_peer([to_message(good), bad, to_message(other)], {good.key, row("peer", 2).key}))
    assert added == 1 and book.rejected == 2  # the malformed row, and a row nobody asked for
    assert book.store.keys() == {good.key}
    asyncio.run(book.push([to_message(row("peer", 3)), to_message(row("peer", 4))], "alice"))
    with pytest.raises(Exception, match="maximum of 3 records") as info:
        asyncio.run(book.push([to_message(row("peer", 5))], "alice"))
    assert info.value.code == Code.RESOURCE_EXHAUSTED


# ------------------------------------------------------------------------------------------------ over gRPC


@pytest.fixture(scope="module")
def net(pki: Pki, loop: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(pki, loop)
    try:
        seeds: tuple[str, ...] = ()
        for name in NODES:
            cluster.start(name, seeds=seeds, gossip_interval_s=INTERVAL_S, record_ttl_s=3.0)
            seeds = (cluster.address(NODES[0]),)
        wait_until(lambda: all(len(cluster.daemons[n].table.live()) == 3 for n in NODES), 10.0, "a full view")
        yield cluster
    finally:
        cluster.close()


def push(net: Cluster, who: Any, node: str, records: list[Any], max_message_bytes: int = 4 << 20) -> Any:
    messages = [r if isinstance(r, node_pb2.PerfRecord) else to_message(r) for r in records]

    async def go() -> Any:
        stub = node_pb2_grpc.RecordsStub(net.channel(who, node, max_message_bytes=max_message_bytes))
        return await unary_outcome(stub.Push(node_pb2.PushRecordsRequest(records=messages), timeout=10))

    return net.run(go())


def call(net: Cluster, node: str, method: str, request: Any, who: str = "n1") -> Any:
    """A Pull or Fetch, by default with a node's certificate (n1 runs in no test here): only nodes may read."""
    async def go() -> Any:
        stub = node_pb2_grpc.RecordsStub(net.channel(who, node))
        return await unary_outcome(getattr(stub, method)(request, timeout=10))

    return net.run(go())


def restart(net: Cluster, node: str, **settings: Any) -> None:
    """Stop `node` and start it again (on a new port), dropping the test's cached channels to the old one."""
    net.stop(node)
    stale = [key for key in net._channels if key[1] == node]

    async def close() -> None:
        for key in stale:
            await net._channels.pop(key).close()

    net.run(close())
    net.start(node, gossip_interval_s=INTERVAL_S, record_ttl_s=3.0, **settings)


def stored(net: Cluster, node: str) -> set[str]:
    return net.daemons[node].records.store.keys()


def assert_healthy(net: Cluster) -> None:
    for node in NODES:
        assert net.run(net.health(node)) == health_pb2.HealthCheckResponse.SERVING, node


def test_a_pushed_row_reaches_every_node_by_gossip(net: Cluster) -> None:
    rows = [row("spread", i) for i in range(3)]
    out = push(net, "alice", "n2", rows)
    assert out.code == Code.OK, out
    assert (out.received[0].added, out.received[0].known) == (3, 0)
    took = wait_until(lambda: all({r.key for r in rows} <= stored(net, n) for n in NODES), SPREAD_S,
                      "the rows reaching every node")
    assert took < SPREAD_S
    again = push(net, "bob", "n4", rows[:2])  # already there (by gossip): nothing is added or changed
    assert (again.received[0].added, again.received[0].known) == (0, 2)
    pulled = call(net, "n4", "Fetch", node_pb2.FetchRecordsRequest(keys=[rows[0].key]))
    got = from_message(pulled.received[0].records[0])
    assert json.loads(got.env_json) == {"source": "t"}  # no reporter named, here or by gossip
    assert dataclasses.replace(got, env_json=rows[0].env_json) == rows[0]


def test_pull_pages_through_a_node_in_insertion_order(net: Cluster) -> None:
    rows = [row("pages", i) for i in range(5)]
    assert push(net, "olivia", "n3", rows).code == Code.OK
    first = call(net, "n3", "Pull", node_pb2.PullRecordsRequest(cursor=0, limit=1000, keys_only=True)).received[0]
    keys = list(first.keys)
    assert keys[-5:] == [r.key for r in rows] and not first.more and first.store_id
    seen, cursor, more = [], 0, True
    while more:
        reply = call(net, "n3", "Pull", node_pb2.PullRecordsRequest(cursor=cursor, limit=2)).received[0]
        assert len(reply.records) <= 2
        seen += [m.key for m in reply.records]
        cursor, more = reply.next_cursor, reply.more
    assert seen == keys
    assert call(net, "n3", "Pull", node_pb2.PullRecordsRequest(limit=1001)).code == Code.INVALID_ARGUMENT
    beyond = call(net, "n3", "Pull", node_pb2.PullRecordsRequest(cursor=1 << 63))  # found by the long fuzz run
    assert beyond.code == Code.INVALID_ARGUMENT and "cursor" in beyond.details


@pytest.mark.parametrize("case", ["too many", "malformed row", "huge message", "bad fetch key", "too many keys"])
def test_bad_calls_get_clear_errors_and_store_nothing(net: Cluster, case: str) -> None:
    if case == "too many":
        out = push(net, "alice", "n2", [row(case, i) for i in range(MAX_BATCH + 1)])
        want, words = Code.INVALID_ARGUMENT, "257 records in one call; the limit is 256"
    elif case == "malformed row":
        bad = to_message(row(case, 1))
        bad.prefill_s = -3.0
        out = push(net, "alice", "n2", [row(case, 0), bad])  # one bad row: the whole call is refused
        want, words = Code.INVALID_ARGUMENT, "prefill_s is -3.0"
    elif case == "huge message":
        steps = "[" + ",".join(["1"] * 30_000) + "]"  # 60 kB: within a row's limit, but 80 rows pass 4 MiB
        out = push(net, "alice", "n2", [row(case, i, steps_json=steps) for i in range(80)], max_message_bytes=64 << 20)
        want, words = Code.RESOURCE_EXHAUSTED, ""
    elif case == "bad fetch key":
        out = call(net, "n2", "Fetch", node_pb2.FetchRecordsRequest(keys=["../etc/passwd"]))
        want, words = Code.INVALID_ARGUMENT, "record key"
    else:
        out = call(net, "n2", "Fetch", node_pb2.FetchRecordsRequest(keys=[f"k{i}" for i in range(MAX_BATCH + 1)]))
        want, words = Code.INVALID_ARGUMENT, "the limit is 256"
    assert out.code == want, out
    assert words in out.details, out.details
    assert not {row(case, i).key for i in range(MAX_BATCH + 1)} & stored(net, "n2")  # none of this call's rows
    assert_healthy(net)


def test_unauthenticated_callers_are_refused(net: Cluster, pki: Pki) -> None:
    intruder = push(net, pki.intruder("mallory"), "n2", [row("intruder")])
    assert intruder.code == Code.UNAVAILABLE  # the TLS handshake fails: a certificate from another CA

    async def anonymous() -> Any:
        credentials = grpc.ssl_channel_credentials(root_certificates=pki.identity("alice").ca_pem)
        channel = grpc.aio.secure_channel(net.address("n2"), credentials, [("grpc.ssl_target_name_override", "n2")])
        try:
            stub = node_pb2_grpc.RecordsStub(channel)
            request = node_pb2.PushRecordsRequest(records=[to_message(row("anonymous"))])
            return await unary_outcome(stub.Push(request, timeout=5))
        finally:
            await channel.close()

    assert net.run(anonymous()).code == Code.UNAVAILABLE  # no client certificate at all
    keys = stored(net, "n2")
    assert run_key(test="intruder", i=0) not in keys and run_key(test="anonymous", i=0) not in keys
    assert_healthy(net)


def test_store_on_disk_survives_a_restart_and_peers_follow_a_replaced_store(net: Cluster, tmp_path) -> None:
    """n0 keeps its rows in data_dir/perf.sqlite across a restart; when n2's in-memory store is replaced by a
    restart, its peers' cursors into the old store are dropped (store_id) and its new rows still spread."""
    net.start("n0", seeds=(net.address("n2"),), gossip_interval_s=INTERVAL_S, record_ttl_s=3.0, data_dir=tmp_path)
    try:
        assert push(net, "alice", "n0", [row("disk")]).code == Code.OK
        assert (tmp_path / "perf.sqlite").is_file()
        restart(net, "n0", seeds=(net.address("n2"),), data_dir=tmp_path)
        assert row("disk").key in stored(net, "n0")
        wait_until(lambda: all(row("disk").key in stored(net, n) for n in NODES), SPREAD_S, "spread from n0")
    finally:
        if "n0" in net.daemons:
            net.stop("n0")
    assert push(net, "alice", "n2", [row("early", i) for i in range(3)]).code == Code.OK
    # n3 and n4 have pulled from n2 past its first rows (private cursors, read so that the check below means something)
    wait_until(lambda: all(net.daemons[n]._sync._cursors.get("n2", ("", 0))[1] > 1 for n in ("n3", "n4")), SPREAD_S,
               "n3 and n4 pulling from n2")
    old_id = net.daemons["n2"].records.store.store_id()
    restart(net, "n2", seeds=())  # in memory and alone: it starts empty, with a new id, and its rowids start at 1
    assert net.daemons["n2"].records.store.store_id() != old_id
    assert push(net, "alice", "n2", [row("fresh")]).code == Code.OK
    assert net.daemons["n2"].records.store.keys_since(0, 10)[:2] == ([row("fresh").key], 1)
    own = net.daemons["n2"].table.get("n2")  # introduce the new n2: only a reset cursor finds its row 1

    async def introduce() -> Any:
        return await unary_outcome(net.membership("n2", "n3").Gossip(node_pb2.GossipRequest(records=[own]),
                                                                      timeout=5))

    assert net.run(introduce()).code == Code.OK
    wait_until(lambda: all(row("fresh").key in stored(net, n) for n in NODES), SPREAD_S, "spread from the new n2")
    wait_until(lambda: row("disk").key in stored(net, "n2"), SPREAD_S, "the new n2 catching up")
    assert_healthy(net)
