"""The SDK's RequestFailed: a broken connection reported by gRPC's client core is a lost link, not a node's verdict."""

from __future__ import annotations

import grpc

from secureinfer.client.errors import CORE_LINK_ERROR, RequestFailed


def test_core_link_error_is_reported_as_unavailable_and_retryable():
    failed = RequestFailed(grpc.StatusCode.INTERNAL, CORE_LINK_ERROR, "node-2")
    assert failed.code == grpc.StatusCode.UNAVAILABLE and failed.retryable
    assert CORE_LINK_ERROR in failed.details and str(failed).startswith("UNAVAILABLE at node-2")


def test_a_node_sent_internal_stays_internal_and_final():
    failed = RequestFailed(grpc.StatusCode.INTERNAL, "worker crashed: shape mismatch", "node-1")
    assert failed.code == grpc.StatusCode.INTERNAL and not failed.retryable
    assert RequestFailed(grpc.StatusCode.INVALID_ARGUMENT, CORE_LINK_ERROR).code == grpc.StatusCode.INVALID_ARGUMENT
