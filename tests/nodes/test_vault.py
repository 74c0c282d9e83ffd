"""The hosted-model vault (nodes/vault.py): what a node writes it reads back exactly; its key is its own and made
once; a file changed anywhere, cut short, extended, written by another node or sealed with another key is refused
with a reason, never read back wrong."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

from secureinfer.net import owners
from secureinfer.net.wire import config_to_json
from secureinfer.nodes import publishing
from secureinfer.nodes import vault as vault_module
from secureinfer.nodes.vault import KEY_FILE, Kept, Vault, VaultError
from secureinfer.v1 import node_pb2

from .netutil import Pki, tiny_config


def kept(model_id: str = "org/tiny", big: bool = False) -> Kept:
    record = node_pb2.HostedModel(model_id=model_id, committee_id="c-1", node_ids=["n0", "n1", "n2"], party_index=0,
                                  privacy=node_pb2.PRIVACY_SECRET, arch="gpt2", config_json="{}", frac_bits=18)
    gen = torch.Generator().manual_seed(1)
    tensors = {"w#lo": torch.randint(-2**62, 2**62, (3, 5), generator=gen),
               "w#hi": torch.randint(-2**62, 2**62, (3, 5), generator=gen),
               "scale": torch.randn(7, dtype=torch.float64, generator=gen),
               "gain": torch.randn(2, 2, dtype=torch.float32, generator=gen),
               "empty": torch.zeros(0, 4, dtype=torch.int64)}
    if big:  # more than one sealed chunk
        tensors["big"] = torch.randint(-2**62, 2**62, ((vault_module.CHUNK_BYTES * 2 + 12_345) // 8,), generator=gen)
    return Kept(record, "olivia", tensors)


def same(a: Kept, b: Kept) -> bool:
    return (a.record == b.record and a.owner == b.owner and list(a.tensors) == list(b.tensors)
            and all(a.tensors[k].dtype == b.tensors[k].dtype and torch.equal(a.tensors[k], b.tensors[k])
                    for k in a.tensors))


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return Vault.open(tmp_path / "n0", "n0", max_bytes=1 << 30)


@pytest.mark.parametrize("big", [False, True], ids=["one-chunk", "three-chunks"])
def test_round_trip(vault: Vault, big: bool) -> None:
    original = kept(big=big)
    path = vault.save(original)
    assert vault.files() == [path] and path == vault.path_for("org/tiny", "c-1")
    assert same(vault.load(path), original)
    assert b"olivia" not in path.read_bytes() and original.tensors["scale"].numpy().tobytes() not in path.read_bytes()


def test_the_key_is_made_once_readable_by_the_node_only(tmp_path: Path) -> None:
    first = Vault.open(tmp_path, "n0", 1 << 30)
    key = tmp_path / KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and not first.key_exposed()
    path = first.save(kept())
    again = Vault.open(tmp_path, "n0", 1 << 30)  # a restart reads the same key
    assert same(again.load(path), kept()) and key.read_bytes() == (tmp_path / KEY_FILE).read_bytes()
    os.chmod(key, 0o644)
    assert again.key_exposed()
    key.write_bytes(b"short")
    with pytest.raises(VaultError, match="not a 32-byte key"):
        Vault.open(tmp_path, "n0", 1 << 30)


def test_saving_again_replaces_the_file(vault: Vault) -> None:
    vault.save(kept())
    changed = kept()
    changed.tensors["scale"].add_(1.0)
    path = vault.save(changed)
    assert vault.files() == [path] and same(vault.load(path), changed)
    vault.remove("org/tiny", "c-1")
    assert vault.files() == []


def refused(vault: Vault, path: Path, data: bytes, reason: str) -> None:
    path.write_bytes(data)
    with pytest.raises(VaultError, match=reason):
        vault.load(path)


def test_a_changed_byte_anywhere_is_refused(vault: Vault) -> None:
    path = vault.save(kept(big=True))
    good = path.read_bytes()
    header_end = len(vault_module.MAGIC) + 4 + int.from_bytes(good[8:12], "little")
    for offset in (0, 9, header_end - 3, header_end + 2, header_end + 100, len(good) // 2, len(good) - 1):
        bad = bytearray(good)
        bad[offset] ^= 0x40
        path.write_bytes(bytes(bad))
        with pytest.raises(VaultError):
            vault.load(path)
    path.write_bytes(good)
    assert same(vault.load(path), kept(big=True))


def test_truncated_extended_or_reordered_files_are_refused(vault: Vault) -> None:
    path = vault.save(kept(big=True))
    good = path.read_bytes()
    for cut in (3, 20, len(good) // 3, len(good) - 1):
        refused(vault, path, good[:cut], "truncated|bad magic|header")
    refused(vault, path, good + b"x", "data after the end")
    header_end = len(vault_module.MAGIC) + 4 + int.from_bytes(good[8:12], "little")
    size = 5 + vault_module.CHUNK_BYTES + 16  # one full sealed chunk with its 5-byte prefix
    first, second = good[header_end:header_end + size], good[header_end + size:header_end + 2 * size]
    swapped = good[:header_end] + second + first + good[header_end + 2 * size:]
    refused(vault, path, swapped, "does not open")
    without_last = good[:header_end + 2 * size]
    refused(vault, path, without_last, "truncated")


def test_another_nodes_or_another_keys_file_is_refused(tmp_path: Path, vault: Vault) -> None:
    path = vault.save(kept())
    other_node = Vault.open(tmp_path / "n1", "n1", 1 << 30)
    foreign = other_node.directory / path.name
    shutil.copy(path, foreign)
    with pytest.raises(VaultError, match="written by node 'n0', not by this node \\('n1'\\)"):
        other_node.load(foreign)
    other_key = Vault.open(tmp_path / "n0-new-key", "n0", 1 << 30)  # the same name, another key
    copy = other_key.directory / path.name
    shutil.copy(path, copy)
    with pytest.raises(VaultError, match="does not open with this node's key"):
        other_key.load(copy)


def test_a_file_over_max_model_bytes_or_not_a_model_is_refused(tmp_path: Path, vault: Vault) -> None:
    path = vault.save(kept())
    small = Vault(vault.directory, (vault.directory.parent / KEY_FILE).read_bytes(), "n0", max_bytes=100)
    with pytest.raises(VaultError, match="over max_model_bytes"):
        small.load(path)
    refused(vault, path, b"not a model at all", "bad magic")


def test_the_owners_signature_is_kept_and_checked_again_at_restore(vault: Vault, pki: Pki) -> None:
    """The hosted record is kept with its owner's signature; restoring refuses a record whose signature does not
    verify (none, or another owner's over this owner's id) before it builds anything."""
    olivia, oscar = pki.identity("olivia"), pki.identity("oscar")
    signed = kept("olivia/tiny")
    record = owners.hosted_record("olivia/tiny", "c-1", ["n0", "n1", "n2"], node_pb2.PRIVACY_SECRET,
                                  config_to_json(tiny_config()))
    record.owner_seal.CopyFrom(owners.seal(olivia, record))
    signed = Kept(record, "olivia", signed.tensors)
    back = vault.load(vault.save(signed))
    assert same(back, signed) and back.record.owner_seal == record.owner_seal
    assert owners.verify(back.record, olivia.ca_pem) == "olivia"
    unsigned = node_pb2.HostedModel()
    unsigned.CopyFrom(record)
    unsigned.ClearField("owner_seal")
    forged = node_pb2.HostedModel()
    forged.CopyFrom(unsigned)
    forged.owner_seal.CopyFrom(node_pb2.OwnerSeal(certificate_pem=oscar.cert_pem,
                                                  signature=oscar.sign(owners.statement(forged))))
    for bad, reason in ((unsigned, "no owner signature"), (forged, "signed by owner 'oscar'")):
        with pytest.raises(VaultError, match=reason):
            publishing.restore(Kept(bad, "oscar", signed.tensors), "cpu", olivia.ca_pem)
    with pytest.raises(VaultError, match="do not pair up"):  # the signature holds; these tensors make no model
        publishing.restore(signed, "cpu", olivia.ca_pem)
