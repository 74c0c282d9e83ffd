"""Clients honour the CA's revocation list: a client whose certificate directory holds a crl.pem revoking a
committee member sends nothing to that committee, even while the nodes themselves have not heard of the revocation
yet, and an older list copied over it does not un-revoke the node."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from secureinfer.client import Client, InvalidRequest, ModelNotFound
from secureinfer.net.crl import CRL_FILE
from secureinfer.nodes.revocation import certificate_serial, revoke

from .committee import PUBLIC, SECRET, Net, running_committee
from .netutil import LoopThread, Pki

IDS = torch.tensor([[1, 2, 3]])


@pytest.fixture(scope="module")
def net(pki: Pki, loop: LoopThread) -> Iterator[Net]:
    with running_committee(pki, loop, peer_wait_s=2.0, gossip=True) as running:
        yield running


@pytest.fixture
def client_dir(pki: Pki, tmp_path: Path) -> Path:
    """alice's own certificate directory: her certificate and key and the CA certificate, no list yet."""
    for name in ("ca.pem", "alice.pem", "alice.key"):
        shutil.copy(pki.directory / name, tmp_path / name)
    return tmp_path


def test_client_sends_nothing_to_a_committee_with_a_revoked_node(net: Net, pki: Pki, client_dir: Path) -> None:
    seeds = [net.cluster.address("n0")]
    crl = client_dir / CRL_FILE
    with Client.from_dir(client_dir, "alice", seeds, timeout_s=60) as alice:
        alice.wait_for_model("tiny", "secret", timeout_s=15)
        alice.wait_for_model("tiny", "public", timeout_s=15)
        assert [c.node_ids for c in alice.committees("tiny")] == [SECRET]  # before: n0, n1, n2 serve it
        revoke(pki.directory, [], out=crl)
        first = crl.read_bytes()  # #1: nothing revoked
        revoke(pki.directory, [certificate_serial((pki.directory / "n1.pem").read_bytes())], out=crl)  # #2: n1
        assert {r.node_id for r in alice.nodes()} == {"n0", "n2"}  # the seed still relays n1's record
        assert alice.committees("tiny") == []
        with pytest.raises(ModelNotFound):
            alice.generate("olivia/tiny", IDS, 2)
        with pytest.raises(InvalidRequest, match="n1.*revoked"):
            alice.generate("olivia/tiny", IDS, 2, committee=net.view(SECRET))
        assert [c.node_ids for c in alice.committees("tiny", "public")] == [PUBLIC]  # n0 is not revoked
        crl.write_bytes(first)  # an older list signed by the same CA: refused, n1 stays out
        assert {r.node_id for r in alice.nodes()} == {"n0", "n2"}
        with pytest.raises(InvalidRequest, match="n1"):
            alice.generate("olivia/tiny", IDS, 2, committee=net.view(SECRET))
    assert net.cluster.daemons["n0"].table.get("n1") is not None  # the nodes never heard of it: the client decided
