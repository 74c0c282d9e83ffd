"""Domain errors of the network's services: each a request refused with the gRPC status its caller gets.

Raised by the pieces nodes and the SDK share (record checks, wire parsing) and by the daemon; `nodes/errors.py`
maps these and every other error to a status in one place.
"""

from __future__ import annotations

import grpc


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
