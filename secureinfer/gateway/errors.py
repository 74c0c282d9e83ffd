"""Errors as the OpenAI API sends them: an HTTP status and `{"error": {"message", "type", "param", "code"}}`.

The SDK's errors (secureinfer.client.errors) carry a gRPC status code; `from_client_error` maps it to the HTTP status
an OpenAI client expects: an unknown model 404, a bad request 400, a full node 429 with Retry-After, a committee that
is down 503, a deadline 504, an output that failed the client's cross-check (a party deviated) 502.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import grpc

from secureinfer.client.errors import ClientError, RequestFailed

DEFAULT_RETRY_AFTER_S = 1
RETRY_UNAVAILABLE_S = 5
# A node's admission refusal says when to retry ("... retry in 0.42 s"); the SDK passes the text on.
_RETRY_IN = re.compile(r"retry in (\d+(?:\.\d+)?) s")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 405: "invalid_request_error", 429: "rate_limit_error",
          499: "cancelled", 500: "server_error", 502: "bad_gateway", 503: "service_unavailable", 504: "timeout"}

_BY_CODE: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request"),
    grpc.StatusCode.NOT_FOUND: (404, "model_not_found"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_denied"),
    grpc.StatusCode.UNAUTHENTICATED: (403, "permission_denied"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "overloaded"),
    grpc.StatusCode.UNAVAILABLE: (503, "committee_unavailable"),
    grpc.StatusCode.FAILED_PRECONDITION: (503, "not_enough_nodes"),
    grpc.StatusCode.ABORTED: (503, "committee_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "deadline_exceeded"),
    grpc.StatusCode.CANCELLED: (499, "cancelled"),
    grpc.StatusCode.DATA_LOSS: (502, "output_mismatch"),  # a party altered its output share: the answer is withheld
}


@dataclass
class ApiError(Exception):
    """An error the gateway answers with: its HTTP status, message, the request field at fault and a short code."""

    status: int
    message: str
    code: str
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def type(self) -> str:
        """The OpenAI error type of this status."""
        return _TYPES.get(self.status, "server_error")

    def body(self) -> dict[str, dict[str, str | None]]:
        """The JSON body: {"error": {message, type, param, code}}."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None) -> ApiError:
    """400: the request is malformed or asks for something the engine does not do."""
    return ApiError(400, message, "invalid_request", param)


def model_not_found(model: str) -> ApiError:
    """404: no node of the network hosts `model`."""
    return ApiError(404, f"The model {model!r} does not exist on this network (GET /v1/models lists the hosted "
                         f"models)", "model_not_found", "model")


def overloaded(message: str, retry_after_s: float | None = None) -> ApiError:
    """429 with Retry-After (whole seconds, at least one)."""
    seconds = max(DEFAULT_RETRY_AFTER_S, int(-(-(retry_after_s or 0) // 1)))
    return ApiError(429, message, "overloaded", headers={"Retry-After": str(seconds)})


def committee_down(model: str, detail: str) -> ApiError:
    """503: the model is hosted, but no committee hosting it is whole right now."""
    return unavailable(f"No committee hosting {model!r} is whole right now: {detail}", "committee_unavailable")


def unavailable(message: str, code: str) -> ApiError:
    """503 with Retry-After: a node record lives a few seconds, so the network's view changes that soon."""
    return ApiError(503, message, code, headers={"Retry-After": str(RETRY_UNAVAILABLE_S)})


def from_client_error(exc: ClientError) -> ApiError:
    """The HTTP error for an SDK error, by its gRPC code (a NetworkError without one: the network could not be
    reached, 503)."""
    failed = exc if isinstance(exc, RequestFailed) else None
    details = (failed.details if failed is not None else "") or str(exc)
    where = f" (at {failed.node})" if failed is not None and failed.node else ""
    if exc.code is None:
        return unavailable(f"The network could not serve the request: {details}", "network_unavailable")
    status, code = _BY_CODE.get(exc.code, (500, "internal"))
    if status == 429:
        match = _RETRY_IN.search(details)
        return overloaded(f"The nodes are busy{where}: {details}", float(match.group(1)) if match else None)
    if status == 503:
        return unavailable(f"The committee could not serve the request{where}: {details}", code)
    return ApiError(status, details + where, code, "model" if status == 404 else None)
