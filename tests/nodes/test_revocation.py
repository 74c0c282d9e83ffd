"""Certificate revocation over real gRPC: a revoked client is refused with a clear error, a revoked node's records
are dropped (and it cannot rejoin through gossip) while the others keep working, a revoked node cannot start, and a
rotated certificate takes over from the one it replaces. Each test uses its own CA (revocations must not leak into
the shared `pki` of the other node tests)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from secureinfer.cli import main as cli_main
from secureinfer.nodes.config import NodeConfig
from secureinfer.nodes.daemon import NodeDaemon
from secureinfer.nodes.revocation import CRL_FILE, RevocationError, certificate_serial, revoke
from secureinfer.v1 import node_pb2, node_pb2_grpc

from .netutil import Cluster, LoopThread, Outcome, Pki, unary_outcome, wait_until

INTERVAL_S = 0.2
TTL_S = 3.0


@pytest.fixture
def own(tmp_path: Path, loop: LoopThread) -> Iterator[Cluster]:
    """A cluster over a private CA whose directory has an empty crl.pem (what `certs init` writes)."""
    pki = Pki.make(tmp_path)
    revoke(pki.directory, [])
    cluster = Cluster(pki, loop)
    yield cluster
    cluster.close()


def revoke_names(cluster: Cluster, *names: str) -> None:
    """Revoke the named members' current certificates and make every running node re-read the list now."""
    revoke(cluster.pki.directory, [certificate_serial((cluster.pki.directory / f"{n}.pem").read_bytes())
                                   for n in names])
    for daemon in cluster.daemons.values():
        daemon.check_revocations()


def status(cluster: Cluster, who: str, node: str) -> Outcome:
    async def call() -> Outcome:  # channels belong to the loop: make them there
        return await unary_outcome(cluster.membership(who, node).Status(node_pb2.StatusRequest(), timeout=5))

    return cluster.run(call())


def view(cluster: Cluster, node: str) -> set[str]:
    outcome = status(cluster, "alice", node)
    assert outcome.code == grpc.StatusCode.OK, outcome.details
    return {r.node_id for r in outcome.received[0].records}


def start_three(cluster: Cluster) -> None:
    cluster.start("n0", gossip_interval_s=INTERVAL_S, record_ttl_s=TTL_S)
    for name in ("n1", "n2"):
        cluster.start(name, seeds=(cluster.address("n0"),), gossip_interval_s=INTERVAL_S, record_ttl_s=TTL_S)
    wait_until(lambda: all(view(cluster, n) == {"n0", "n1", "n2"} for n in ("n0", "n1", "n2")), 10.0,
               "all three nodes seeing each other")


def test_revoked_client_is_refused_with_a_clear_error(own: Cluster) -> None:
    own.start("n0")
    assert status(own, "bob", "n0").code == grpc.StatusCode.OK  # before: bob is a member like any other
    revoke_names(own, "bob")
    refused = status(own, "bob", "n0")
    assert refused.code == grpc.StatusCode.UNAUTHENTICATED
    assert "'bob'" in refused.details and "revoked" in refused.details and "#2" in refused.details
    async def push() -> Outcome:
        stub = node_pb2_grpc.RecordsStub(own.channel("bob", "n0"))
        return await unary_outcome(stub.Push(node_pb2.PushRecordsRequest(), timeout=5))

    pushed = own.run(push())
    assert pushed.code == grpc.StatusCode.UNAUTHENTICATED  # every service, not only Membership
    assert status(own, "alice", "n0").code == grpc.StatusCode.OK  # everyone else keeps working


def test_revoked_node_is_dropped_and_cannot_gossip_back(own: Cluster) -> None:
    start_three(own)
    revoke_names(own, "n2")
    assert view(own, "n0") == {"n0", "n1"} and view(own, "n1") == {"n0", "n1"}
    # n2 keeps running and gossiping; its calls are refused, and its record relayed by nobody.
    async def gossip_from_n2() -> Outcome:
        request = node_pb2.GossipRequest(records=own.daemons["n2"].table.live())
        return await unary_outcome(own.membership("n2", "n0").Gossip(request, timeout=5))

    gossip = own.run(gossip_from_n2())
    assert gossip.code == grpc.StatusCode.UNAUTHENTICATED and "revoked" in gossip.details
    for _ in range(3):  # several gossip rounds later n2 is still out, n0 and n1 still in
        own.run(own.daemons["n0"].gossip_once())
        own.run(own.daemons["n1"].gossip_once())
        assert view(own, "n0") == {"n0", "n1"} and view(own, "n1") == {"n0", "n1"}


def test_records_signed_by_a_revoked_certificate_are_rejected_on_merge(own: Cluster) -> None:
    start_three(own)
    n2_record = own.daemons["n2"].table.get("n2")
    revoke_names(own, "n2")
    table = own.daemons["n0"].table
    before = table.rejected
    assert table.merge([n2_record]) == 0
    assert table.rejected == before + 1 and table.get("n2") is None


def test_a_node_with_a_revoked_certificate_refuses_to_start(own: Cluster, tmp_path: Path) -> None:
    revoke(own.pki.directory, [certificate_serial((own.pki.directory / "n3.pem").read_bytes())])
    config = NodeConfig(node_id="n3", certs_dir=own.pki.directory, log_level="WARNING")
    with pytest.raises(RevocationError, match=r"n3.*revoked"):
        NodeDaemon(config)
    missing = NodeConfig(node_id="n4", certs_dir=own.pki.directory, revocation_list=tmp_path / "none.pem")
    with pytest.raises(RevocationError, match="revocation list not found"):
        NodeDaemon(missing)  # a configured list must exist: a typo must not silently revoke nothing


def test_rotation_new_certificate_replaces_the_revoked_old_one(own: Cluster) -> None:
    directory = own.pki.directory
    start_three(own)
    old_pem = (directory / "n2.pem").read_bytes()
    own.stop("n2")
    from secureinfer.net.certs import issue

    issue(directory, "n2", "node", force=True, operator="op-n2")  # the operator issues n2 a new certificate and key
    new_pem = (directory / "n2.pem").read_bytes()
    own.start("n2", seeds=(own.address("n0"),), gossip_interval_s=INTERVAL_S, record_ttl_s=TTL_S)
    revoke(directory, [certificate_serial(old_pem)])
    for daemon in own.daemons.values():
        daemon.check_revocations()
    wait_until(lambda: (r := own.daemons["n0"].table.get("n2")) is not None and r.certificate_pem == new_pem,
               10.0, "n0 learning n2's new certificate from its records")
    wait_until(lambda: view(own, "n1") == {"n0", "n1", "n2"}, 10.0, "n1 taking n2 back")


def test_nodes_reload_the_list_when_its_file_changes(own: Cluster) -> None:
    own.start("n0", gossip_interval_s=INTERVAL_S, record_ttl_s=TTL_S)
    revoke(own.pki.directory, [certificate_serial((own.pki.directory / "bob.pem").read_bytes())])
    took = wait_until(lambda: status(own, "bob", "n0").code == grpc.StatusCode.UNAUTHENTICATED, 5.0,
                      "the gossip loop re-reading crl.pem")
    assert took < 5.0


def test_node_health_command(own: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    daemon = own.start("n0")
    toml = tmp_path / "n0.toml"
    toml.write_text(daemon.config.to_toml())
    assert cli_main(["node", "health", "--config", str(toml), "--address", own.address("n0")]) == 0
    assert "SERVING" in capsys.readouterr().out
    own.stop("n0")
    assert cli_main(["node", "health", "--config", str(toml), "--address", "127.0.0.1:9", "--timeout", "1"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_crl_from_another_ca_is_refused(own: Cluster, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.pem"
    revoke(own.pki.rogue, [], out=foreign)
    config = NodeConfig(node_id="n0", certs_dir=own.pki.directory, revocation_list=foreign)
    with pytest.raises(RevocationError, match="not signed by this network's CA"):
        NodeDaemon(config)
    assert (own.pki.directory / CRL_FILE).is_file()


def test_an_older_or_rewritten_list_cannot_unrevoke(own: Cluster, tmp_path: Path) -> None:
    """Replaying the CA's earlier list (#1, nothing revoked) or another list of the held number is refused: bob stays
    revoked; a newer list is taken."""
    directory = own.pki.directory
    own.start("n0")
    first = (directory / CRL_FILE).read_bytes()
    fork = tmp_path / "fork"  # the CA's holder signing a second, different list #2 beside the real one
    fork.mkdir()
    for name in ("ca.pem", "ca.key"):
        (fork / name).write_bytes((directory / name).read_bytes())
    (fork / CRL_FILE).write_bytes(first)
    revoke(fork, [certificate_serial((directory / "alice.pem").read_bytes())])
    revoke_names(own, "bob")  # the real #2
    daemon = own.daemons["n0"]
    for replay in (first, (fork / CRL_FILE).read_bytes()):
        _rewrite(directory / CRL_FILE, replay)
        assert daemon.check_revocations() == []
        assert daemon.revocation.current.number == 2
        refused = status(own, "bob", "n0")
        assert refused.code == grpc.StatusCode.UNAUTHENTICATED and "#2" in refused.details
    revoke(fork, [])  # #3 from the fork: newer, so taken (it revokes alice, not bob)
    _rewrite(directory / CRL_FILE, (fork / CRL_FILE).read_bytes())
    daemon.check_revocations()
    assert daemon.revocation.current.number == 3
    assert status(own, "bob", "n0").code == grpc.StatusCode.OK
    assert status(own, "alice", "n0").code == grpc.StatusCode.UNAUTHENTICATED


def _rewrite(path: Path, data: bytes) -> None:
    """Write `data` over `path` with a later modification time (a file system's clock may tick coarsely)."""
    later = path.stat().st_mtime_ns + 1_000_000_000
    path.write_bytes(data)
    os.utime(path, ns=(later, later))
