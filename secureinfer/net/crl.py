"""The network's certificate revocation list as every member reads it: a CA-signed X.509 CRL (`crl.pem`), verified,
and followed from its file only forwards.

The CA's holder writes the list (`secureinfer certs revoke`, nodes/revocation.py), its CRL number one higher each
time, and hands it out with ca.pem. Nodes read it beside their certificates and refuse revoked callers and records;
clients read it from their own certificate directory (the CA's word, not a node's: a node cannot hide its own
revocation from a client) and keep revoked nodes out of every committee they use. A list whose number is lower than
the one held, or equal with different content, is refused: replaying an older CA-signed list cannot un-revoke a
certificate.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from .certs import CertError, _load_cert, _read

CRL_FILE = "crl.pem"
logger = logging.getLogger(__name__)


class RevocationError(CertError):
    """A revocation list is missing, malformed, not signed by this network's CA, older than the one held, or a serial
    is not valid."""


@dataclass(frozen=True)
class RevocationList:
    """The serial numbers a network CA has revoked, as read from one verified CRL (number 0 with no serials and no
    digest: the list of a network that has revoked nothing)."""

    serials: frozenset[int]
    number: int = 0
    next_update: float | None = None  # unix seconds after which the CA meant to publish a newer list
    digest: bytes = b""  # SHA-256 of the CRL's DER: what tells two lists of one number apart

    @classmethod
    def empty(cls) -> "RevocationList":
        """The list of a network that has revoked nothing."""
        return cls(serials=frozenset())

    @classmethod
    def from_pem(cls, crl_pem: bytes, ca_pem: bytes) -> "RevocationList":
        """Parse a PEM CRL and check that this network's CA issued and signed it."""
        try:
            crl = x509.load_pem_x509_crl(crl_pem)
        except ValueError as exc:
            raise RevocationError(f"not a valid PEM revocation list: {exc}") from None
        ca = _load_cert(ca_pem, "CA certificate")
        if crl.issuer != ca.subject or not crl.is_signature_valid(ca.public_key()):
            raise RevocationError("the revocation list is not signed by this network's CA")
        try:
            number = int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
        except x509.ExtensionNotFound:
            number = 0
        after = crl.next_update_utc
        return cls(serials=frozenset(entry.serial_number for entry in crl), number=number,
                   next_update=None if after is None else after.timestamp(),
                   digest=hashlib.sha256(crl.public_bytes(serialization.Encoding.DER)).digest())

    @classmethod
    def load(cls, path: Path, ca_pem: bytes) -> "RevocationList":
        """Read and verify the CRL file at `path`."""
        try:
            pem = _read(Path(path), "revocation list")
        except CertError as exc:
            raise RevocationError(str(exc)) from None
        try:
            return cls.from_pem(pem, ca_pem)
        except CertError as exc:
            raise RevocationError(f"{path}: {exc}") from None

    def check_follows(self, held: "RevocationList") -> None:
        """Raise RevocationError unless this list may replace `held`: a higher CRL number, or the very same list
        (any list may replace the empty one a member starts from)."""
        if not held.digest or self.digest == held.digest:
            return
        if self.number < held.number:
            raise RevocationError(f"revocation list #{self.number} is older than #{held.number}, the one held; "
                                  f"refused (a replayed list must not un-revoke a certificate)")
        if self.number == held.number:
            raise RevocationError(f"revocation list #{self.number} differs from the #{held.number} held; refused "
                                  f"(the CA numbers every new list one higher)")

    def is_revoked(self, cert_pem: bytes) -> bool:
        """True when the certificate's serial number is on this list."""
        return certificate_serial(cert_pem) in self.serials

    def stale(self, now: float | None = None) -> bool:
        """True when the CA's promised next update has passed (the list still applies; operators should renew it)."""
        return self.next_update is not None and (time.time() if now is None else now) > self.next_update


def certificate_serial(cert_pem: bytes) -> int:
    """The serial number of a PEM certificate."""
    return _load_cert(cert_pem).serial_number


def parse_serial(text: str) -> int:
    """A serial number written in hex (with or without 0x and ':' separators, as `certs show` prints it)."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        serial = int(cleaned, 16)
    except ValueError:
        raise RevocationError(f"serial {text!r} is not a hexadecimal number") from None
    if serial <= 0:
        raise RevocationError(f"serial {text!r} must be positive")
    return serial


def format_serial(serial: int) -> str:
    """A serial number as lowercase hex, the form `certs show` prints and `certs revoke --serial` takes."""
    return f"{serial:x}"


class RevocationWatch:
    """A member's current revocation list, re-read from its file when the file changes and replaced only by a list
    that follows it (`RevocationList.check_follows`); safe to share: reads are of one immutable RevocationList."""

    def __init__(self, path: Path | None, ca_pem: bytes, required: bool) -> None:
        """`required`: the file must exist now (a configured path); otherwise a missing file means nothing revoked."""
        self.path = None if path is None else Path(path)
        self.ca_pem = ca_pem
        self.current = RevocationList.empty()
        self._stamp: tuple[int, int] | None = None
        self._warned = ""
        if self.path is not None and (required or self.path.exists()):
            self.current = RevocationList.load(self.path, ca_pem)
            self._stamp = _stamp(self.path)

    def refresh(self) -> bool:
        """Re-read the file if it changed; True when the list changed. A bad, older or vanished file keeps the last
        good list and raises RevocationError (the caller logs it; an older list is reported once per change of the
        file)."""
        if self.path is None:
            return False
        try:
            stamp = _stamp(self.path)
        except FileNotFoundError:
            if self._stamp is None:
                return False
            raise RevocationError(f"{self.path}: the revocation list vanished; keeping the last one read") from None
        if stamp == self._stamp:
            return False
        fresh = RevocationList.load(self.path, self.ca_pem)
        self._stamp = stamp
        try:
            fresh.check_follows(self.current)
        except RevocationError as exc:
            raise RevocationError(f"{self.path}: {exc}; keeping #{self.current.number}") from None
        changed = fresh != self.current
        self.current = fresh
        return changed

    def is_revoked(self, cert_pem: bytes) -> bool:
        """True when the certificate is on the current list (an unparsable certificate counts as revoked)."""
        try:
            return self.current.is_revoked(cert_pem)
        except CertError:
            return True

    def is_revoked_now(self, cert_pem: bytes) -> bool:
        """`is_revoked` after picking up a changed file (a file that cannot replace the list is logged and the last
        good list kept): what a client checks each record against."""
        try:
            self.refresh()
        except RevocationError as exc:
            if str(exc) != self._warned:  # once per problem, not once per record
                self._warned = str(exc)
                logger.warning("revocation list not reloaded: %s", exc)
        return self.is_revoked(cert_pem)

    def reason(self, cert_pem: bytes) -> str | None:
        """Why a certificate is refused (a one-line message), or None when it is not revoked."""
        if not self.is_revoked(cert_pem):
            return None
        try:
            cert = _load_cert(cert_pem)
        except CertError as exc:
            return str(exc)
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        who = str(names[0].value) if names else "?"
        return (f"certificate of {who!r} (serial {format_serial(cert.serial_number)}) is revoked by the network "
                f"CA's revocation list #{self.current.number}; ask the network's operator for a new certificate")


def _stamp(path: Path) -> tuple[int, int]:
    """What tells a changed file: its modification time (ns) and size."""
    st = path.stat()
    return st.st_mtime_ns, st.st_size
