"""Certificate revocation: a CA-signed X.509 revocation list (`crl.pem`) that nodes check on every call and record.

The CA's holder revokes a certificate by its serial number (`secureinfer certs revoke`), which rewrites `crl.pem` in
the certificate directory: a standard X.509 CRL signed by the CA key, its number one higher each time. Nodes read it
from `revocation_list` in their config (default: `crl.pem` beside `ca.pem`, if present), refuse every incoming call
whose client certificate is on it (UNAUTHENTICATED, naming the certificate and the list), drop gossiped records
signed by a revoked certificate, and re-read the file when it changes, so a revocation needs no restart; a list
older than the one held is refused (secureinfer/net/crl.py reads and orders lists for nodes and clients alike).
"""

from __future__ import annotations

import datetime
import inspect
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from secureinfer.net.certs import CA_CERT, CA_KEY, _load_cert, _load_key, _read, _utc
from secureinfer.net.crl import (CRL_FILE, RevocationError, RevocationList, RevocationWatch, certificate_serial,
                                 format_serial, parse_serial)

DEFAULT_VALID_DAYS = 365
# What the CA's tools and the daemon take from here; the list itself is read by secureinfer/net/crl.py, which
# clients share.
__all__ = ["CRL_FILE", "DEFAULT_VALID_DAYS", "RevocationError", "RevocationInterceptor", "RevocationList",
           "RevocationWatch", "certificate_serial", "format_serial", "parse_serial", "revoke"]


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
