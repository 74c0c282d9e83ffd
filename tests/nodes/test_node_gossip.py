"""Gossip between real daemons: views converge from seeds, stopped nodes expire, forged records neither count nor
spread (the fault tests of Membership.Gossip; split from test_node_faults.py to keep files small)."""

from __future__ import annotations

import time

import pytest
from grpc_health.v1 import health_pb2

from secureinfer.net.membership import sign_record
from secureinfer.v1 import node_pb2

from .netutil import Cluster, Pki, unary_outcome, wait_until

NAMES = ("g0", "g1", "g2", "g3")
INTERVAL_S = 0.3
TTL_S = 2.0
BAD_ADDRESS = "10.6.6.6:1"


def start_chain(cluster: Cluster) -> None:
    """g0 alone, then g1 seeded with g0, g2 with g1, g3 with g2: only gossip can tell g3 about g0."""
    seed: tuple[str, ...] = ()
    for name in NAMES:
        cluster.start(name, seeds=seed, gossip_interval_s=INTERVAL_S, record_ttl_s=TTL_S)
        seed = (cluster.address(name),)


def view(cluster: Cluster, node: str) -> dict[str, node_pb2.NodeRecord]:
    async def status() -> node_pb2.StatusReply:
        return await cluster.membership("alice", node).Status(node_pb2.StatusRequest(), timeout=5)

    return {r.node_id: r for r in cluster.run(status()).records}


def rejected(cluster: Cluster, node: str) -> float:
    value = cluster.daemons[node].metrics.registry.get_sample_value("secureinfer_rejected_records_total")
    return value or 0.0


@pytest.fixture
def chain(cluster: Cluster) -> Cluster:
    start_chain(cluster)
    took = wait_until(lambda: all(set(view(cluster, n)) == set(NAMES) for n in NAMES), 10 * INTERVAL_S + 2.0,
                      "every node seeing all four")
    assert took < 10 * INTERVAL_S + 2.0
    return cluster


def test_views_converge_from_seeds(chain: Cluster) -> None:
    for node in NAMES:
        records = view(chain, node)
        assert {n: r.address for n, r in records.items()} == {n: chain.address(n) for n in NAMES}
        assert all(r.healthy and r.ttl_s == TTL_S for r in records.values())


def test_stopped_node_expires_after_its_ttl(chain: Cluster) -> None:
    chain.stop("g3")
    rest = NAMES[:3]
    last_issued = max(view(chain, n)["g3"].issued_at for n in rest if "g3" in view(chain, n))
    wait_until(lambda: all("g3" not in view(chain, n) for n in rest), TTL_S + 4 * INTERVAL_S + 1.0,
               "g3's record expiring everywhere")
    gone_at = time.time()
    assert gone_at >= last_issued + TTL_S - 0.05, "a record was dropped before its ttl ran out"
    assert gone_at < last_issued + TTL_S + 1.5, "an expired record lingered"
    for node in rest:  # the others still see each other
        assert set(view(chain, node)) == set(rest)


def test_forged_and_tampered_records_are_rejected_and_not_spread(chain: Cluster, pki: Pki) -> None:
    real = view(chain, "g0")["g1"]
    tampered = node_pb2.NodeRecord()
    tampered.CopyFrom(real)
    tampered.address = BAD_ADDRESS  # altered after signing
    tampered.heartbeat += 10 ** 12  # and made to look newer than the real one
    impostor = node_pb2.NodeRecord()  # n4 speaking for n3 with its own certificate
    impostor.CopyFrom(sign_record(pki.identity("n4"), node_pb2.NodeRecord(
        node_id="n4", address=BAD_ADDRESS, roles=["secure"], healthy=True, heartbeat=1, issued_at=time.time(),
        ttl_s=TTL_S)))
    impostor.node_id = "n3"
    rogue = sign_record(pki.intruder("n0"), node_pb2.NodeRecord(  # a node certificate from another CA
        node_id="n0", address=BAD_ADDRESS, roles=["secure"], healthy=True, heartbeat=1, issued_at=time.time(),
        ttl_s=TTL_S))
    before = rejected(chain, "g0")

    async def push() -> object:
        request = node_pb2.GossipRequest(records=[tampered, impostor, rogue])
        return await unary_outcome(chain.membership("n3", "g0").Gossip(request, timeout=5))

    out = chain.run(push())
    assert out.code.name == "OK"
    assert rejected(chain, "g0") - before == 3
    assert chain.daemons["g0"].table.rejected >= 3
    time.sleep(4 * INTERVAL_S)  # several gossip rounds: nothing of it may spread
    for node in NAMES:
        records = view(chain, node)
        assert set(records) == set(NAMES), node
        assert records["g1"].address == chain.address("g1"), node
        assert all(r.address != BAD_ADDRESS for r in records.values())
    for node in NAMES:
        assert chain.run(chain.health(node)) == health_pb2.HealthCheckResponse.SERVING


def test_a_seed_restarted_empty_is_found_again(cluster: Cluster) -> None:
    """A seed that comes back empty (no seeds of its own) after the others dropped its expired record is re-dialled
    by them (they call seeds missing from their view every few rounds), so it learns the network again."""
    star = NAMES
    cluster.start("g0", gossip_interval_s=INTERVAL_S, record_ttl_s=TTL_S)
    seed = cluster.address("g0")
    for name in star[1:]:
        cluster.start(name, seeds=(seed,), gossip_interval_s=INTERVAL_S, record_ttl_s=TTL_S)
    wait_until(lambda: all(set(view(cluster, n)) == set(star) for n in star), 10 * INTERVAL_S + 2.0, "the star")
    port = int(seed.rpartition(":")[2])
    cluster.stop("g0")
    wait_until(lambda: all("g0" not in view(cluster, n) for n in star[1:]), TTL_S + 4 * INTERVAL_S + 1.0,
               "g0 record expiring")
    cluster.start("g0", port=port, gossip_interval_s=INTERVAL_S, record_ttl_s=TTL_S)  # no seeds: it knows no one
    took = wait_until(lambda: set(view(cluster, "g0")) == set(star), 20 * INTERVAL_S + 3.0, "g0 hearing of all")
    assert took < 20 * INTERVAL_S + 3.0
    wait_until(lambda: all("g0" in view(cluster, n) for n in star[1:]), 10 * INTERVAL_S + 2.0, "g0 seen again")
