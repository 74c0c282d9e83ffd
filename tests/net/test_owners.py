"""Models bound to their owners (secureinfer/net/owners.py): ids namespaced OWNER/NAME, the owner's signature over a
hosted record and what breaks it, and a client's view that offers only committees whose records verify."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import pytest

from secureinfer.models.config import ModelConfig
from secureinfer.net import owners
from secureinfer.net.certs import Identity, create_ca, issue
from secureinfer.net.membership import sign_record
from secureinfer.net.owners import OwnedTable, OwnerError
from secureinfer.net.wire import config_to_json
from secureinfer.v1 import node_pb2

NODES = [f"n{i}" for i in range(6)]
SECRET = node_pb2.PRIVACY_SECRET


@pytest.fixture(scope="module")
def ids(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Identity]:
    """Nodes n0..n5, owners olivia and oscar, client alice (one CA), and an owner olivia of a rogue CA."""
    directory = tmp_path_factory.mktemp("net")
    create_ca(directory)
    for name in NODES:
        issue(directory, name, "node", operator=f"op-{name}")
    for name in ("olivia", "oscar"):
        issue(directory, name, "owner")
    issue(directory, "alice", "client")
    rogue = tmp_path_factory.mktemp("rogue")
    create_ca(rogue)
    issue(rogue, "olivia", "owner")
    out = {name: Identity.load(directory, name) for name in [*NODES, "olivia", "oscar", "alice"]}
    out["rogue-olivia"] = Identity.load(rogue, "olivia")
    return out


def config_json(tokenizer: str = "") -> str:
    return config_to_json(ModelConfig(arch="gpt2", vocab_size=13, hidden=8, n_layers=1, n_heads=2, n_kv_heads=2,
                                      head_dim=4, intermediate=16, max_positions=8, norm_eps=1e-5, act="gelu_tanh",
                                      tokenizer=tokenizer))


def record(model_id: str = "olivia/m", committee_id: str = "c1", members: Sequence[str] = ("n0", "n1", "n2"),
           index: int = 0, **fields) -> node_pb2.HostedModel:
    return owners.hosted_record(model_id, committee_id, members, fields.pop("privacy", SECRET),
                                fields.pop("config", config_json()), party_index=index, **fields)


def sealed(signer: Identity, hosted: node_pb2.HostedModel) -> node_pb2.HostedModel:
    """`hosted` with `signer`'s signature over its statement, made by hand (what a rogue owner could do)."""
    out = node_pb2.HostedModel()
    out.CopyFrom(hosted)
    out.owner_seal.CopyFrom(node_pb2.OwnerSeal(certificate_pem=signer.cert_pem,
                                               signature=signer.sign(owners.statement(hosted))))
    return out


# ------------------------------------------------------------------------------------------------ ids


def test_ids_are_namespaced_by_owner() -> None:
    assert owners.split_model_id("olivia/my-model") == ("olivia", "my-model")
    assert owners.split_model_id("olivia/a/b") == ("olivia", "a/b")
    for bad in ("my-model", "olivia/", "/my-model", "-x/my-model"):
        with pytest.raises(OwnerError, match="OWNER/NAME"):
            owners.split_model_id(bad)
    assert owners.qualify("olivia", "my-model") == owners.qualify("olivia", "olivia/my-model") == "olivia/my-model"
    with pytest.raises(OwnerError, match="namespace of 'oscar'"):
        owners.qualify("olivia", "oscar/my-model")


# ------------------------------------------------------------------------------------------------ signatures


def test_an_owners_signature_verifies_and_binds_every_field(ids: dict[str, Identity]) -> None:
    ca = ids["olivia"].ca_pem
    good = record()
    good.owner_seal.CopyFrom(owners.seal(ids["olivia"], good))
    assert owners.verify(good, ca) == "olivia"
    changes: dict[str, Callable[[node_pb2.HostedModel], None]] = {
        "committee": lambda h: setattr(h, "committee_id", "c2"),
        "members": lambda h: h.node_ids.__setitem__(2, "n5"),
        "privacy": lambda h: setattr(h, "privacy", node_pb2.PRIVACY_PUBLIC),
        "config": lambda h: setattr(h, "config_json", config_json().replace('"hidden": 8', '"hidden": 16')),
        "tokenizer": lambda h: setattr(h, "config_json", config_json("SmolLM2-135M-Instruct")),
        "frac_bits": lambda h: setattr(h, "frac_bits", 16),
        "public_weights": lambda h: setattr(h, "public_weights", True),
        "arch": lambda h: setattr(h, "arch", "llama"),
    }
    for name, change in changes.items():
        tampered = node_pb2.HostedModel()
        tampered.CopyFrom(good)
        change(tampered)
        with pytest.raises(OwnerError, match="does not match the record"):
            owners.verify(tampered, ca)
            pytest.fail(f"a changed {name} still verifies")
    moved = node_pb2.HostedModel()
    moved.CopyFrom(good)
    moved.party_index = 1  # the party index is the node's own, not the owner's statement
    assert owners.verify(moved, ca) == "olivia"


def test_signatures_that_are_not_the_named_owners_are_refused(ids: dict[str, Identity]) -> None:
    ca = ids["olivia"].ca_pem
    with pytest.raises(OwnerError, match="carries no owner signature"):
        owners.verify(record(), ca)
    with pytest.raises(OwnerError, match="signed by owner 'oscar', but the id belongs to 'olivia'"):
        owners.verify(sealed(ids["oscar"], record()), ca)
    with pytest.raises(OwnerError, match="not an owner's"):
        owners.verify(sealed(ids["alice"], record()), ca)
    with pytest.raises(OwnerError, match="not an owner's"):
        owners.verify(sealed(ids["n0"], record()), ca)
    with pytest.raises(OwnerError, match="not this network's"):
        owners.verify(sealed(ids["rogue-olivia"], record()), ca)
    good = sealed(ids["olivia"], record())
    with pytest.raises(OwnerError, match="revoked"):
        owners.verify(good, ca, revoked=lambda pem: pem == ids["olivia"].cert_pem)
    with pytest.raises(OwnerError, match="OWNER/NAME"):
        owners.verify(node_pb2.HostedModel(model_id="m"), ca)
    with pytest.raises(OwnerError, match="cannot sign model 'oscar/m'"):
        owners.seal(ids["olivia"], record("oscar/m"))
    with pytest.raises(OwnerError, match="only owner certificates"):
        owners.seal(ids["alice"], record("alice/m"))


# ------------------------------------------------------------------------------------------------ the client's view


def node_record(identity: Identity, models: Sequence[node_pb2.HostedModel], gflops: float = 10.0
                ) -> node_pb2.NodeRecord:
    index = int(identity.name[1:])
    return sign_record(identity, node_pb2.NodeRecord(
        node_id=identity.name, address=f"127.0.0.1:{5000 + index}", roles=["secure"],
        capability=node_pb2.Capability(device="cpu", memory_bytes=1 << 30, matmul_gflops=gflops, cpu_count=2),
        models=list(models), healthy=True, heartbeat=time.monotonic_ns(), issued_at=time.time(), ttl_s=60.0))


def committee(signer: Identity | None, model_id: str, committee_id: str, members: Sequence[str],
              ids: dict[str, Identity], gflops: float = 10.0) -> list[node_pb2.NodeRecord]:
    """The signed records of `members` hosting `model_id` as `committee_id`, each signed by `signer` (None: no
    owner signature)."""
    out = []
    for index, node in enumerate(members):
        hosted = record(model_id, committee_id, members, index)
        out.append(node_record(ids[node], [sealed(signer, hosted) if signer else hosted], gflops))
    return out


def test_the_view_offers_only_committees_whose_every_record_its_owner_signed(ids: dict[str, Identity]) -> None:
    """A rogue's faster committee claiming olivia's model (unsigned, or signed by oscar) is never offered; olivia's
    slower, signed committee is."""
    table = OwnedTable(ids["alice"].ca_pem)
    table.merge(committee(ids["olivia"], "olivia/m", "c-olivia", NODES[:3], ids))
    table.merge(committee(ids["oscar"], "olivia/m", "c-rogue", NODES[3:], ids, gflops=1000.0))
    assert [v.committee_id for v in table.choose_committees("olivia/m")] == ["c-olivia"]
    reasons = table.refusals("olivia/m")
    assert len(reasons) == 3 and all("signed by owner 'oscar'" in r for r in reasons)
    table = OwnedTable(ids["alice"].ca_pem)
    table.merge(committee(None, "olivia/m", "c-rogue", NODES[3:], ids, gflops=1000.0))
    assert table.choose_committees("olivia/m") == [] and table.verified_config("olivia/m") is None
    assert all("no owner signature" in r for r in table.refusals("olivia/m"))
    # one member without a valid signature is enough to drop the committee
    mixed = committee(ids["olivia"], "olivia/m", "c-mixed", NODES[:3], ids)[:2]
    mixed.append(node_record(ids["n2"], [sealed(ids["oscar"], record("olivia/m", "c-mixed", NODES[:3], 2))]))
    table = OwnedTable(ids["alice"].ca_pem)
    table.merge(mixed)
    assert table.choose_committees("olivia/m") == []


def test_a_bare_name_resolves_only_to_its_one_owner(ids: dict[str, Identity]) -> None:
    table = OwnedTable(ids["alice"].ca_pem)
    table.merge(committee(ids["olivia"], "olivia/m", "c-olivia", NODES[:3], ids))
    table.merge(committee(None, "oscar-unsigned/m", "c-x", NODES[3:], ids))  # no signature: not an owner of "m"
    assert table.resolve("m") == "olivia/m" and table.owners("m") == ["olivia"]
    assert table.resolve("m", owner="olivia") == "olivia/m" and table.resolve("olivia/m") == "olivia/m"
    assert table.resolve("m", owner="oscar") == "oscar/m"
    with pytest.raises(OwnerError, match="belongs to 'olivia', but the request pins owner 'oscar'"):
        table.resolve("olivia/m", owner="oscar")
    table.merge(committee(ids["oscar"], "oscar/m", "c-oscar", NODES[3:], ids))
    with pytest.raises(OwnerError, match=r"published by several owners \(olivia, oscar\)"):
        table.resolve("m")
    assert table.resolve("m", owner="oscar") == "oscar/m"
    assert table.resolve("unknown") == "unknown"


def test_a_revoked_owners_models_are_not_offered(ids: dict[str, Identity]) -> None:
    table = OwnedTable(ids["alice"].ca_pem, revoked=lambda pem: pem == ids["olivia"].cert_pem)
    table.merge(committee(ids["olivia"], "olivia/m", "c-olivia", NODES[:3], ids))
    assert table.choose_committees("olivia/m") == [] and table.owners("m") == []
    assert all("revoked" in r for r in table.refusals("olivia/m"))
