"""The revocation list as members follow it: only forwards (a higher CRL number, or the very same list), whatever
CA-signed list is copied over the file."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from secureinfer.net.certs import create_ca, issue
from secureinfer.net.crl import CRL_FILE, RevocationError, RevocationList, RevocationWatch
from secureinfer.nodes.revocation import certificate_serial, revoke


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    directory = tmp_path / "ca"
    create_ca(directory)
    for name in ("bob", "carol"):
        issue(directory, name, "client")
    return directory


def put(path: Path, data: bytes) -> None:
    """Write `data` with a modification time later than any before (a file system's clock may tick coarsely)."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_bytes(data)
    later = max(path.stat().st_mtime_ns, before + 1_000_000_000)
    os.utime(path, ns=(later, later))


def serial(directory: Path, name: str) -> int:
    return certificate_serial((directory / f"{name}.pem").read_bytes())


def fork(directory: Path, at: Path) -> Path:
    """A second folder holding the same CA key and the current list: the CA's holder writing a rival list."""
    at.mkdir()
    for name in ("ca.pem", "ca.key", CRL_FILE):
        shutil.copy(directory / name, at / name)
    return at


def test_a_list_is_replaced_only_by_a_newer_one(ca: Path, tmp_path: Path) -> None:
    revoke(ca, [])
    first = (ca / CRL_FILE).read_bytes()  # #1, nothing revoked
    rival = fork(ca, tmp_path / "rival")
    revoke(rival, [serial(ca, "carol")])  # another #2
    revoke(ca, [serial(ca, "bob")])  # the real #2
    watch = RevocationWatch(ca / CRL_FILE, (ca / "ca.pem").read_bytes(), required=True)
    bob, carol = (ca / "bob.pem").read_bytes(), (ca / "carol.pem").read_bytes()
    assert watch.current.number == 2 and watch.is_revoked(bob)
    for replay, why in ((first, "older than #2"), ((rival / CRL_FILE).read_bytes(), "differs from the #2")):
        put(ca / CRL_FILE, replay)
        with pytest.raises(RevocationError, match=why):
            watch.refresh()
        assert watch.refresh() is False  # refused once; read again only when the file changes again
        assert watch.current.number == 2 and watch.is_revoked(bob) and not watch.is_revoked(carol)
    real = fork(ca, tmp_path / "real")
    revoke(real, [])  # #3 (from the rival #2): newer, so it replaces the list
    put(ca / CRL_FILE, (real / CRL_FILE).read_bytes())
    assert watch.refresh() is True and watch.current.number == 3
    assert watch.is_revoked(carol) and not watch.is_revoked(bob)


def test_the_same_list_again_and_the_first_list_are_taken(ca: Path) -> None:
    ca_pem = (ca / "ca.pem").read_bytes()
    watch = RevocationWatch(ca / CRL_FILE, ca_pem, required=False)  # no file yet: nothing revoked
    revoke(ca, [serial(ca, "bob")])
    assert watch.refresh() is True and watch.current.number == 1
    same = (ca / CRL_FILE).read_bytes()
    put(ca / CRL_FILE, same)  # copied again: a new file time, the same list
    assert watch.refresh() is False and watch.current.number == 1
    held = RevocationList.from_pem(same, ca_pem)
    held.check_follows(RevocationList.empty())
    held.check_follows(held)


def test_a_client_follows_the_file_and_warns_once(ca: Path, caplog: pytest.LogCaptureFixture) -> None:
    watch = RevocationWatch(ca / CRL_FILE, (ca / "ca.pem").read_bytes(), required=False)
    bob = (ca / "bob.pem").read_bytes()
    assert not watch.is_revoked_now(bob)
    revoke(ca, [])
    first = (ca / CRL_FILE).read_bytes()
    revoke(ca, [serial(ca, "bob")])
    assert watch.is_revoked_now(bob)
    put(ca / CRL_FILE, first)
    with caplog.at_level(logging.WARNING, logger="secureinfer.net.crl"):
        assert all(watch.is_revoked_now(bob) for _ in range(20))
    assert [r.getMessage() for r in caplog.records if "older than #2" in r.getMessage()] != []
    assert len(caplog.records) == 1
