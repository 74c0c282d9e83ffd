"""The pure part of a gossip round: merge skips what could change nothing before checking signatures, and
`gossip_targets` picks peers and seeds as the daemon's round does."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from secureinfer.net import membership
from secureinfer.net.certs import NODE_SAN, Identity, create_ca, issue
from secureinfer.net.membership import MembershipTable, gossip_targets, sign_record
from secureinfer.v1 import node_pb2

NAMES = [f"g{i}" for i in range(5)]


@pytest.fixture(scope="module")
def ids(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Identity]:
    directory: Path = tmp_path_factory.mktemp("gossip")
    create_ca(directory)
    for name in NAMES:
        issue(directory, name, "node", operator=f"op-{name}")
    return {name: Identity.load(directory, name) for name in NAMES}


def record(identity: Identity, heartbeat: int, now: float) -> node_pb2.NodeRecord:
    return sign_record(identity, node_pb2.NodeRecord(
        node_id=identity.name, address=f"{identity.name}:1", roles=["secure"], healthy=True, heartbeat=heartbeat,
        issued_at=now, ttl_s=60.0))


def test_merge_checks_signatures_only_of_records_newer_than_held(ids: dict[str, Identity],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    table = MembershipTable(ids["g0"].ca_pem, "g0", clock=lambda: now)
    checked: list[str] = []
    real = membership.verify_record
    monkeypatch.setattr(membership, "verify_record", lambda r, *a: (checked.append(r.node_id), real(r, *a)))
    v2 = record(ids["g1"], 2, now)
    assert table.merge([v2]) == 1 and checked == ["g1"]
    for _ in range(50):  # every gossip message repeats the table: no signature is checked again
        assert table.merge([v2, record(ids["g1"], 1, now)]) == 0
    assert checked == ["g1"]
    altered = node_pb2.NodeRecord()
    altered.CopyFrom(v2)
    altered.address = "evil:1"  # not newer: ignored, never stored
    assert table.merge([altered]) == 0 and table.get("g1").address == "g1:1"
    altered.heartbeat = 3  # newer: checked, and refused
    assert table.merge([altered]) == 0 and table.rejected == 1 and table.get("g1").address == "g1:1"
    assert table.merge([record(ids["g1"], 3, now)]) == 1 and checked == ["g1", "g1", "g1"]


def test_gossip_targets_seeds_until_peers_are_known(ids: dict[str, Identity]) -> None:
    now = time.time()
    table = MembershipTable(ids["g0"].ca_pem, "g0", clock=lambda: now)
    table.set_self(record(ids["g0"], 1, now))
    seeds = ["g0:1", "g1:1", "seed-x:1"]
    rng = random.Random(1)
    assert gossip_targets(table, seeds, "g0:1", 1, rng, 2, 4) == [("g1:1", NODE_SAN), ("seed-x:1", NODE_SAN)]
    table.merge([record(ids[n], 1, now) for n in NAMES[1:]])
    for round_no in (1, 2, 3):  # enough peers known: two of them, by name, no seed
        targets = gossip_targets(table, seeds, "g0:1", round_no, rng, 2, 4)
        assert len(targets) == 2 and all(name in NAMES[1:] and address == f"{name}:1" for address, name in targets)
    targets = gossip_targets(table, seeds, "g0:1", 4, rng, 2, 4)  # every 4th round: the seed the view lacks too
    assert len(targets) == 3 and targets[-1] == ("seed-x:1", NODE_SAN)
