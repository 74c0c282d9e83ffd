"""Committee capture over real gRPC: one operator runs two nodes (m0, m1) that claim to be the fastest of the network.

Before node certificates named operators, the owner's committee choice took both (it ranked by the speed each node
signs about itself), a client took the committee they formed, and each node served any committee a request named: two
of the three shares, so every weight and every prompt. Now the owner picks one node per operator, and every node
refuses at session open a committee that its membership table shows to have fewer than three operators.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from secureinfer.client.errors import InvalidRequest
from secureinfer.client.member import Member
from secureinfer.net.certs import CertError, Identity
from secureinfer.net.membership import CommitteeView, pick_secure_nodes, record_operator
from secureinfer.net.wire import config_to_json
from secureinfer.nodes.config import NodeConfig
from secureinfer.nodes.daemon import NodeDaemon
from secureinfer.v1 import node_pb2

from ..net.test_certs import _legacy_node
from .netutil import Cluster, LoopThread, Pki, finish, open_message, tiny_config, wait_until

Code = grpc.StatusCode
HONEST = ("n0", "n1", "n2", "n3")  # each its own operator
CAPTORS = ("m0", "m1")  # one operator, "mallory-ops" (netutil.OPERATORS)
CLAIMED_GFLOPS = 1e6


@dataclass
class Network:
    cluster: Cluster
    member: Member  # the SDK's membership view, as a model owner's or a client's


@pytest.fixture(scope="module")
def network(pki: Pki, loop: LoopThread) -> Iterator[Network]:
    """n0-n3 and the captor's m0, m1, gossiping through n0; m0 and m1 sign records claiming a huge matmul speed."""
    cluster = Cluster(pki, loop)
    member = None
    try:
        cluster.start("n0", gossip_interval_s=0.25)
        for name in (*HONEST[1:], *CAPTORS):
            cluster.start(name, seeds=(cluster.address("n0"),), gossip_interval_s=0.25)
        for name in CAPTORS:
            daemon = cluster.daemons[name]
            fast = node_pb2.Capability()
            fast.CopyFrom(daemon.capability)
            fast.matmul_gflops = CLAIMED_GFLOPS
            daemon.capability = fast  # re-signed into its record at its next heartbeat
        everyone = (*HONEST, *CAPTORS)
        table = cluster.daemons["n0"].table

        def converged() -> bool:
            records = [table.get(n) for n in everyone]
            return all(r is not None for r in records) and all(
                table.get(n).capability.matmul_gflops == CLAIMED_GFLOPS for n in CAPTORS)

        wait_until(converged, 20.0, "n0's table lists every node with the captors' claimed speed")
        member = Member(pki.identity("olivia"), [cluster.address("n0")], timeout_s=20)
        yield Network(cluster, member)
    finally:
        if member is not None:
            member.connector.close()
        cluster.close()


def test_the_captors_share_one_operator_in_their_certificates(network: Network) -> None:
    records = {r.node_id: r for r in network.member.nodes()}
    assert {n: record_operator(records[n]) for n in CAPTORS} == {"m0": "mallory-ops", "m1": "mallory-ops"}
    assert len({record_operator(records[n]) for n in HONEST}) == len(HONEST)


def test_capture_attack_publish_takes_one_node_per_operator(network: Network) -> None:
    """The owner's committee choice over the live network: the captors are the fastest by their own claim, so one of
    them is taken, never both."""
    records = network.member.nodes()
    for k in (3, 6):
        picked = [r.node_id for r in pick_secure_nodes(records, k)]
        assert picked[0] in CAPTORS
        for group in (picked[:3], picked[3:]):
            assert not set(CAPTORS) <= set(group), picked


async def _finish_open(cluster: Cluster, who: Identity, node: str, first: node_pb2.ClientMessage
                       ) -> tuple[Code, str]:
    """Open an Inference.Session at `node` as `who` with the `open` message `first`; the status it ends with."""
    call = cluster.inference(who, node).Session(timeout=10.0)
    await call.write(first)
    outcome = await finish(call)
    return outcome.code, outcome.details


async def _open(cluster: Cluster, who: str, nodes: tuple[str, ...], task: int, model_id: str) -> tuple[Code, str]:
    """Open a secret session at party 0 (n0) of the committee `nodes` and wait for how it ends."""
    fields = {"model_config_json": config_to_json(tiny_config())} if task == node_pb2.TASK_PUBLISH else {}
    first = open_message(cluster, nodes, 0, task=task, model_id=model_id, **fields)
    return await _finish_open(cluster, cluster.pki.identity(who), "n0", first)


@pytest.mark.parametrize("who, task", [("olivia", node_pb2.TASK_PUBLISH), ("alice", node_pb2.TASK_DECODE)])
def test_capture_attack_a_node_refuses_a_committee_of_two_operators(network: Network, who: str, task: int) -> None:
    """A publish or a request naming the committee (n0, m0, m1) at the honest n0: PERMISSION_DENIED, naming the
    operators, before anything runs."""
    code, details = network.cluster.run(_open(network.cluster, who, ("n0", *CAPTORS), task, "olivia/tiny"))
    assert code == Code.PERMISSION_DENIED, details
    assert "three distinct operators" in details and "m0 (mallory-ops), m1 (mallory-ops)" in details
    assert network.cluster.run(network.cluster.active("n0")) == 0


def test_three_operators_pass_the_operator_check(network: Network) -> None:
    """An honest committee (n0, n1, n2) passes: the request fails later, for the model it names (not hosted)."""
    code, details = network.cluster.run(
        _open(network.cluster, "alice", HONEST[:3], node_pb2.TASK_DECODE, "olivia/none-such"))
    assert code != Code.PERMISSION_DENIED and "operator" not in details, details


def _legacy(pki: Pki, directory: Path, name: str) -> Identity:
    """A node identity from this network's CA as it issued them before certificates named operators."""
    for suffix in ("pem", "key"):
        (directory / f"ca.{suffix}").write_bytes((pki.directory / f"ca.{suffix}").read_bytes())
    pem = _legacy_node(directory, name)
    return Identity(name, "node", pem, (directory / f"{name}.key").read_bytes(), (directory / "ca.pem").read_bytes())


def test_a_node_certificate_without_operator_is_refused_with_reissue_advice(pki: Pki, cluster: Cluster,
                                                                           tmp_path: Path) -> None:
    """Such a node does not start, and a running node refuses its calls (UNAUTHENTICATED, saying to re-issue)."""
    old = _legacy(pki, tmp_path, "n9")
    with pytest.raises(CertError, match="names no operator.*--operator"):
        NodeDaemon(NodeConfig(node_id="n9", certs_dir=tmp_path, log_level="WARNING"))
    cluster.start("n1")
    first = open_message(cluster, HONEST[:3], 1, model_id="olivia/tiny")
    outcome = cluster.run(_finish_open(cluster, old, "n1", first))
    assert outcome[0] == Code.UNAUTHENTICATED and "names no operator" in outcome[1], outcome



def test_capture_attack_a_client_refuses_a_committee_of_two_operators_named_by_hand(network: Network) -> None:
    """A committee the caller names (n0, m0, m1) is refused at the client before anything is sent; (n0, n1, n2)
    passes the same check."""
    view = network.member.membership()
    captured = CommitteeView("c-captured", ("n0", *CAPTORS), ("",) * 3, node_pb2.PRIVACY_SECRET)
    refused = "m0 \\(mallory-ops\\), m1 \\(mallory-ops\\) does not have 3 distinct operators"
    with pytest.raises(InvalidRequest, match=refused):
        network.member.check_members(captured, view)
    network.member.check_members(CommitteeView("c-honest", HONEST[:3], ("",) * 3, node_pb2.PRIVACY_SECRET), view)
