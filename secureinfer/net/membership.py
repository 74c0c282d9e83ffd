"""Signed node records and the gossip table of who is in the network, what they host and how fast they are.

Each node describes itself in a NodeRecord signed with its certificate's key and re-signs it with a higher heartbeat
every heartbeat interval; records spread by gossip and expire (issued_at + ttl_s) when their node stops re-signing.
Nothing here makes a network call: the Membership servicer feeds what it hears into `MembershipTable.merge`.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from secureinfer.mpc.ring import DEFAULT_FRAC_BITS
from secureinfer.v1 import node_pb2

from .certs import NODE_SAN, CertError, Identity, operator_of, verify_certificate, verify_signature

NodeRecord = node_pb2.NodeRecord
MAX_TTL_S = 3600.0
MAX_FUTURE_S = 60.0  # how far ahead of our clock a record's issued_at may be (clock skew)
PARTIES = 3


class RecordError(ValueError):
    """A node record is forged, tampered with, expired or malformed, or too few nodes qualify for a request."""


@dataclass(frozen=True)
class CommitteeView:
    """A committee that hosts a model: its nodes and addresses in party order, its privacy (a Privacy value), and
    whether a secure committee holds the model's open weights in the clear (public-weights sessions run there), and
    the fixed point f its sessions run with (secure committees; the model's weights are encoded at it)."""

    committee_id: str
    node_ids: tuple[str, ...]
    addresses: tuple[str, ...]
    privacy: int
    public_weights: bool = False
    frac_bits: int = DEFAULT_FRAC_BITS


def hosted_frac_bits(hosted: node_pb2.HostedModel) -> int:
    """The fixed point f a hosted model's sessions run with (a record without the field: the default, 18)."""
    return hosted.frac_bits or DEFAULT_FRAC_BITS


def _signed_bytes(record: NodeRecord) -> bytes:
    """The bytes a record's signature covers: its deterministic serialization with the signature field empty."""
    blank = NodeRecord()
    blank.CopyFrom(record)
    blank.signature = b""
    return blank.SerializeToString(deterministic=True)


def sign_record(identity: Identity, record: NodeRecord) -> NodeRecord:
    """A copy of record carrying identity's certificate and its signature over the rest of the record."""
    if identity.role != "node":
        raise RecordError(f"only node identities sign node records; {identity.name!r} has the role {identity.role!r}")
    if record.node_id != identity.name:
        raise RecordError(f"record names node {record.node_id!r} but the signer is {identity.name!r}")
    signed = NodeRecord()
    signed.CopyFrom(record)
    signed.certificate_pem = identity.cert_pem
    signed.signature = identity.sign(_signed_bytes(signed))
    return signed


def is_live(record: NodeRecord, now: float) -> bool:
    """True while a record has not expired (issued_at + ttl_s >= now)."""
    return record.issued_at + record.ttl_s >= now


def verify_record(record: NodeRecord, ca_pem: bytes, now: float | None = None) -> None:
    """Raise RecordError unless record is signed by the node it names, with a node certificate from the CA that names
    its operator, and live. A record's operator is the one its certificate carries (`record_operator`): the CA
    asserts it, so nothing the node signs about itself can change it."""
    now = time.time() if now is None else now
    who = record.node_id or "<no node_id>"
    if not 0.0 < record.ttl_s <= MAX_TTL_S:
        raise RecordError(f"record of {who!r}: ttl_s {record.ttl_s} is outside (0, {MAX_TTL_S:g}]")
    if not math.isfinite(record.issued_at):
        raise RecordError(f"record of {who!r}: issued_at {record.issued_at} is not a time")
    if record.issued_at > now + MAX_FUTURE_S:
        raise RecordError(f"record of {who!r}: issued {record.issued_at - now:.0f} s in the future")
    if not is_live(record, now):
        raise RecordError(f"record of {who!r}: expired {now - record.issued_at - record.ttl_s:.0f} s ago")
    if not record.certificate_pem or not record.signature:
        raise RecordError(f"record of {who!r}: unsigned (no certificate or signature)")
    try:
        peer = verify_certificate(record.certificate_pem, ca_pem, now)
    except CertError as exc:
        raise RecordError(f"record of {who!r}: certificate rejected: {exc}") from None
    if peer.role != "node":
        raise RecordError(f"record of {who!r}: signed by the {peer.role} certificate {peer.name!r}, not a node's")
    if peer.name != record.node_id:
        raise RecordError(f"record of {who!r}: signed by node {peer.name!r}, which may only speak for itself")
    try:
        verify_signature(record.certificate_pem, _signed_bytes(record), record.signature)
    except CertError:
        raise RecordError(f"record of {who!r}: bad signature (altered after signing)") from None


def record_operator(record: NodeRecord) -> str:
    """The operator who runs a record's node, as the CA named it in the record's certificate ("" where none)."""
    return operator_of(record.certificate_pem)


def distinct_operators(records: Iterable[NodeRecord]) -> bool:
    """True when every record names an operator and no two records share one (a committee's three nodes)."""
    operators = [record_operator(r) for r in records]
    return all(operators) and len(set(operators)) == len(operators)


def check_operators(records: Iterable[NodeRecord]) -> None:
    """Raise RecordError unless the records (a committee) belong to as many distinct operators as there are records."""
    records = list(records)
    if not distinct_operators(records):
        shown = ", ".join(f"{r.node_id} ({record_operator(r) or 'no operator'})" for r in records)
        raise RecordError(f"committee {shown} does not have {len(records)} distinct operators: one operator running "
                          "two parties would hold two of the three shares")


def _copy(record: NodeRecord) -> NodeRecord:
    """A private copy of a record (protobuf messages are mutable)."""
    out = NodeRecord()
    out.CopyFrom(record)
    return out


def _speed(record: NodeRecord) -> tuple[float, int, str]:
    """Sort key, best node first: measured matmul speed, then memory, then name."""
    return (-record.capability.matmul_gflops, -record.capability.memory_bytes, record.node_id)


class MembershipTable:
    """The records this node knows, newest heartbeat per node; safe to share between threads."""

    def __init__(self, ca_pem: bytes, self_id: str, clock: Callable[[], float] = time.time,
                 revoked: Callable[[bytes], bool] | None = None) -> None:
        """`revoked(certificate_pem)`: True for a certificate on the network's revocation list (its records are
        dropped); None: nothing is revoked."""
        self.ca_pem = ca_pem
        self.self_id = self_id
        self.clock = clock
        self.revoked = revoked
        self.rejected = 0
        self._lock = threading.Lock()
        self._records: dict[str, NodeRecord] = {}

    def merge(self, records: Iterable[NodeRecord]) -> int:
        """Verify and take in gossiped records; return how many were new or newer (invalid ones count as rejected).
        A record no newer than the one held is skipped before its signature is checked: it could change nothing,
        and every gossip message repeats most of the table."""
        now = self.clock()
        accepted: list[NodeRecord] = []
        rejected = 0
        for record in records:
            if record.node_id == self.self_id:
                continue  # this node is the only authority on its own record
            known = self._records.get(record.node_id)
            if known is not None and record.heartbeat <= known.heartbeat:
                continue
            try:
                verify_record(record, self.ca_pem, now)
            except RecordError:
                rejected += 1
                continue
            if self.revoked is not None and self.revoked(record.certificate_pem):
                rejected += 1
                continue
            accepted.append(_copy(record))
        changed = 0
        with self._lock:
            self.rejected += rejected
            for record in accepted:
                known = self._records.get(record.node_id)
                if known is None or record.heartbeat > known.heartbeat:
                    self._records[record.node_id] = record
                    changed += 1
            self._prune(now)
        return changed

    def set_self(self, record: NodeRecord) -> None:
        """Install this node's own (already signed) record; raise RecordError if it is not valid."""
        if record.node_id != self.self_id:
            raise RecordError(f"own record names {record.node_id!r}, but this table belongs to {self.self_id!r}")
        verify_record(record, self.ca_pem, self.clock())
        with self._lock:
            self._records[self.self_id] = _copy(record)

    def forget_revoked(self) -> list[str]:
        """Drop the records of other nodes whose certificate is now revoked; returns their node ids."""
        if self.revoked is None:
            return []
        with self._lock:
            gone = [n for n, r in self._records.items() if n != self.self_id and self.revoked(r.certificate_pem)]
            for node_id in gone:
                del self._records[node_id]
        return sorted(gone)

    def _prune(self, now: float) -> None:
        """Forget expired records (caller holds the lock)."""
        for node_id in [n for n, r in self._records.items() if not is_live(r, now)]:
            del self._records[node_id]

    def live(self, now: float | None = None) -> list[NodeRecord]:
        """Copies of the unexpired records, this node's own included, sorted by node_id."""
        now = self.clock() if now is None else now
        with self._lock:
            self._prune(now)
            return [_copy(self._records[n]) for n in sorted(self._records)]

    def get(self, node_id: str) -> NodeRecord | None:
        """A copy of one node's live record, or None."""
        now = self.clock()
        with self._lock:
            record = self._records.get(node_id)
            return _copy(record) if record is not None and is_live(record, now) else None

    def sample_peers(self, k: int, rng: random.Random) -> list[NodeRecord]:
        """Up to k live records of other nodes, chosen uniformly with rng (gossip targets)."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        others = [r for r in self.live() if r.node_id != self.self_id]
        return rng.sample(others, min(k, len(others)))

    def check_committee(self, node_ids: Sequence[str]) -> None:
        """Raise RecordError unless every member of a secret committee has a live record here and their certificates
        name distinct operators: what a client checks of a committee its caller names (the view's own committees are
        checked in choose_committees)."""
        records = [self.get(node_id) for node_id in node_ids]
        missing = [node_id for node_id, record in zip(node_ids, records) if record is None]
        if missing:
            raise RecordError(f"no live record of {', '.join(missing)} in this membership view: the operators of "
                              f"committee {', '.join(node_ids)} cannot be checked")
        check_operators(r for r in records if r is not None)

    def choose_committees(self, model_id: str) -> list[CommitteeView]:
        """The committees whose every member is live, healthy and hosts model_id, fastest (slowest member) first.

        A secret committee is listed only when its three records' certificates name three distinct operators: one
        operator holding two parties would hold two of the three shares. Only among committees that pass every
        check does the speed each node reports about itself rank them."""
        healthy = {r.node_id: r for r in self.live() if r.healthy}
        secret: dict[str, dict[int, tuple[tuple[str, ...], bool, int]]] = {}
        views: list[tuple[float, CommitteeView]] = []
        for record in healthy.values():
            for hosted in record.models:
                if hosted.model_id != model_id:
                    continue
                if hosted.privacy == node_pb2.PRIVACY_PUBLIC:
                    view = CommitteeView(hosted.committee_id, (record.node_id,), (record.address,), hosted.privacy)
                    views.append((record.capability.matmul_gflops, view))
                elif hosted.privacy == node_pb2.PRIVACY_SECRET:
                    # A claim counts only where the node stands at its own index in the member list it gives.
                    members = tuple(hosted.node_ids)
                    if len(members) == PARTIES and hosted.party_index < PARTIES \
                            and members[hosted.party_index] == record.node_id:
                        claim = (members, hosted.public_weights, hosted_frac_bits(hosted))
                        secret.setdefault(hosted.committee_id, {})[hosted.party_index] = claim
        for committee_id, claims in secret.items():
            first = claims.get(0)
            if first is None or len(set(first[0])) != PARTIES:
                continue
            if any(claims.get(i) != first for i in range(PARTIES)):
                continue  # a party missing, or the parties disagree on the members, the weights or the precision
            members, public_weights, frac_bits = first
            records = [healthy[n] for n in members]
            if not distinct_operators(records):
                continue  # captured: refused whatever speed its nodes claim
            view = CommitteeView(committee_id, members, tuple(r.address for r in records), node_pb2.PRIVACY_SECRET,
                                 public_weights, frac_bits)
            views.append((min(r.capability.matmul_gflops for r in records), view))
        views.sort(key=lambda item: (-item[0], item[1].committee_id, item[1].node_ids))
        return [view for _, view in views]


def pick_secure_nodes(
    records: Iterable[NodeRecord], k: int = PARTIES, exclude: Iterable[str] = (), now: float | None = None,
    revoked: Callable[[bytes], bool] | None = None,
) -> list[NodeRecord]:
    """k secure nodes for new committees, taken in groups of three (the last group may be short): each group's nodes
    belong to distinct operators; RecordError if the usable nodes cannot make that. `records` are verified ones (a
    MembershipTable's): a record's operator is read from the certificate it carries.

    Constraints first: a candidate is live, healthy, has the "secure" role, is not in exclude, is not revoked
    (`revoked(certificate_pem)`) and names an operator. Only then does the speed a node reports about itself rank
    the candidates, and it picks only which node of an operator serves: however fast two nodes of one operator
    claim to be, they never land in one committee.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    now = time.time() if now is None else now
    skip = set(exclude)
    newest: dict[str, NodeRecord] = {}
    for record in records:
        if record.node_id in skip or not record.healthy or "secure" not in record.roles or not is_live(record, now):
            continue
        if not record_operator(record) or (revoked is not None and revoked(record.certificate_pem)):
            continue
        known = newest.get(record.node_id)
        if known is None or record.heartbeat > known.heartbeat:
            newest[record.node_id] = record
    besides = f" besides {', '.join(sorted(skip))}" if skip else ""
    if len(newest) < k:
        raise RecordError(f"need {k} live, healthy secure nodes{besides} but only {len(newest)} are usable")
    return _committee_groups(sorted(newest.values(), key=_speed), k, besides)


def _committee_groups(ranked: list[NodeRecord], k: int, besides: str) -> list[NodeRecord]:
    """The first k of `ranked` (best first) that keep every consecutive group of three on distinct operators, taken
    greedily: a rare mix of operators that could fill every group in another order is refused (ask for fewer)."""
    picked: list[NodeRecord] = []
    left = list(ranked)
    while len(picked) < k:
        group = {record_operator(r) for r in picked[len(picked) - len(picked) % PARTIES:]}
        choice = next((r for r in left if record_operator(r) not in group), None)
        if choice is None:
            operators = sorted({record_operator(r) for r in ranked})
            raise RecordError(f"need {k} secure nodes{besides} in committees of {PARTIES} distinct operators, but the "
                              f"usable nodes belong to {len(operators)} operator(s) ({', '.join(operators)}); a "
                              "committee never takes two nodes of one operator")
        picked.append(choice)
        left.remove(choice)
    return picked


def gossip_targets(table: MembershipTable, seeds: Sequence[str], own_address: str, round_no: int,
                   rng: random.Random, fanout: int, absent_seed_every: int) -> list[tuple[str, str]]:
    """Whom gossip round `round_no` calls, as (address, name the peer's certificate must carry): up to `fanout`
    known peers, and the seeds (any node's certificate) while fewer peers are known, or every `absent_seed_every`
    rounds those the live view lacks (a seed that restarted empty, or whose record expired while it was away, would
    otherwise never hear from the nodes that had dropped it)."""
    targets = [(r.address, r.node_id) for r in table.sample_peers(fanout, rng)]
    absent_seeds_due = round_no % absent_seed_every == 0  # a dead seed costs a timeout: not every round
    known = {r.address for r in table.live()}
    targets += [(seed, NODE_SAN) for seed in seeds if seed != own_address and
                (len(targets) < fanout or (absent_seeds_due and seed not in known))]
    return targets
