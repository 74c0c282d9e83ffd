"""The SDK's committee failover: in order, on to the next placement only after a retryable failure, never twice to a
placement that failed, the last failure when nothing is left."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from secureinfer.client.connection import NetworkError, RequestFailed
from secureinfer.client.failover import failover
from secureinfer.net.membership import CommitteeView
from secureinfer.v1 import node_pb2

BUSY = grpc.StatusCode.RESOURCE_EXHAUSTED


def view(committee_id: str, *nodes: str) -> CommitteeView:
    return CommitteeView(committee_id, nodes, tuple(f"{n}:1" for n in nodes), node_pb2.PRIVACY_SECRET)


def failing(code: grpc.StatusCode, tried: list[str], name: str) -> Callable[[], str]:
    def attempt() -> str:
        tried.append(name)
        raise RequestFailed(code, f"{name} failed")
    return attempt


def succeeding(tried: list[str], name: str) -> Callable[[], str]:
    def attempt() -> str:
        tried.append(name)
        return name
    return attempt


def test_moves_on_after_a_retryable_failure_and_skips_a_placement_that_failed() -> None:
    tried: list[str] = []
    a, b = view("a", "n0", "n1", "n2"), view("b", "n3", "n4", "n5")
    attempts = [(a, failing(BUSY, tried, "a-first")), (a, succeeding(tried, "a-second")), (b, succeeding(tried, "b"))]
    assert failover(attempts, "none") == "b"
    assert tried == ["a-first", "b"]


def test_a_final_failure_is_raised_at_once() -> None:
    tried: list[str] = []
    a, b = view("a", "n0", "n1", "n2"), view("b", "n3", "n4", "n5")
    with pytest.raises(RequestFailed) as final:
        failover([(a, failing(grpc.StatusCode.INVALID_ARGUMENT, tried, "a")), (b, succeeding(tried, "b"))], "none")
    assert final.value.code == grpc.StatusCode.INVALID_ARGUMENT and tried == ["a"]


def test_when_nothing_is_left_the_last_failure_is_raised() -> None:
    tried: list[str] = []
    a, b = view("a", "n0", "n1", "n2"), view("b", "n3", "n4", "n5")
    with pytest.raises(RequestFailed, match="b failed"):
        failover([(a, failing(BUSY, tried, "a")), (b, failing(grpc.StatusCode.UNAVAILABLE, tried, "b"))], "none")
    with pytest.raises(NetworkError, match="no committee for 'tiny'") as nothing:
        failover([], "no committee for 'tiny'")
    assert not isinstance(nothing.value, RequestFailed)
