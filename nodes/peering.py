"""Who a session's peers are and how they prove it, on both ends of a peer link.

Addresses. A node dials a peer at the address of that node's record in its own membership table (signed by the
peer, checked against the network CA, live and not revoked: net/membership.py), never at an address the caller's
open request names; a node missing from the table is not dialled at all.

Certificates. The dialling node takes the peer's certificate from the same record and checks it again when it dials
(a node's certificate, naming the node id the committee names, not on the revocation list); TLS then checks that the
server it reached holds a certificate of that name from the CA, and the signed key agreement that it holds that
record's key. The accepting node checks the caller likewise (its role, the committee's node id for the party it
claims to be, and that it presented the certificate of that node's record; the revocation interceptor has already
refused a revoked one).

Key agreement. Each party's X25519 public keys are signed with its node key and verified against the sender's
certificate from the membership table (`NodeKeySigner`, the engine's `KeySigner`).

Errors. Why a peer was refused or could not be reached stays in this node's log: the caller learns only that the
peer is unavailable, and which node it is (`unavailable`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from secureinfer.mpc.party import PARTY_NAMES
from secureinfer.net.certs import CertError, Identity, PeerCert, verify_certificate, verify_signature
from secureinfer.net.errors import PeerFailed
from secureinfer.v1 import node_pb2


class PeerDirectory(Protocol):
    """What peer checks need of the node's membership table (net.membership.MembershipTable)."""

    ca_pem: bytes
    revoked: Callable[[bytes], bool] | None

    def get(self, node_id: str) -> node_pb2.NodeRecord | None:
        """The node's live, verified record, or None."""


class PeerRefused(Exception):
    """Why this node will not link with a peer: for its log only (the caller learns `unavailable`)."""


@dataclass(frozen=True)
class KnownPeer:
    """A peer as this node's membership table knows it: where to dial it and the certificate it must hold."""

    node_id: str
    address: str
    cert_pem: bytes
    fingerprint: str


def unavailable(party: int, node_id: str) -> str:
    """What a caller is told about a peer this node could not use: its party and node id, nothing more."""
    return f"peer unavailable: party {PARTY_NAMES[party]} ({node_id})"


def known_peer(directory: PeerDirectory | None, node_id: str) -> KnownPeer:
    """The peer `node_id` from the membership table, its certificate a node's of that name and not revoked; else
    PeerRefused saying why."""
    if directory is None:
        raise PeerRefused("this node has no membership table to find peers in")
    record = directory.get(node_id)
    if record is None:
        raise PeerRefused(f"{node_id} is not in this node's membership table (unknown, expired or revoked)")
    try:
        cert = verify_certificate(record.certificate_pem, directory.ca_pem)
    except CertError as exc:
        raise PeerRefused(f"the certificate of {node_id}'s record is refused: {exc}") from None
    if cert.role != "node" or cert.name != node_id:
        raise PeerRefused(f"the record of {node_id} carries the {cert.role} certificate {cert.name!r}")
    if directory.revoked is not None and directory.revoked(record.certificate_pem):
        raise PeerRefused(f"the certificate of {node_id} is revoked")
    if not record.address:
        raise PeerRefused(f"the record of {node_id} has no address")
    return KnownPeer(node_id, record.address, record.certificate_pem, cert.fingerprint)


def check_caller(directory: PeerDirectory | None, node_id: str, caller: PeerCert) -> None:
    """PeerRefused unless `caller` (a peer link's client certificate) is node `node_id` as the membership table
    knows it: a node's certificate, and the very one its record carries."""
    peer = known_peer(directory, node_id)
    if caller.role != "node" or caller.name != node_id or caller.fingerprint != peer.fingerprint:
        raise PeerRefused(f"{caller.name} ({caller.role}) did not present the certificate of {node_id}'s record")


SIGNATURE_BYTES = 64  # an ECDSA P-256 signature as r || s, 32 bytes each: the same size every time


class NodeKeySigner:
    """The engine's KeySigner over node keys: signs with this node's key and verifies a party's signature against
    the certificate of the committee's node for that party, from the membership table. Signatures travel as r || s
    (SIGNATURE_BYTES), so a session's byte counts do not vary with DER's lengths."""

    def __init__(self, identity: Identity, directory: PeerDirectory | None, node_ids: Sequence[str]) -> None:
        self.identity, self.directory, self.node_ids = identity, directory, tuple(node_ids)

    def sign(self, message: bytes) -> bytes:
        r, s = decode_dss_signature(self.identity.sign(message))
        return r.to_bytes(SIGNATURE_BYTES // 2, "big") + s.to_bytes(SIGNATURE_BYTES // 2, "big")

    def verify(self, party: int, message: bytes, signature: bytes) -> None:
        """PeerFailed (the peer unavailable; the cause says why) unless the signature is the party's node's."""
        node_id = self.node_ids[party]
        try:
            peer = known_peer(self.directory, node_id)
            if len(signature) != SIGNATURE_BYTES:
                raise CertError(f"a signature of {len(signature)} bytes, not {SIGNATURE_BYTES}")
            half = SIGNATURE_BYTES // 2
            der = encode_dss_signature(int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big"))
            verify_signature(peer.cert_pem, message, der)
        except (PeerRefused, CertError, ValueError) as exc:
            refused = PeerRefused(f"{node_id}'s key-agreement message is not signed by its node key: {exc}")
            raise PeerFailed(unavailable(party, node_id)) from refused
