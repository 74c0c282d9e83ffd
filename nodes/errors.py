"""The one place where any error a node meets becomes a gRPC status code (the domain errors: secureinfer.net.errors)."""

from __future__ import annotations

import asyncio

import grpc

from secureinfer.models.config import CheckpointError
from secureinfer.models.requests import RequestError
from secureinfer.mpc.comm import CommError
from secureinfer.mpc.models.weights import WeightsError
from secureinfer.mpc.protocols.sharing import InputError
from secureinfer.net.certs import CertError
from secureinfer.net.errors import NodeError
from secureinfer.net.frames import FrameError
from secureinfer.net.transport import LinkTimeout


_BY_TYPE: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (RequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (FrameError, grpc.StatusCode.INVALID_ARGUMENT),
    (CheckpointError, grpc.StatusCode.INVALID_ARGUMENT),
    (WeightsError, grpc.StatusCode.INVALID_ARGUMENT),
    (InputError, grpc.StatusCode.INVALID_ARGUMENT),  # before CommError: a malformed share is the sender's error
    (CertError, grpc.StatusCode.PERMISSION_DENIED),
    (LinkTimeout, grpc.StatusCode.DEADLINE_EXCEEDED),
    (CommError, grpc.StatusCode.UNAVAILABLE),
    (asyncio.CancelledError, grpc.StatusCode.CANCELLED),
    (asyncio.TimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
)


def root_cause(error: BaseException) -> BaseException:
    """The first NodeError, RequestError or malformed-input error in the `__cause__` chain (a party's CommError often
    wraps it)."""
    seen = error
    while seen is not None:
        if isinstance(seen, (NodeError, RequestError, FrameError, InputError, WeightsError)):
            return seen
        seen = seen.__cause__
    return error


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and a one-line message for `error`; unexpected errors say only 'internal error'."""
    error = root_cause(error)
    if isinstance(error, NodeError):
        return error.code, str(error)
    if isinstance(error, grpc.aio.AioRpcError):
        code = error.code()
        if code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return grpc.StatusCode.UNAVAILABLE, f"a peer failed: {error.details()}"
        return code, error.details() or code.name
    for kind, code in _BY_TYPE:
        if isinstance(error, kind):
            return code, str(error) or kind.__name__
    return grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}); see the node's log"
