"""Domain errors of a node, and the one place where any error becomes a gRPC status code."""

from __future__ import annotations

import asyncio

import grpc

from ..mpc.comm import CommError
from ..mpc.models.checkpoint import CheckpointError
from ..mpc.models.serving import RequestError
from ..mpc.models.weights import WeightsError
from .certs import CertError
from .frames import FrameError
from .transport import LinkTimeout


class NodeError(Exception):
    """A request this node refuses; `code` is the gRPC status the caller gets."""

    code = grpc.StatusCode.INTERNAL


class BadRequest(NodeError):
    """A malformed or inconsistent request (wrong task, committee, output or shape)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class UnknownModel(NodeError):
    """The model is not hosted here (or not by that committee)."""

    code = grpc.StatusCode.NOT_FOUND


class Unauthorized(NodeError):
    """The caller's certificate does not allow this (wrong role, or not the committee's node)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Busy(NodeError):
    """Too many sessions at once; try another node or later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class StoreFull(NodeError):
    """The node's performance store holds its maximum number of records."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class SessionExists(NodeError):
    """A session with this id is already open."""

    code = grpc.StatusCode.ALREADY_EXISTS


class SessionTimeout(NodeError):
    """The session's deadline passed."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class PeerFailed(NodeError):
    """Another participant of the session failed or went away."""

    code = grpc.StatusCode.UNAVAILABLE


class Cancelled(NodeError):
    """The session was cancelled by its caller or by a shutdown."""

    code = grpc.StatusCode.CANCELLED


_BY_TYPE: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (RequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (FrameError, grpc.StatusCode.INVALID_ARGUMENT),
    (CheckpointError, grpc.StatusCode.INVALID_ARGUMENT),
    (WeightsError, grpc.StatusCode.INVALID_ARGUMENT),
    (CertError, grpc.StatusCode.PERMISSION_DENIED),
    (LinkTimeout, grpc.StatusCode.DEADLINE_EXCEEDED),
    (CommError, grpc.StatusCode.UNAVAILABLE),
    (asyncio.CancelledError, grpc.StatusCode.CANCELLED),
    (asyncio.TimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
)


def root_cause(error: BaseException) -> BaseException:
    """The first NodeError or RequestError in the `__cause__` chain (a party's CommError often wraps it)."""
    seen = error
    while seen is not None:
        if isinstance(seen, (NodeError, RequestError, FrameError)):
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
