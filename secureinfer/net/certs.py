"""The network's certificate authority and the identities (certificate + key) of nodes, clients and model owners.

One directory holds the network CA (`ca.pem`, public: every member needs it to recognise the others; `ca.key`,
secret: only whoever admits new members needs it) and any number of identities (`{name}.pem` and `{name}.key`).
Keys are ECDSA P-256; signatures use SHA-256. A certificate's common name is its holder's name, its
organizational unit the holder's role, and its subject alternative names hold the name (so TLS can check a node by
name through `grpc.ssl_target_name_override`) plus the host names and addresses it serves on.

Operators. A node certificate's organization (O) names the operator who runs the node, as the CA asserts it when it
issues the certificate: a committee takes three nodes of three distinct operators, so that no one operator holds two
of a secret's three shares. A node certificate without an operator (issued before certificates carried one) is
refused as a node's, with a message saying to re-issue it; client and owner certificates carry no operator.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import ipaddress
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROLES = ("node", "client", "owner")
# Every node certificate names this too: dial a seed address with it as the TLS target name to reach "some node of
# this network" before knowing which; peers whose name is known are dialled by name instead.
NODE_SAN = "secureinfer-node"
CA_CERT = "ca.pem"
CA_KEY = "ca.key"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
# Certificates start this long before the moment they are made, so peers with slightly slow clocks accept them.
CLOCK_SKEW_S = 300.0


class CertError(Exception):
    """A certificate or key is missing, malformed, expired, not from this network's CA, or a signature is bad."""


@dataclass(frozen=True)
class PeerCert:
    """Who a verified certificate names: its holder's name and role, the SHA-256 of its DER encoding, and for a
    node the operator the CA says runs it ("" for clients and owners)."""

    name: str
    role: str
    fingerprint: str
    operator: str = ""


# ------------------------------------------------------------------------------------------------ files


def _write(path: Path, data: bytes, private: bool) -> None:
    """Write a file; private ones are created with mode 0600 (owner read/write only)."""
    if private:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an existing file (force=True) keeps its old mode otherwise
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)


def _read(path: Path, what: str) -> bytes:
    """Read a file, or raise CertError naming what it should have been."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CertError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise CertError(f"cannot read {what} {path}: {exc.strerror}") from None


def _load_cert(pem: bytes, what: str = "certificate") -> x509.Certificate:
    """Parse a PEM certificate, or raise CertError."""
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise CertError(f"{what} is not a valid PEM certificate: {exc}") from None


def _load_key(pem: bytes, what: str = "private key") -> ec.EllipticCurvePrivateKey:
    """Parse a PEM (unencrypted) EC private key, or raise CertError."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertError(f"{what} is not a valid unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{what} is not an elliptic-curve key")
    return key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """PKCS#8 PEM of a private key, unencrypted (protected by its file mode)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _utc(seconds: float) -> datetime.datetime:
    """A timezone-aware UTC datetime from unix seconds."""
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)


def _attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    """The first value of one attribute of a distinguished name, or ''."""
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else ""


def _fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 hex of a certificate's DER encoding."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def check_name(name: str) -> None:
    """Raise CertError unless name is a valid member name (letters, digits, '.', '_', '-'; at most 63 characters)."""
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise CertError(
            f"invalid name {name!r}: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if name == "ca":
        raise CertError("the name 'ca' is reserved for the network CA's own files")
    if name == NODE_SAN:
        raise CertError(f"the name {NODE_SAN!r} is reserved: every node certificate carries it")


def check_operator(operator: str) -> None:
    """Raise CertError unless operator is a valid operator name (the same characters as a member name)."""
    if not isinstance(operator, str) or NAME_PATTERN.fullmatch(operator) is None:
        raise CertError(
            f"invalid operator {operator!r}: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )


def _subject(name: str, role: str, operator: str | None) -> x509.Name:
    """A member certificate's subject: CN the name, OU the role and, for a node, O the operator who runs it."""
    if role == "node":
        if operator is None:
            raise CertError(f"a node certificate needs an operator (--operator NAME): who runs {name!r}; a "
                            "committee takes nodes of three distinct operators")
        check_operator(operator)
    elif operator is not None:
        raise CertError(f"only node certificates name an operator; {name!r} has the role {role!r}")
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, name),
                  x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role)]
    if operator is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, operator))
    return x509.Name(attributes)


# ------------------------------------------------------------------------------------------------ CA and issuing


def create_ca(
    directory: Path, common_name: str = "secureinfer network CA", days: int = 3650, force: bool = False
) -> Path:
    """Create the network CA in directory (ca.pem, ca.key) and return the path of ca.pem."""
    directory = Path(directory)
    if days <= 0:
        raise CertError(f"days must be positive, got {days}")
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if not force and (cert_path.exists() or key_path.exists()):
        raise CertError(
            f"a CA already exists in {directory}; replacing it invalidates every certificate it issued "
            "(pass force=True / --force to do so anyway)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = time.time() - CLOCK_SKEW_S
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_utc(start))
        .not_valid_after(_utc(start + days * 86400.0))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key), private=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return cert_path


def _san(name: str, role: str, hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    """DNS:name plus each host, as an IPAddress entry where it parses as one and a DNSName entry otherwise; node
    certificates also carry NODE_SAN, so a seed can be dialled before its name is known."""
    entries: list[x509.GeneralName] = [x509.DNSName(name)]
    if role == "node":
        entries.append(x509.DNSName(NODE_SAN))
    for host in hosts:
        if not host:
            raise CertError("empty host name")
        try:
            entry: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            entry = x509.DNSName(host)
        if entry not in entries:
            entries.append(entry)
    return x509.SubjectAlternativeName(entries)


def issue(
    directory: Path,
    name: str,
    role: str,
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    days: int = 825,
    not_before: float | None = None,
    force: bool = False,
    operator: str | None = None,
) -> Path:
    """Issue an identity signed by the CA in directory ({name}.pem, {name}.key) and return the path of {name}.pem.

    not_before (unix seconds) sets the start of validity (default: a few minutes ago); force replaces an identity
    that already exists; operator (required for a node, refused for other roles) names who runs the node.
    """
    directory = Path(directory)
    check_name(name)
    if role not in ROLES:
        raise CertError(f"invalid role {role!r}: expected one of {', '.join(ROLES)}")
    if days <= 0:
        raise CertError(f"days must be positive, got {days}")
    if isinstance(hosts, str):
        raise CertError("hosts must be a sequence of host names or addresses, not one string")
    subject = _subject(name, role, operator)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    if not force and (cert_path.exists() or key_path.exists()):
        raise CertError(
            f"an identity named {name!r} already exists in {directory} (pass force=True / --force to replace it)"
        )
    ca_cert = _load_cert(_read(directory / CA_CERT, "CA certificate"), "CA certificate")
    ca_key = _load_key(_read(directory / CA_KEY, "CA private key (only the CA's holder can issue)"), "CA private key")
    if ca_key.public_key().public_numbers() != ca_cert.public_key().public_numbers():
        raise CertError(f"{directory / CA_KEY} does not belong to {directory / CA_CERT}")
    key = ec.generate_private_key(ec.SECP256R1())
    start = time.time() - CLOCK_SKEW_S if not_before is None else float(not_before)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_utc(start))
        .not_valid_after(_utc(start + days * 86400.0))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .add_extension(_san(name, role, hosts), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key), private=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return cert_path


# ------------------------------------------------------------------------------------------------ verifying


def verify_certificate(cert_pem: bytes, ca_pem: bytes, now: float | None = None) -> PeerCert:
    """Check that the CA signed cert_pem, that it is a member (not CA) certificate, and that it is valid at now."""
    cert = _load_cert(cert_pem)
    ca = _load_cert(ca_pem, "CA certificate")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CertError(
            f"certificate {_attr(cert.subject, NameOID.COMMON_NAME)!r} was not issued by this network's CA "
            f"({_attr(ca.subject, NameOID.COMMON_NAME)!r})"
        ) from None
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise CertError("a CA certificate cannot identify a member")
    except x509.ExtensionNotFound:
        pass
    when = _utc(time.time() if now is None else now)
    if when < cert.not_valid_before_utc:
        raise CertError(f"certificate is not valid before {cert.not_valid_before_utc.isoformat()}")
    if when > cert.not_valid_after_utc:
        raise CertError(f"certificate expired at {cert.not_valid_after_utc.isoformat()}")
    return _peer(cert)


def _peer(cert: x509.Certificate) -> PeerCert:
    """The PeerCert of a (CA-checked) certificate; raise CertError where the name or role is missing or invalid, or
    a node's operator is (a node certificate issued before certificates named operators must be re-issued)."""
    name = _attr(cert.subject, NameOID.COMMON_NAME)
    role = _attr(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME)
    if NAME_PATTERN.fullmatch(name) is None:
        raise CertError(f"certificate common name {name!r} is not a valid member name")
    if role not in ROLES:
        raise CertError(f"certificate {name!r} has role (OU) {role!r}, expected one of {', '.join(ROLES)}")
    if role != "node":
        return PeerCert(name=name, role=role, fingerprint=_fingerprint(cert))
    operator = _attr(cert.subject, NameOID.ORGANIZATION_NAME)
    if not operator:
        raise CertError(f"node certificate {name!r} names no operator (issued before node certificates carried "
                        f"one); re-issue it: secureinfer certs issue --dir DIR --name {name} --role node "
                        "--operator NAME --force")
    try:
        check_operator(operator)
    except CertError as exc:
        raise CertError(f"node certificate {name!r}: {exc}") from None
    return PeerCert(name=name, role=role, fingerprint=_fingerprint(cert), operator=operator)


def operator_of(cert_pem: bytes) -> str:
    """The operator a node certificate names (O), read without judging the certificate; "" where it names none."""
    return _cached_operator(bytes(cert_pem))


@functools.lru_cache(maxsize=4096)
def _cached_operator(cert_pem: bytes) -> str:
    """operator_of, remembered per certificate: committee selection reads every record's operator."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return ""
    return _attr(cert.subject, NameOID.ORGANIZATION_NAME)


def verify_signature(cert_pem: bytes, data: bytes, signature: bytes) -> None:
    """Raise CertError unless signature is an ECDSA-SHA256 signature of data by cert_pem's key."""
    key = _load_cert(cert_pem).public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CertError("certificate does not hold an elliptic-curve key")
    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise CertError("bad signature") from None


def peer_from_context(context: Any) -> PeerCert:
    """Who is calling: the name and role of the client certificate of a grpc (or grpc.aio) ServicerContext."""
    auth = context.auth_context() or {}
    pems = auth.get("x509_pem_cert") or []
    if not pems:
        raise CertError("caller did not present a client certificate (unauthenticated connection)")
    cert = _load_cert(pems[0], "peer certificate")
    common = auth.get("x509_common_name") or []
    peer = _peer(cert)
    if common and common[0].decode(errors="replace") != peer.name:
        raise CertError(f"peer common name {common[0]!r} disagrees with its certificate ({peer.name!r})")
    return peer


# ------------------------------------------------------------------------------------------------ identities


@dataclass(frozen=True)
class Identity:
    """One member's certificate and key with the network CA's certificate: what it needs for mTLS and signing."""

    name: str
    role: str
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    operator: str = ""  # a node's operator, as its certificate names it; "" for clients and owners

    @classmethod
    def load(cls, directory: Path, name: str, now: float | None = None) -> "Identity":
        """Load {name}.pem, {name}.key and ca.pem from directory, checking that they belong together."""
        directory = Path(directory)
        check_name(name)
        cert_pem = _read(directory / f"{name}.pem", f"certificate of {name!r}")
        key_pem = _read(directory / f"{name}.key", f"private key of {name!r}")
        ca_pem = _read(directory / CA_CERT, "CA certificate")
        try:
            peer = verify_certificate(cert_pem, ca_pem, now)
        except CertError as exc:
            raise CertError(f"{directory / (name + '.pem')}: {exc}") from None
        if peer.name != name:
            raise CertError(f"{directory / (name + '.pem')} names {peer.name!r}, not {name!r}")
        key = _load_key(key_pem, f"private key of {name!r}")
        if key.public_key().public_numbers() != _load_cert(cert_pem).public_key().public_numbers():
            raise CertError(f"{directory / (name + '.key')} does not belong to {directory / (name + '.pem')}")
        return cls(name=name, role=peer.role, cert_pem=cert_pem, key_pem=key_pem, ca_pem=ca_pem,
                   operator=peer.operator)

    @property
    def fingerprint(self) -> str:
        """SHA-256 hex of this identity's certificate (DER)."""
        return _fingerprint(_load_cert(self.cert_pem))

    def server_credentials(self) -> grpc.ServerCredentials:
        """TLS server credentials that also demand a client certificate from this network's CA."""
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)], root_certificates=self.ca_pem, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """TLS channel credentials that trust only this network's CA and present this identity's certificate."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem, private_key=self.key_pem, certificate_chain=self.cert_pem
        )

    @staticmethod
    def channel_options(target_name: str) -> list[tuple[str, str]]:
        """Channel options that make TLS check the server's certificate for target_name (a node's name, or NODE_SAN
        for any node of the network)."""
        if target_name != NODE_SAN:
            check_name(target_name)
        return [("grpc.ssl_target_name_override", target_name)]

    def sign(self, data: bytes) -> bytes:
        """An ECDSA-SHA256 signature of data with this identity's key (DER encoded)."""
        return _load_key(self.key_pem).sign(data, ec.ECDSA(hashes.SHA256()))


def describe(directory: Path, name: str) -> dict[str, str]:
    """A certificate's name, role, operator, fingerprint, validity and SANs, read without judging it (for `certs
    show`)."""
    directory = Path(directory)
    check_name(name)
    cert = _load_cert(_read(directory / f"{name}.pem", f"certificate of {name!r}"))
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        alt = ", ".join(str(v) for v in [*sans.get_values_for_type(x509.DNSName),
                                         *sans.get_values_for_type(x509.IPAddress)])
    except x509.ExtensionNotFound:
        alt = ""
    return {
        "name": _attr(cert.subject, NameOID.COMMON_NAME),
        "role": _attr(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME),
        "operator": _attr(cert.subject, NameOID.ORGANIZATION_NAME),
        "fingerprint": _fingerprint(cert),
        "issuer": _attr(cert.issuer, NameOID.COMMON_NAME),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "hosts": alt,
    }
