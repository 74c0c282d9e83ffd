"""Certificate refusals over real gRPC against running daemons (the leakage audit's certificate checks):
an expired certificate, and a node answering for another node's name. Wrong-CA callers and forged membership
records are covered in test_node_faults.py, test_certs.py and test_node_gossip.py."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from secureinfer.net.certs import CertError, Identity, issue
from secureinfer.nodes.config import NodeConfig
from secureinfer.nodes.daemon import NodeDaemon
from secureinfer.v1 import node_pb2

from .netutil import Cluster, Pki, unary_outcome


def _expired(directory: Path, name: str, role: str) -> Identity:
    """An identity whose certificate ran out two days ago (built directly: Identity.load refuses it)."""
    operator = f"op-{name}" if role == "node" else None
    issue(directory, name, role, days=1, not_before=time.time() - 3 * 86400, force=True, operator=operator)
    return Identity(name, role, (directory / f"{name}.pem").read_bytes(), (directory / f"{name}.key").read_bytes(),
                    (directory / "ca.pem").read_bytes())


def test_expired_client_certificate_is_refused(cluster: Cluster, pki: Pki, tmp_path: Path) -> None:
    cluster.start("n0")
    for suffix in ("pem", "key"):
        (tmp_path / f"ca.{suffix}").write_bytes((pki.directory / f"ca.{suffix}").read_bytes())
    stale = _expired(tmp_path, "carol", "client")
    with pytest.raises(CertError, match="expired"):
        Identity.load(tmp_path, "carol")

    async def go():
        fresh = await unary_outcome(cluster.membership("alice", "n0").Status(node_pb2.StatusRequest(), timeout=5))
        old = await unary_outcome(cluster.membership(stale, "n0").Status(node_pb2.StatusRequest(), timeout=5))
        return fresh, old

    fresh, old = cluster.run(go())
    assert fresh.code == grpc.StatusCode.OK  # the same node serves a valid certificate
    assert old.code == grpc.StatusCode.UNAVAILABLE, old


def test_daemon_with_an_expired_certificate_does_not_start(pki: Pki, tmp_path: Path) -> None:
    for suffix in ("pem", "key"):
        (tmp_path / f"ca.{suffix}").write_bytes((pki.directory / f"ca.{suffix}").read_bytes())
    _expired(tmp_path, "n9", "node")
    with pytest.raises(CertError, match="expired"):
        NodeDaemon(NodeConfig(node_id="n9", certs_dir=tmp_path, log_level="WARNING"))


def test_node_answering_for_another_name_is_refused(cluster: Cluster) -> None:
    """Dialling n1's address while expecting n2 (an address that claims to be n2): n1's certificate does not name
    n2, so TLS refuses it; the same call expecting n1 succeeds."""
    cluster.start("n1")

    async def go():
        right = await unary_outcome(cluster.membership("alice", "n1").Status(node_pb2.StatusRequest(), timeout=5))
        channel = cluster.channel("alice", "n1", target="n2")
        from secureinfer.v1 import node_pb2_grpc
        wrong = await unary_outcome(node_pb2_grpc.MembershipStub(channel).Status(node_pb2.StatusRequest(), timeout=5))
        return right, wrong

    right, wrong = cluster.run(go())
    assert right.code == grpc.StatusCode.OK
    assert wrong.code == grpc.StatusCode.UNAVAILABLE, wrong
