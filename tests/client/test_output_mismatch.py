"""The SDK's OutputMismatch: the engine's verdict on an output that failed the cross-check, with its parties named as
the committee's nodes (DATA_LOSS, never retried)."""

from __future__ import annotations

import grpc

from secureinfer.client import OutputMismatch, RequestFailed
from secureinfer.client.connection import _deviation
from secureinfer.mpc.protocols import reveal
from secureinfer.net.membership import CommitteeView

VIEW = CommitteeView("c1", ("node-a", "node-b", "node-c"), ("", "", ""), privacy=1)


def test_one_named_party_is_its_node() -> None:
    error = _deviation(reveal.OutputMismatch(("P1",), "P1 sent the client a copy it did not vouch for", 2), VIEW)
    assert isinstance(error, RequestFailed) and isinstance(error, OutputMismatch)
    assert error.code == grpc.StatusCode.DATA_LOSS and not error.retryable
    assert error.nodes == ("node-b",) and error.node == "node-b"
    assert "node-b (P1) sent the client" in str(error) and "output step 2" in str(error)


def test_a_pair_names_both_nodes_and_no_single_one() -> None:
    error = _deviation(reveal.OutputMismatch(("P2", "P0"), "P2 and P0 disagree", 0), VIEW)
    assert error.nodes == ("node-c", "node-a") and error.node == ""
    assert "node-c or node-a" in str(error)
