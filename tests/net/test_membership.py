"""Signed node records: signing, verification (forgery, tampering, expiry) and the gossip table's choices."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

import pytest

from secureinfer.net.certs import Identity, create_ca, issue
from secureinfer.net.membership import (CommitteeView, MembershipTable, RecordError, check_operators, pick_secure_nodes,
                                        sign_record, verify_record)
from secureinfer.v1 import node_pb2

from .test_certs import _legacy_node

NODES = [f"n{i}" for i in range(6)]
CAPTORS = ["n6", "n7"]  # two nodes of one operator


@pytest.fixture(scope="module")
def ids(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Identity]:
    """Node identities n0..n5 (each its own operator) and n6, n7 (both run by one operator, 'mallory-ops') and a client
    (alice) from one CA, and 'n0' from a rogue CA as 'rogue'."""
    directory = tmp_path_factory.mktemp("net")
    create_ca(directory)
    for name in NODES:
        issue(directory, name, "node", operator=f"op-{name}")
    for name in CAPTORS:
        issue(directory, name, "node", operator="mallory-ops")
    issue(directory, "alice", "client")
    rogue = tmp_path_factory.mktemp("rogue")
    create_ca(rogue)
    issue(rogue, "n0", "node", operator="op-n0")
    out = {name: Identity.load(directory, name) for name in [*NODES, *CAPTORS, "alice"]}
    out["rogue"] = Identity.load(rogue, "n0")
    return out


class Clock:
    """A settable clock for the table."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(
    node_id: str,
    *,
    heartbeat: int = 1,
    issued_at: float,
    ttl_s: float = 30.0,
    gflops: float = 10.0,
    healthy: bool = True,
    roles: Sequence[str] = ("secure",),
    models: Sequence[node_pb2.HostedModel] = (),
) -> node_pb2.NodeRecord:
    return node_pb2.NodeRecord(
        node_id=node_id,
        address=f"127.0.0.1:{5000 + int(node_id[1:]) if node_id[1:].isdigit() else 4999}",
        roles=list(roles),
        capability=node_pb2.Capability(device="cpu", memory_bytes=1 << 30, matmul_gflops=gflops, cpu_count=2),
        models=list(models),
        healthy=healthy,
        heartbeat=heartbeat,
        issued_at=issued_at,
        ttl_s=ttl_s,
    )


def secret(model_id: str, committee_id: str, members: Sequence[str], index: int) -> node_pb2.HostedModel:
    return node_pb2.HostedModel(model_id=model_id, committee_id=committee_id, node_ids=list(members),
                                party_index=index, privacy=node_pb2.PRIVACY_SECRET, arch="bert")


def forge(signer: Identity, record: node_pb2.NodeRecord) -> node_pb2.NodeRecord:
    """Sign a record by hand, bypassing sign_record's own checks (what an attacker would do)."""
    out = node_pb2.NodeRecord()
    out.CopyFrom(record)
    out.certificate_pem = signer.cert_pem
    out.signature = b""
    out.signature = signer.sign(out.SerializeToString(deterministic=True))
    return out


# ------------------------------------------------------------------------------------------------ records


def test_sign_and_verify(ids: dict[str, Identity]) -> None:
    now = time.time()
    raw = make("n0", issued_at=now)
    signed = sign_record(ids["n0"], raw)
    assert raw.signature == b"" and signed.certificate_pem == ids["n0"].cert_pem and signed.signature
    verify_record(signed, ids["n0"].ca_pem, now)
    verify_record(signed, ids["n0"].ca_pem)  # default now: the wall clock


def test_tampered_record_fails(ids: dict[str, Identity]) -> None:
    now = time.time()
    signed = sign_record(ids["n0"], make("n0", issued_at=now))
    for change in ("address", "heartbeat", "gflops"):
        bad = node_pb2.NodeRecord()
        bad.CopyFrom(signed)
        if change == "address":
            bad.address = "10.6.6.6:5000"
        elif change == "heartbeat":
            bad.heartbeat += 1
        else:
            bad.capability.matmul_gflops = 1e6
        with pytest.raises(RecordError, match="bad signature"):
            verify_record(bad, ids["n0"].ca_pem, now)


def test_node_speaks_only_for_itself(ids: dict[str, Identity]) -> None:
    now = time.time()
    with pytest.raises(RecordError, match="signer is 'n0'"):
        sign_record(ids["n0"], make("n1", issued_at=now))
    forged = forge(ids["n0"], make("n1", issued_at=now))
    with pytest.raises(RecordError, match="signed by node 'n0'"):
        verify_record(forged, ids["n0"].ca_pem, now)


def test_non_node_and_foreign_certificates_rejected(ids: dict[str, Identity]) -> None:
    now = time.time()
    with pytest.raises(RecordError, match="only node identities"):
        sign_record(ids["alice"], make("alice", issued_at=now))
    with pytest.raises(RecordError, match="client certificate"):
        verify_record(forge(ids["alice"], make("alice", issued_at=now)), ids["n0"].ca_pem, now)
    rogue = sign_record(ids["rogue"], make("n0", issued_at=now))
    with pytest.raises(RecordError, match="not issued by this network's CA"):
        verify_record(rogue, ids["n0"].ca_pem, now)
    with pytest.raises(RecordError, match="unsigned"):
        verify_record(make("n0", issued_at=now), ids["n0"].ca_pem, now)


def test_expiry_clock_skew_and_ttl(ids: dict[str, Identity]) -> None:
    now = time.time()
    ca = ids["n0"].ca_pem
    signed = sign_record(ids["n0"], make("n0", issued_at=now, ttl_s=30))
    verify_record(signed, ca, now + 30)
    with pytest.raises(RecordError, match="expired"):
        verify_record(signed, ca, now + 30.5)
    verify_record(sign_record(ids["n0"], make("n0", issued_at=now + 59)), ca, now)
    with pytest.raises(RecordError, match="in the future"):
        verify_record(sign_record(ids["n0"], make("n0", issued_at=now + 61)), ca, now)
    for ttl in (0.0, -1.0, 3600.5, float("nan")):
        with pytest.raises(RecordError, match="ttl_s"):
            verify_record(sign_record(ids["n0"], make("n0", issued_at=now, ttl_s=ttl)), ca, now)
    verify_record(sign_record(ids["n0"], make("n0", issued_at=now, ttl_s=3600)), ca, now)


# ------------------------------------------------------------------------------------------------ table


def test_merge_newer_wins_and_rejects(ids: dict[str, Identity]) -> None:
    now = time.time()
    clock = Clock(now)
    table = MembershipTable(ids["n0"].ca_pem, "n0", clock=clock)
    v1 = sign_record(ids["n1"], make("n1", heartbeat=1, issued_at=now, gflops=5))
    v2 = sign_record(ids["n1"], make("n1", heartbeat=2, issued_at=now, gflops=7))
    assert table.merge([v1]) == 1
    assert table.merge([v1]) == 0  # same heartbeat: not newer
    assert table.merge([v2]) == 1
    assert table.merge([v1]) == 0  # older: ignored
    assert table.get("n1").capability.matmul_gflops == 7
    tampered = node_pb2.NodeRecord()
    tampered.CopyFrom(v2)
    tampered.heartbeat = 99
    forged = forge(ids["n2"], make("n1", heartbeat=100, issued_at=now))
    assert table.merge([tampered, forged]) == 0
    assert table.rejected == 2
    assert table.get("n1").heartbeat == 2
    # Gossip about this node itself is ignored: the node is the authority on its own record.
    assert table.merge([sign_record(ids["n0"], make("n0", heartbeat=50, issued_at=now))]) == 0
    assert table.get("n0") is None and table.rejected == 2


def test_records_expire_without_heartbeats(ids: dict[str, Identity]) -> None:
    now = time.time()
    clock = Clock(now)
    table = MembershipTable(ids["n0"].ca_pem, "n0", clock=clock)
    table.set_self(sign_record(ids["n0"], make("n0", issued_at=now, ttl_s=30)))
    table.merge([sign_record(ids["n1"], make("n1", issued_at=now, ttl_s=10)),
                 sign_record(ids["n2"], make("n2", issued_at=now, ttl_s=30))])
    assert [r.node_id for r in table.live()] == ["n0", "n1", "n2"]
    clock.now = now + 11
    assert [r.node_id for r in table.live()] == ["n0", "n2"]
    assert table.get("n1") is None
    # A re-signed record with a higher heartbeat revives n1.
    assert table.merge([sign_record(ids["n1"], make("n1", heartbeat=2, issued_at=now + 11, ttl_s=10))]) == 1
    assert [r.node_id for r in table.live()] == ["n0", "n1", "n2"]
    assert [r.node_id for r in table.live(now + 40)] == []
    # An already expired record is rejected by merge.
    assert table.merge([sign_record(ids["n3"], make("n3", issued_at=now, ttl_s=5))]) == 0
    assert table.rejected == 1


def test_set_self_checks(ids: dict[str, Identity]) -> None:
    now = time.time()
    table = MembershipTable(ids["n0"].ca_pem, "n0", clock=Clock(now))
    with pytest.raises(RecordError, match="belongs to 'n0'"):
        table.set_self(sign_record(ids["n1"], make("n1", issued_at=now)))
    with pytest.raises(RecordError, match="unsigned"):
        table.set_self(make("n0", issued_at=now))


def test_returned_records_are_copies(ids: dict[str, Identity]) -> None:
    now = time.time()
    table = MembershipTable(ids["n0"].ca_pem, "n0", clock=Clock(now))
    table.merge([sign_record(ids["n1"], make("n1", issued_at=now))])
    table.get("n1").address = "changed"
    table.live()[0].address = "changed"
    assert table.get("n1").address == "127.0.0.1:5001"


def test_sample_peers(ids: dict[str, Identity]) -> None:
    now = time.time()
    table = MembershipTable(ids["n0"].ca_pem, "n0", clock=Clock(now))
    table.set_self(sign_record(ids["n0"], make("n0", issued_at=now)))
    table.merge([sign_record(ids[n], make(n, issued_at=now)) for n in NODES[1:]])
    rng = random.Random(7)
    seen: set[str] = set()
    for _ in range(30):
        picked = [r.node_id for r in table.sample_peers(2, rng)]
        assert len(picked) == 2 and len(set(picked)) == 2 and "n0" not in picked
        seen.update(picked)
    assert seen == set(NODES[1:])
    assert sorted(r.node_id for r in table.sample_peers(10, rng)) == NODES[1:]


def _committee_table(ids: dict[str, Identity], now: float, overrides: dict[str, dict] | None = None) -> MembershipTable:
    """c1 = n0,n1,n2 (slowest 3 GFLOPS) and c2 = n3,n4,n5 (slowest 8) host 'bert'; n0 also hosts 'gpt2' openly."""
    gflops = {"n0": 3.0, "n1": 50.0, "n2": 20.0, "n3": 9.0, "n4": 8.0, "n5": 30.0}
    committees = {"c1": NODES[:3], "c2": NODES[3:]}
    table = MembershipTable(ids["n0"].ca_pem, "n0", clock=Clock(now))
    records = []
    for cid, members in committees.items():
        for index, node in enumerate(members):
            models = [secret("bert", cid, members, index)]
            if node == "n0":
                models.append(node_pb2.HostedModel(model_id="gpt2", committee_id="open", node_ids=["n0"],
                                                   privacy=node_pb2.PRIVACY_PUBLIC, arch="gpt2"))
            fields = {"issued_at": now, "gflops": gflops[node], "models": models}
            fields.update((overrides or {}).get(node, {}))
            records.append(sign_record(ids[node], make(node, **fields)))
    table.set_self(records[0])
    table.merge(records[1:])
    return table


def test_committees_fastest_first(ids: dict[str, Identity]) -> None:
    now = time.time()
    table = _committee_table(ids, now)
    views = table.choose_committees("bert")
    assert views == [
        CommitteeView("c2", ("n3", "n4", "n5"), ("127.0.0.1:5003", "127.0.0.1:5004", "127.0.0.1:5005"),
                      node_pb2.PRIVACY_SECRET),
        CommitteeView("c1", ("n0", "n1", "n2"), ("127.0.0.1:5000", "127.0.0.1:5001", "127.0.0.1:5002"),
                      node_pb2.PRIVACY_SECRET),
    ]
    assert table.choose_committees("gpt2") == [
        CommitteeView("open", ("n0",), ("127.0.0.1:5000",), node_pb2.PRIVACY_PUBLIC)
    ]
    assert table.choose_committees("llama") == []


def test_committee_needs_all_three_live(ids: dict[str, Identity]) -> None:
    now = time.time()
    table = _committee_table(ids, now, {"n4": {"ttl_s": 5.0}})
    assert [v.committee_id for v in table.choose_committees("bert")] == ["c2", "c1"]
    table.clock.now = now + 6  # n4 stopped heart-beating
    assert [v.committee_id for v in table.choose_committees("bert")] == ["c1"]


def test_committee_needs_healthy_consistent_members(ids: dict[str, Identity]) -> None:
    now = time.time()
    assert [v.committee_id for v in _committee_table(ids, now, {"n1": {"healthy": False}}).choose_committees("bert")] \
        == ["c2"]
    # n5 does not host the model: c2 lacks party 2.
    assert [v.committee_id for v in _committee_table(ids, now, {"n5": {"models": []}}).choose_committees("bert")] \
        == ["c1"]
    # n5 claims membership of a committee whose list names someone else at its index.
    wrong = {"n5": {"models": [secret("bert", "c2", ["n3", "n4", "n1"], 2)]}}
    assert [v.committee_id for v in _committee_table(ids, now, wrong).choose_committees("bert")] == ["c1"]
    # n5 stands at its index but disagrees with n3 and n4 about who else is in c2.
    disagree = {"n5": {"models": [secret("bert", "c2", ["n1", "n4", "n5"], 2)]}}
    assert [v.committee_id for v in _committee_table(ids, now, disagree).choose_committees("bert")] == ["c1"]


def test_pick_secure_nodes(ids: dict[str, Identity]) -> None:
    now = time.time()
    records = [
        make("n0", issued_at=now, gflops=5),
        make("n1", issued_at=now, gflops=40),
        make("n2", issued_at=now, gflops=20),
        make("n3", issued_at=now, gflops=99, roles=("plaintext",)),
        make("n4", issued_at=now, gflops=80, healthy=False),
        make("n5", issued_at=now - 100, ttl_s=30, gflops=70),  # expired
        make("n5", issued_at=now, heartbeat=0, gflops=1),  # fresh but the older heartbeat of n5 above
        make("n2", issued_at=now, heartbeat=3, gflops=30),
    ]
    records = [sign_record(ids[r.node_id], r) for r in records]
    assert [r.node_id for r in pick_secure_nodes(records, now=now)] == ["n1", "n2", "n0"]
    assert pick_secure_nodes(records, now=now)[1].capability.matmul_gflops == 30
    assert [r.node_id for r in pick_secure_nodes(records, k=2, exclude=["n1"], now=now)] == ["n2", "n0"]
    assert [r.node_id for r in pick_secure_nodes(records, k=4, now=now)] == ["n1", "n2", "n0", "n5"]
    with pytest.raises(RecordError, match="need 3 .* only 2"):
        pick_secure_nodes(records, exclude=["n0", "n5"], now=now)


# ------------------------------------------------------------------------------------------------ operators


def _fast_captors(ids: dict[str, Identity], now: float, models: dict[str, list[node_pb2.HostedModel]] | None = None
                  ) -> list[node_pb2.NodeRecord]:
    """Signed records of n0-n2 (honest, 5-40 GFLOP/s) and of n6, n7 (one operator, claiming 1000 GFLOP/s each)."""
    speeds = {"n0": 5.0, "n1": 40.0, "n2": 20.0, "n6": 1000.0, "n7": 1000.0}
    return [sign_record(ids[n], make(n, issued_at=now, gflops=g, models=(models or {}).get(n, ())))
            for n, g in speeds.items()]


def test_capture_attack_publish_never_puts_two_nodes_of_one_operator_in_a_committee(ids: dict[str, Identity]) -> None:
    """An operator runs n6 and n7 and has both claim to be the fastest nodes: the owner's committee choice takes the
    fastest node of that operator and the fastest of two others, never both."""
    now = time.time()
    records = _fast_captors(ids, now)
    assert [r.node_id for r in pick_secure_nodes(records, now=now)] == ["n6", "n1", "n2"]
    with pytest.raises(RecordError, match="3 distinct operators.*2 operator"):
        pick_secure_nodes(records, exclude=["n1", "n2"], now=now)  # n6, n7, n0: only two operators
    everyone = records + [sign_record(ids[n], make(n, issued_at=now, gflops=1.0)) for n in ("n3", "n4", "n5")]
    picked = pick_secure_nodes(everyone, k=6, now=now)  # two disjoint committees, taken in groups of three
    assert [r.node_id for r in picked] == ["n6", "n1", "n2", "n7", "n0", "n3"]
    for group in (picked[:3], picked[3:]):
        check_operators(group)
    with pytest.raises(RecordError, match="does not have 3 distinct operators"):
        check_operators([records[3], records[4], records[0]])


def test_pick_secure_nodes_constraints_come_before_speed(ids: dict[str, Identity]) -> None:
    """Unsigned records (no certificate, so no operator) and revoked nodes are never candidates, however fast."""
    now = time.time()
    honest = [sign_record(ids[n], make(n, issued_at=now, gflops=g)) for n, g in (("n0", 1), ("n1", 2), ("n2", 3))]
    unsigned = make("n5", issued_at=now, gflops=1e6)
    assert [r.node_id for r in pick_secure_nodes([*honest, unsigned], now=now)] == ["n2", "n1", "n0"]
    fast = sign_record(ids["n3"], make("n3", issued_at=now, gflops=1e6))
    revoked = fast.certificate_pem
    assert [r.node_id for r in pick_secure_nodes([*honest, fast], now=now)][0] == "n3"
    assert [r.node_id for r in pick_secure_nodes([*honest, fast], now=now, revoked=lambda pem: pem == revoked)] \
        == ["n2", "n1", "n0"]


def test_capture_attack_client_never_sees_a_committee_of_two_operators(ids: dict[str, Identity]) -> None:
    """c-captured (n6, n7, n0) hosts 'bert' and is by the speeds its nodes claim the fastest; the client's committee
    choice refuses it and takes the slower honest committee c-honest (n0, n1, n2)."""
    now = time.time()
    captured, honest = ["n6", "n7", "n0"], ["n0", "n1", "n2"]
    models: dict[str, list[node_pb2.HostedModel]] = {n: [] for n in ("n0", "n1", "n2", "n6", "n7")}
    for cid, members in (("c-captured", captured), ("c-honest", honest)):
        for index, node in enumerate(members):
            models[node].append(secret("bert", cid, members, index))
    table = MembershipTable(ids["n1"].ca_pem, "alice", clock=Clock(now))
    assert table.merge(_fast_captors(ids, now, models)) == 5
    assert [v.committee_id for v in table.choose_committees("bert")] == ["c-honest"]
    assert table.check_committee(("n0", "n1", "n2")) is None
    with pytest.raises(RecordError, match="n6 \\(mallory-ops\\), n7 \\(mallory-ops\\)"):
        table.check_committee(("n6", "n7", "n0"))
    with pytest.raises(RecordError, match="no live record"):
        table.check_committee(("n0", "n1", "n4"))


def test_a_record_whose_certificate_names_no_operator_is_rejected(tmp_path) -> None:
    """A node certificate from before certificates named operators: its records never enter a table."""
    create_ca(tmp_path)
    pem = _legacy_node(tmp_path, "n9")
    old = Identity("n9", "node", pem, (tmp_path / "n9.key").read_bytes(), (tmp_path / "ca.pem").read_bytes())
    now = time.time()
    record = sign_record(old, make("n9", issued_at=now))
    with pytest.raises(RecordError, match="names no operator.*re-issue"):
        verify_record(record, old.ca_pem, now)
    table = MembershipTable(old.ca_pem, "n0", clock=Clock(now))
    assert table.merge([record]) == 0 and table.rejected == 1
