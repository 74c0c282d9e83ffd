"""The gateway's pieces that need no network: the HTTP status of every SDK error, the settings and their checks,
the request parser's neutral values, and the status board's memory of nodes."""

from __future__ import annotations

import time

import grpc
import pytest

from secureinfer.client import (Cancelled, InvalidRequest, ModelNotFound, NetworkError, NotEnoughNodes,
                                OutputMismatch, RequestFailed)
from secureinfer.gateway import GatewayConfig, exposure_warnings, parse_listen
from secureinfer.gateway.board import Finished, NodeBoard, RecentRequests
from secureinfer.gateway.config import ConfigError
from secureinfer.gateway.errors import ApiError, from_client_error
from secureinfer.gateway.params import AUTO, DEFAULT, Routing, chat_request, completion_request, resolve
from secureinfer.v1 import node_pb2


@pytest.mark.parametrize("error,status,code", [
    (ModelNotFound("no committee hosts 'x'"), 404, "model_not_found"),
    (InvalidRequest("bad ids"), 400, "invalid_request"),
    (RequestFailed(grpc.StatusCode.INVALID_ARGUMENT, "wrong shape", "node-1"), 400, "invalid_request"),
    (RequestFailed(grpc.StatusCode.PERMISSION_DENIED, "not a client"), 403, "permission_denied"),
    (RequestFailed(grpc.StatusCode.RESOURCE_EXHAUSTED, "node is serving its maximum of 4 sessions"), 429,
     "overloaded"),
    (RequestFailed(grpc.StatusCode.UNAVAILABLE, "a peer failed"), 503, "committee_unavailable"),
    (RequestFailed(grpc.StatusCode.INTERNAL, "Internal error from Core"), 503, "committee_unavailable"),
    (NotEnoughNodes("publishing needs 3 usable nodes, 2 are"), 503, "not_enough_nodes"),
    (NetworkError("no seed node answered"), 503, "network_unavailable"),
    (RequestFailed(grpc.StatusCode.DEADLINE_EXCEEDED, "late"), 504, "deadline_exceeded"),
    (Cancelled(), 499, "cancelled"),
    (OutputMismatch("party 1 altered an output share", ("node-1",)), 502, "output_mismatch"),
    (RequestFailed(grpc.StatusCode.INTERNAL, "internal error (KeyError)"), 500, "internal"),
])
def test_every_sdk_error_has_its_http_status(error: Exception, status: int, code: str) -> None:
    api = from_client_error(error)
    assert (api.status, api.code) == (status, code)
    assert api.body()["error"]["message"] and api.body()["error"]["type"]
    assert ("Retry-After" in api.headers) == (status in (429, 503))


def test_a_node_that_says_when_to_retry_sets_retry_after_in_whole_seconds() -> None:
    limited = RequestFailed(grpc.StatusCode.RESOURCE_EXHAUSTED, "client alice is over its rate (2/s, burst 4): "
                                                                "retry in 2.30 s", "node-0")
    assert from_client_error(limited).headers == {"Retry-After": "3"}
    soon = RequestFailed(grpc.StatusCode.RESOURCE_EXHAUSTED, "retry in 0.01 s")
    assert from_client_error(soon).headers == {"Retry-After": "1"}


def test_settings_are_checked() -> None:
    assert GatewayConfig().loopback and GatewayConfig().base_url == "http://127.0.0.1:8080"
    assert GatewayConfig(host="::1").loopback and GatewayConfig(host="localhost").loopback
    assert not GatewayConfig(host="0.0.0.0").loopback and GatewayConfig(host="::", port=1).base_url == "http://[::]:1"
    for bad in ({"port": 65536}, {"api_key": "short"}, {"api_key": "has a space"}, {"max_concurrent": 0},
                {"refresh_s": 0.0}, {"host": ""}):
        with pytest.raises(ConfigError):
            GatewayConfig(**bad)


def test_listen_addresses_parse() -> None:
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:0") == ("::1", 0) and parse_listen("localhost:9") == ("localhost", 9)
    for bad in ("8080", ":8080", "host:", "::1:80", "h:99999"):
        with pytest.raises(ConfigError):
            parse_listen(bad)


def test_exposure_warnings_only_beyond_loopback() -> None:
    assert exposure_warnings(GatewayConfig()) == [] and exposure_warnings(GatewayConfig(host="::1")) == []
    assert len(exposure_warnings(GatewayConfig(host="0.0.0.0"))) == 2
    assert len(exposure_warnings(GatewayConfig(host="192.0.2.1", api_key="k" * 16))) == 1


def test_neutral_values_of_unsupported_parameters_pass() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 1, "stop": [], "logprobs": False,
            "presence_penalty": 0, "frequency_penalty": 0.0, "logit_bias": {}, "tools": [], "user": "me",
            "metadata": {"a": "b"}, "temperature": None}
    req = chat_request(body)
    assert req.generation.sampling.temperature == 1.0 and req.generation.routing == Routing()
    assert req.messages == ({"role": "user", "content": "x"},)


def test_message_parts_and_developer_messages_become_text_turns() -> None:
    req = chat_request({"model": "m", "messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]})
    assert req.messages == ({"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"})


def test_a_batch_of_one_prompt_is_one_prompt_and_a_batch_of_two_is_refused() -> None:
    assert completion_request({"model": "m", "prompt": ["hi"]}).prompt == "hi"
    assert completion_request({"model": "m", "prompt": [[5, 6]]}).prompt == (5, 6)
    with pytest.raises(ApiError, match="one prompt per request"):
        completion_request({"model": "m", "prompt": ["a", "b"]})


def test_a_left_out_strategy_is_auto_but_the_default_for_public_encoders() -> None:
    assert resolve(Routing(), causal=True).strategy == AUTO and resolve(Routing(), causal=False).strategy == AUTO
    assert resolve(Routing(privacy="public"), causal=True).strategy == AUTO
    assert resolve(Routing(privacy="public"), causal=False).strategy == DEFAULT
    assert resolve(Routing(privacy="public", strategy=AUTO), causal=False).strategy == AUTO


def test_the_board_keeps_a_node_whose_record_expired_as_down() -> None:
    record = node_pb2.NodeRecord(node_id="node-9", address="127.0.0.1:1", roles=["secure"], healthy=True,
                                 issued_at=time.time(), ttl_s=5.0)

    class View:
        def __init__(self, records: list) -> None:
            self.records = records

        def live(self) -> list:
            return self.records

    board = NodeBoard()
    assert [n["health"] for n in board.nodes(View([record]))] == ["up"]
    down = board.nodes(View([]), now=time.time() + 30)
    assert [(n["node_id"], n["health"]) for n in down] == [("node-9", "down")] and down[0]["seen_s_ago"] >= 29
    assert board.nodes(None)[0]["health"] == "down"  # the view could not be read at all


def test_recent_requests_summarise_latency_per_mode() -> None:
    recent = RecentRequests(3)
    for latency, status, mode in ((1.0, 200, "secure"), (3.0, 200, "secure"), (0.1, 200, "plaintext"),
                                  (9.0, 503, "secure")):
        recent.add(Finished(at=0.0, endpoint="chat", model="m", mode=mode, status=status, latency_s=latency))
    summary = recent.by_mode()
    assert len(recent.items()) == 3  # the oldest fell out
    assert summary["secure"] == {"requests": 2, "failed": 1, "mean_s": 3.0, "median_s": 3.0, "max_s": 3.0}
    assert summary["plaintext"]["requests"] == 1


def test_the_board_shows_the_operator_the_ca_named(tmp_path) -> None:
    from secureinfer.net.certs import create_ca, issue

    create_ca(tmp_path)
    pem = issue(tmp_path, "node-9", "node", operator="acme").read_bytes()
    record = node_pb2.NodeRecord(node_id="node-9", address="127.0.0.1:1", roles=["secure"], healthy=True,
                                 issued_at=time.time(), ttl_s=5.0, certificate_pem=pem)

    class View:
        def live(self) -> list:
            return [record, node_pb2.NodeRecord(node_id="node-8", issued_at=time.time(), ttl_s=5.0)]

    assert [(n["node_id"], n["operator"]) for n in NodeBoard().nodes(View())] == [("node-8", ""), ("node-9", "acme")]
