"""Peers from the node's own membership table, checked on both ends, with a signed key agreement (over real gRPC).

Each attack here worked before: a node dialled whatever addresses the client's open request named (so a rogue
server, even one holding a revoked node key, took part in a session), its dial errors reached the client verbatim
(a probe of the nodes' internal network), and the key agreement's messages were not signed.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from secureinfer.client.connection import Connector
from secureinfer.mpc.comm.memory import MemoryNetwork
from secureinfer.mpc.party import PARTY_NAMES, EngineConfig, Party
from secureinfer.net.certs import Identity, issue
from secureinfer.net.errors import PeerFailed
from secureinfer.net.membership import CommitteeView
from secureinfer.nodes.peering import NodeKeySigner
from secureinfer.nodes.revocation import certificate_serial, revoke
from secureinfer.v1 import node_pb2, node_pb2_grpc

from .committee import SECRET, Net, publish, running_committee
from . import test_revocation
from .netutil import Cluster, LoopThread, Pki, finish, open_message, open_stream, session_id, tiny_config, tiny_params

Code = grpc.StatusCode
PEER_WAIT_S = 2.0
own = test_revocation.own  # a cluster over a private CA with a revocation list (the fixture)
PARTY2 = ("n1", "n2", "n0")  # a committee with n0 as party 2: both other parties dial n0


@pytest.fixture(scope="module")
def net(pki: Pki, loop: LoopThread) -> Iterator[Net]:
    with running_committee(pki, loop, PEER_WAIT_S) as running:
        yield running


class Listener:
    """A TCP server on 127.0.0.1 that counts the connections made to it (a rogue address a client names)."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> str:
        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            writer.close()

        self.server = await asyncio.start_server(accepted, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def _with_addresses(message: node_pb2.ClientMessage, addresses: list[str]) -> node_pb2.ClientMessage:
    del message.open.committee.addresses[:]
    message.open.committee.addresses.extend(addresses)
    return message


def test_a_node_never_dials_an_address_the_client_names(net: Net) -> None:
    """The client names a rogue address for both higher parties: n0 dials n1 and n2 where its table says."""
    cluster = net.cluster

    async def attack() -> tuple[int, Any, Any]:
        rogue = Listener()
        address = await rogue.start()
        try:
            sid = session_id()
            first = _with_addresses(open_message(cluster, SECRET, 0, sid=sid, committee_id="c-secret"),
                                    [cluster.address("n0"), address, address])
            call = await open_stream(cluster, "alice", "n0", first, timeout=6.0)
            reached = await cluster.daemons["n1"].registry.wait_for(sid, 0.0)  # nothing opened there: None
            await asyncio.sleep(1.0)  # time enough to dial
            out = await finish(call)
            return rogue.connections, reached, out
        finally:
            await rogue.close()

    connections, _, out = cluster.run(attack())
    assert connections == 0, "the node dialled the address the client named"
    assert out.code == Code.UNAVAILABLE  # n1 and n2 never had the session opened: they refuse the link
    assert "127.0.0.1" not in out.details


def test_dial_errors_are_not_echoed_to_the_client(pki: Pki, loop: LoopThread) -> None:
    """n2 is in n0's table but down: the client learns that the peer is unavailable and which, nothing more."""
    with running_committee(pki, loop, PEER_WAIT_S) as net:
        cluster = net.cluster
        address = cluster.address("n2")
        cluster.stop("n2")

        async def run() -> Any:
            sid = session_id()
            calls = [await open_stream(cluster, "alice", n, open_message(cluster, SECRET, i, sid=sid,
                                                                           committee_id="c-secret"), timeout=6.0)
                     for i, n in enumerate(SECRET[:2])]
            return [await finish(c) for c in calls]

        first, _ = cluster.run(run())
        assert first.code == Code.UNAVAILABLE
        assert "peer unavailable" in first.details and "n2" in first.details, first.details
        port = address.rpartition(":")[2]
        for leak in (port, "127.0.0.1", "ipv4", "connect", "refused"):
            assert leak not in first.details, first.details


@dataclass
class RoguePeer:
    """A gRPC server holding a node's (revoked) key that answers Peer.Link and counts the hellos it gets."""

    identity: Identity
    hellos: int = 0
    server: grpc.aio.Server | None = None

    async def start(self) -> str:
        rogue = self

        class Servicer(node_pb2_grpc.PeerServicer):
            async def Link(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
                message = await context.read()
                if message is not grpc.aio.EOF and message.HasField("hello"):
                    rogue.hellos += 1
                await asyncio.sleep(5.0)

        self.server = grpc.aio.server()
        node_pb2_grpc.add_PeerServicer_to_server(Servicer(), self.server)
        port = self.server.add_secure_port("127.0.0.1:0", self.identity.server_credentials())
        await self.server.start()
        return f"127.0.0.1:{port}"

    async def close(self) -> None:
        if self.server is not None:
            await self.server.stop(0)


def test_a_revoked_node_key_served_where_the_client_says_takes_no_part(own: Cluster) -> None:
    """n2's key is revoked and served by a rogue at an address the client names: no node dials it."""
    for name in SECRET:
        own.start(name)
    olivia = Connector(own.pki.identity("olivia"), [own.address("n0")], timeout_s=60)
    try:
        cfg = tiny_config()
        view = CommitteeView("c-secret", SECRET, tuple(own.address(n) for n in SECRET), node_pb2.PRIVACY_SECRET)
        publish(olivia, view, cfg, tiny_params(cfg))
    finally:
        olivia.close()
    n2 = own.pki.identity("n2")
    own.stop("n2")
    revoke(own.pki.directory, [certificate_serial(n2.cert_pem)])
    for daemon in own.daemons.values():
        daemon.check_revocations()
    rogue = RoguePeer(n2)

    async def attack() -> Any:
        address = await rogue.start()
        try:
            sid = session_id()
            addresses = [own.address("n0"), own.address("n1"), address]
            calls = [await open_stream(own, "alice", n, _with_addresses(open_message(own, SECRET, i, sid=sid,
                                                                                      committee_id="c-secret"),
                                                                         addresses), timeout=8.0, expect_accept=False)
                     for i, n in enumerate(SECRET[:2])]
            return [await finish(c) for c in calls]
        finally:
            await rogue.close()

    outcomes = own.run(attack())
    assert rogue.hellos == 0, "a node linked with the holder of a revoked key"
    assert outcomes[0].code != Code.OK and "127.0.0.1" not in outcomes[0].details


def test_an_accepting_node_refuses_a_peer_whose_certificate_is_not_its_records(net: Net, tmp_path: Path) -> None:
    """A second certificate issued under n1's name (n1's record carries the first) cannot link as n1."""
    cluster = net.cluster
    view = CommitteeView("c-party2", PARTY2, tuple(cluster.address(n) for n in PARTY2), node_pb2.PRIVACY_SECRET)
    publish(net.olivia, view, net.cfg, net.params)
    for name in ("ca.pem", "ca.key"):
        shutil.copy(cluster.pki.directory / name, tmp_path / name)
    issue(tmp_path, "n1", "node", operator="op-n1")  # same CA, name, role and operator; another key
    twin = Identity.load(tmp_path, "n1")

    async def attack() -> Any:
        sid = session_id()
        client = await open_stream(cluster, "alice", "n0", open_message(cluster, PARTY2, 2, sid=sid,
                                                                         committee_id="c-party2"), timeout=6.0)
        call = cluster.peer(twin, "n0").Link(timeout=5.0)
        await call.write(node_pb2.PeerMessage(hello=node_pb2.LinkHello(session_id=sid, from_party=0, to_party=2)))
        out = await finish(call)
        client.cancel()
        return out

    out = cluster.run(attack())
    assert out.code == Code.PERMISSION_DENIED and "record" in out.details, out.details


class _Directory:
    """A membership table of fixed node records (certificates only) for the signer."""

    def __init__(self, pki: Pki, names: tuple[str, ...]) -> None:
        self.ca_pem = pki.identity(names[0]).ca_pem
        self.revoked = None
        self._records = {n: node_pb2.NodeRecord(node_id=n, address="127.0.0.1:1",
                                                certificate_pem=pki.identity(n).cert_pem) for n in names}

    def get(self, node_id: str) -> node_pb2.NodeRecord | None:
        return self._records.get(node_id)


def _agree(pki: Pki, signers: list[str]) -> list[Any]:
    """Run Party.connect for the committee n0-n2 where party i signs with node `signers[i]`'s key; each party's
    Party or its error."""
    directory = _Directory(pki, ("n0", "n1", "n2", "n3"))
    network = MemoryNetwork(list(PARTY_NAMES), timeout_s=5.0)
    config = EngineConfig(session_id="s" * 32)
    results: list[Any] = [None] * 3

    def party(i: int) -> None:
        signer = NodeKeySigner(pki.identity(signers[i]), directory, SECRET)
        try:
            results[i] = Party.connect(i, network.channel(PARTY_NAMES[i]), config, signer)
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            results[i] = exc
            network.abort(exc)

    threads = [threading.Thread(target=party, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return results


def test_the_key_agreement_is_signed_by_the_node_keys(pki: Pki) -> None:
    parties = _agree(pki, ["n0", "n1", "n2"])
    assert all(isinstance(p, Party) for p in parties), parties
    assert bytes(parties[0].prg_next.ring((4,)).numpy()) == bytes(parties[1].prg_prev.ring((4,)).numpy())
    impostor = _agree(pki, ["n0", "n1", "n3"])  # party 2's messages signed by another node's key
    refused = [p for p in impostor if isinstance(p, PeerFailed)]
    assert refused and all("peer unavailable: party P2 (n2)" in str(p) for p in refused), impostor
