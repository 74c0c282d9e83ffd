"""The SDK's errors: one hierarchy under `ClientError`, each carrying the gRPC status `code` that says why.

    ClientError                      anything the SDK raises for a request it could not serve; `code` or None
    ├── NetworkError                 the network could not serve it (no seed answered, too few nodes)
    │   ├── NotEnoughNodes           FAILED_PRECONDITION: fewer live, usable nodes than publishing needs
    │   └── RequestFailed            a request ended with a status, sent by a node or found by the SDK's own checks
    │       ├── ModelNotFound        NOT_FOUND: no node hosts the model (in the privacy mode asked for)
    │       ├── InvalidRequest       INVALID_ARGUMENT, caught here before anything is sent (also a ValueError)
    │       ├── OutputMismatch       DATA_LOSS: the two copies of an output component disagree (a party deviated)
    │       └── Cancelled            CANCELLED: the caller stopped the request (e.g. broke out of Client.stream)

Codes a node sends arrive as a plain RequestFailed: INVALID_ARGUMENT (malformed request, wrong shape), NOT_FOUND,
PERMISSION_DENIED (a certificate without the right role), UNAVAILABLE (a committee node died or is unreachable),
DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED (an oversized message or a full node).
"""

from __future__ import annotations

import grpc

# NOT_FOUND too: the membership view said the committee hosts the model, so a node that does not (it restarted
# empty, or dropped the model) means the view is stale and another committee may still serve the request.
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
             grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.NOT_FOUND)
# gRPC's client core reports a read or write on a stream whose connection broke (a node process died, or the node
# already ended the stream) as INTERNAL with this text. It is the client library's, not a status a node sent.
CORE_LINK_ERROR = "Internal error from Core"


class ClientError(Exception):
    """An SDK request that could not be served; `code` is its gRPC status where one applies (else None)."""

    code: grpc.StatusCode | None = None


class NetworkError(ClientError, RuntimeError):
    """The network could not serve a request (no node reachable, no committee for a model, too few nodes)."""


class NotEnoughNodes(NetworkError):
    """Publishing needs more live, usable nodes than the membership view shows (the message says how many)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class RequestFailed(NetworkError):
    """A request ended with a gRPC status; `code` says why (NOT_FOUND, INVALID_ARGUMENT, UNAVAILABLE, ...), `node`
    which node sent it ("" when the SDK's own check found it). The client library's own INTERNAL for a broken
    connection (CORE_LINK_ERROR) is reported as UNAVAILABLE: the link to that node was lost, which another
    committee may not suffer."""

    def __init__(self, code: grpc.StatusCode, details: str, node: str = "") -> None:
        if code == grpc.StatusCode.INTERNAL and details == CORE_LINK_ERROR:
            code, details = grpc.StatusCode.UNAVAILABLE, f"connection lost ({CORE_LINK_ERROR})"
        where = f" at {node}" if node else ""
        super().__init__(f"{code.name}{where}: {details}")
        self.code: grpc.StatusCode = code
        self.details, self.node = details, node

    @property
    def retryable(self) -> bool:
        """Whether another committee might succeed (a node died, was busy, or ran out of time)."""
        return self.code in RETRYABLE


class ModelNotFound(RequestFailed):
    """NOT_FOUND from the SDK's own look-up: no node of the membership view hosts the model as asked."""

    def __init__(self, details: str) -> None:
        super().__init__(grpc.StatusCode.NOT_FOUND, details)

    @property
    def retryable(self) -> bool:
        """No: the SDK looked at every committee the network lists (a node's own NOT_FOUND is retryable)."""
        return False


class InvalidRequest(RequestFailed, ValueError):
    """INVALID_ARGUMENT found before anything is sent: bad token ids or text, a bad privacy, strategy or option;
    also a ValueError, as these checks always were."""

    def __init__(self, details: str) -> None:
        super().__init__(grpc.StatusCode.INVALID_ARGUMENT, details)


class OutputMismatch(RequestFailed):
    """DATA_LOSS: an output failed the client's cross-check (its two copies from the parties that hold each component
    disagree, or a party's voucher contradicts what it sent), so some party deviated and the result is withheld.
    `nodes` names the deviating node, or the two nodes of which one deviated where the evidence cannot tell (then
    `node` is ""). Never retried: the caller decides whether to trust that committee again."""

    def __init__(self, details: str, nodes: tuple[str, ...]) -> None:
        super().__init__(grpc.StatusCode.DATA_LOSS, details, nodes[0] if len(nodes) == 1 else "")
        self.nodes = nodes


class Cancelled(RequestFailed):
    """CANCELLED: the caller stopped the request (breaking out of `Client.stream`); never retried."""

    def __init__(self, details: str = "cancelled by the client") -> None:
        super().__init__(grpc.StatusCode.CANCELLED, details)
