"""Certificate revocation: a CA-signed X.509 revocation list (`crl.pem`) that nodes check on every call and record.

The CA's holder revokes a certificate by its serial number (`secureinfer certs revoke`), which rewrites `crl.pem` in
the certificate directory: a standard X.509 CRL signed by the CA key, its number one higher each time. Nodes read it
from `revocation_list` in their config (default: `crl.pem` beside `ca.pem`, if present), refuse every incoming call
whose client certificate is on it (UNAUTHENTICATED, naming the certificate and the list), drop gossiped records
signed by a revoked certificate, and re-read the file when it changes, so a revocation needs no restart.
"""

from __future__ import annotations

import datetime
import inspect
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from secureinfer.net.certs import CA_CERT, CA_KEY, CertError, _load_cert, _load_key, _read, _utc

CRL_FILE = "crl.pem"
DEFAULT_VALID_DAYS = 365


class RevocationError(CertError):
    """A revocation list is missing, malformed, not signed by this network's CA, or a serial is not valid."""


@dataclass(frozen=True)
class RevocationList:
    """The serial numbers a network CA has revoked, as read from one verified CRL (number 0 with no serials: none)."""

    serials: frozenset[int]
    number: int = 0
    next_update: float | None = None  # unix seconds after which the CA meant to publish a newer list

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
                   next_update=None if after is None else after.timestamp())

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


# ------------------------------------------------------------------------------------------------ writing (the CA)


def revoke(directory: Path, serials: Iterable[int], days: int = DEFAULT_VALID_DAYS,
           out: Path | None = None) -> tuple[Path, RevocationList]:
    """Add `serials` to the CRL at `out` (default: crl.pem in `directory`; created if missing), sign it with the CA
    key in `directory`, write it atomically; returns its path and the new list."""
    directory = Path(directory)
    if days <= 0:
        raise RevocationError(f"days must be positive, got {days}")
    ca_pem = _read(directory / CA_CERT, "CA certificate")
    ca_cert = _load_cert(ca_pem, "CA certificate")
    ca_key = _load_key(_read(directory / CA_KEY, "CA private key (only the CA's holder can revoke)"),
                       "CA private key")
    if ca_key.public_key().public_numbers() != ca_cert.public_key().public_numbers():
        raise RevocationError(f"{directory / CA_KEY} does not belong to {directory / CA_CERT}")
    path = directory / CRL_FILE if out is None else Path(out)
    entries: dict[int, datetime.datetime] = {}
    number = 0
    if path.exists():
        number = RevocationList.load(path, ca_pem).number  # refuse to extend a list that is not this CA's
        entries = {e.serial_number: e.revocation_date_utc for e in x509.load_pem_x509_crl(path.read_bytes())}
    now = time.time()
    for serial in serials:
        if serial <= 0:
            raise RevocationError(f"serial {serial} must be positive")
        entries.setdefault(serial, _utc(now))
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(ca_cert.subject)
               .last_update(_utc(now))
               .next_update(_utc(now + days * 86400.0))
               .add_extension(x509.CRLNumber(number + 1), critical=False))
    for serial in sorted(entries):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(entries[serial]).build())
    pem = builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(pem)
    os.replace(tmp, path)
    return path, RevocationList.from_pem(pem, ca_pem)


# ------------------------------------------------------------------------------------------------ a node's view


class RevocationWatch:
    """A node's current revocation list, re-read from its file when the file changes (safe to share: reads are
    of one immutable RevocationList)."""

    def __init__(self, path: Path | None, ca_pem: bytes, required: bool) -> None:
        """`required`: the file must exist now (a configured path); otherwise a missing file means nothing revoked."""
        self.path = None if path is None else Path(path)
        self.ca_pem = ca_pem
        self.current = RevocationList.empty()
        self._stamp: tuple[int, int] | None = None
        if self.path is not None and (required or self.path.exists()):
            self.current = RevocationList.load(self.path, ca_pem)
            self._stamp = _stamp(self.path)

    def refresh(self) -> bool:
        """Re-read the file if it changed; True when the list changed. A bad or vanished file keeps the last good
        list and raises RevocationError (the caller logs it)."""
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
        changed = fresh != self.current
        self.current = fresh
        return changed

    def is_revoked(self, cert_pem: bytes) -> bool:
        """True when the certificate is on the current list (an unparsable certificate counts as revoked)."""
        try:
            return self.current.is_revoked(cert_pem)
        except CertError:
            return True

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


# ------------------------------------------------------------------------------------------------ the server gate


class RevocationInterceptor(grpc.aio.ServerInterceptor):
    """Refuses, with UNAUTHENTICATED, every call whose client certificate is revoked, before any servicer runs."""

    def __init__(self, watch: RevocationWatch, on_refuse: Callable[[str], None] | None = None) -> None:
        self.watch = watch
        self.on_refuse = on_refuse

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], details: Any) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        return _guarded(handler, self._refuse_revoked)

    async def _refuse_revoked(self, context: grpc.aio.ServicerContext) -> None:
        pems = (context.auth_context() or {}).get("x509_pem_cert") or []
        reason = self.watch.reason(pems[0]) if pems else None
        if reason is not None:
            if self.on_refuse is not None:
                self.on_refuse(reason)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)


def _guarded(handler: grpc.RpcMethodHandler, check: Callable[[Any], Awaitable[None]]) -> grpc.RpcMethodHandler:
    """A copy of `handler` whose behaviour first awaits `check(context)`."""
    kinds = (("unary_unary", grpc.unary_unary_rpc_method_handler),
             ("unary_stream", grpc.unary_stream_rpc_method_handler),
             ("stream_unary", grpc.stream_unary_rpc_method_handler),
             ("stream_stream", grpc.stream_stream_rpc_method_handler))
    for attribute, make in kinds:
        inner = getattr(handler, attribute)
        if inner is not None:
            return make(_wrap(inner, check), request_deserializer=handler.request_deserializer,
                        response_serializer=handler.response_serializer)
    return handler


def _wrap(inner: Callable[..., Any], check: Callable[[Any], Awaitable[None]]) -> Callable[..., Any]:
    """`inner` (a coroutine function or an async generator function) preceded by `check`."""
    if inspect.isasyncgenfunction(inner):
        async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            async for item in inner(request, context):
                yield item
        return stream

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await check(context)
        result = inner(request, context)
        return await result if inspect.isawaitable(result) else result
    return call
