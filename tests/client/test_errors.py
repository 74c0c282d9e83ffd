"""The SDK's one exception hierarchy: every error is a ClientError with its gRPC status code, the SDK's own
refusals keep the types callers caught before (ValueError, NetworkError), and a cancelled request is never retried."""

from __future__ import annotations

import grpc
import pytest

from secureinfer import client
from secureinfer.client import (Cancelled, ClientError, InvalidRequest, ModelNotFound, NetworkError, NotEnoughNodes,
                                RequestFailed)
from secureinfer.client.member import not_hosted, privacy_code
from secureinfer.net.membership import CommitteeView
from secureinfer.v1 import node_pb2


def test_every_sdk_error_is_a_client_error_with_its_code() -> None:
    cases = [(ModelNotFound("m"), grpc.StatusCode.NOT_FOUND, False),
             (InvalidRequest("bad ids"), grpc.StatusCode.INVALID_ARGUMENT, False),
             (Cancelled(), grpc.StatusCode.CANCELLED, False),
             (NotEnoughNodes("need 6"), grpc.StatusCode.FAILED_PRECONDITION, None),
             (RequestFailed(grpc.StatusCode.UNAVAILABLE, "node died", "n1"), grpc.StatusCode.UNAVAILABLE, True)]
    for error, code, retryable in cases:
        assert isinstance(error, ClientError) and isinstance(error, NetworkError) and error.code == code
        if retryable is not None:
            assert isinstance(error, RequestFailed) and error.retryable == retryable
    assert NetworkError("no seed answered").code is None
    assert isinstance(InvalidRequest("x"), ValueError) and not isinstance(NotEnoughNodes("x"), ValueError)
    assert set(client.__all__) >= {"ClientError", "InvalidRequest", "ModelNotFound", "NotEnoughNodes", "Cancelled"}


def test_client_side_checks_raise_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="privacy must be 'secret' or 'public'") as info:
        privacy_code("confidential")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and isinstance(info.value, ValueError)


def test_a_model_hosted_in_the_other_mode_is_not_found_naming_the_option() -> None:
    secret = CommitteeView("c", ("a", "b", "c"), ("a:1", "b:1", "c:1"), node_pb2.PRIVACY_SECRET)
    public = CommitteeView("w", ("a",), ("a:1",), node_pb2.PRIVACY_PUBLIC)
    assert "privacy='secret'" in str(not_hosted("m", "public", [secret]))
    assert "privacy='public'" in str(not_hosted("m", "secret", [public]))
    unknown = not_hosted("m", "secret", [])
    assert isinstance(unknown, ModelNotFound) and unknown.code == grpc.StatusCode.NOT_FOUND
    assert "privacy=" not in str(unknown)
