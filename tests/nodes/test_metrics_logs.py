"""NodeMetrics (values, isolation, HTTP endpoint) and JSON-lines logging (fields, errors, handlers)."""

from __future__ import annotations

import io
import json
import logging
import socket
import urllib.error
import urllib.request
from datetime import datetime, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from secureinfer.nodes.config import ConfigError
from secureinfer.nodes.logs import configure, log_event
from secureinfer.nodes.metrics import MetricsError, NodeMetrics


def samples(metrics: NodeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the rendered text, keyed by name and sorted labels."""
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_counters_after_events() -> None:
    m = NodeMetrics()
    m.session_started("encode", "secret")
    m.session_started("decode", "public")
    assert samples(m)[("secureinfer_active_sessions", ())] == 2
    m.session_finished("encode", "secret", "ok", seconds=1.5, bytes_sent=1000, rounds=40, client_bytes_sent=7)
    m.add_bytes_sent("client", 5)
    m.gossip_round()
    m.gossip_round()
    m.record_rejected(3)
    m.set_known_nodes(5)
    m.set_hosted_models(2)
    got = samples(m)
    assert got[("secureinfer_sessions_total", (("privacy", "secret"), ("status", "ok"), ("task", "encode")))] == 1
    assert got[("secureinfer_bytes_sent_total", (("peer_kind", "party"),))] == 1000
    assert got[("secureinfer_bytes_sent_total", (("peer_kind", "client"),))] == 12
    assert got[("secureinfer_rounds_total", ())] == 40
    assert got[("secureinfer_gossip_rounds_total", ())] == 2
    assert got[("secureinfer_rejected_records_total", ())] == 3
    assert got[("secureinfer_active_sessions", ())] == 1
    assert got[("secureinfer_known_nodes", ())] == 5
    assert got[("secureinfer_hosted_models", ())] == 2
    assert got[("secureinfer_session_seconds_count", (("task", "encode"),))] == 1
    assert got[("secureinfer_session_seconds_sum", (("task", "encode"),))] == 1.5
    assert got[("secureinfer_session_seconds_bucket", (("le", "1.0"), ("task", "encode")))] == 0
    assert got[("secureinfer_session_seconds_bucket", (("le", "2.5"), ("task", "encode")))] == 1
    text = m.render().decode()
    assert "# TYPE secureinfer_session_seconds histogram" in text


def test_instances_do_not_share_state() -> None:
    a, b = NodeMetrics(), NodeMetrics()  # would raise "Duplicated timeseries" on a shared registry
    a.gossip_round()
    a.session_started("encode", "secret")
    assert samples(a)[("secureinfer_gossip_rounds_total", ())] == 1
    assert samples(b)[("secureinfer_gossip_rounds_total", ())] == 0
    assert samples(b)[("secureinfer_active_sessions", ())] == 0


def test_bad_updates_are_refused() -> None:
    m = NodeMetrics()
    with pytest.raises(MetricsError, match="without a matching"):
        m.session_finished("encode", "secret", "ok", seconds=1.0)
    m.session_started("encode", "secret")
    with pytest.raises(MetricsError, match="seconds"):
        m.session_finished("encode", "secret", "ok", seconds=-1.0)
    with pytest.raises(MetricsError, match="status"):
        m.session_finished("encode", "secret", "", seconds=1.0)
    with pytest.raises(MetricsError, match="peer_kind"):
        m.add_bytes_sent("server", 1)
    with pytest.raises(MetricsError, match="count"):
        m.set_known_nodes(-1)
    assert samples(m)[("secureinfer_active_sessions", ())] == 1  # refused updates changed nothing


def test_http_endpoint_serves_and_closes() -> None:
    m = NodeMetrics()
    m.record_rejected(4)
    port = m.serve(0)
    try:
        assert port > 0 and m.port == port
        with pytest.raises(MetricsError, match="already serving"):
            m.serve(0)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
        assert "secureinfer_rejected_records_total 4.0" in body
        assert "python_gc_objects_collected_total" not in body  # our registry, not the default one
    finally:
        m.close()
    assert m.port is None
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    m.close()  # idempotent


def test_a_port_in_use_is_named_and_nothing_is_left_serving() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        m = NodeMetrics()
        with pytest.raises(MetricsError) as caught:
            m.serve(port)
    assert str(caught.value) == f"cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    assert m.port is None
    assert m.serve(0) > 0  # the failed attempt left the endpoint free to start
    m.close()


def read_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_logs_are_json_lines_with_extra_fields() -> None:
    stream = io.StringIO()
    logger = configure("node-a", "DEBUG", stream=stream)
    assert logger.name == "secureinfer.node.node-a" and logger.propagate is False
    logger.info("session done", extra={"session": "ab12", "peer": "node-b", "seconds": 1.25})
    log_event(logger, "warning", "slow link", peer="node-c", task="encode", status="slow")
    logger.debug("multi\nline %s", "arg")
    entries = read_lines(stream)
    assert len(entries) == 3
    first, second, third = entries
    assert first["msg"] == "session done" and first["level"] == "INFO" and first["node"] == "node-a"
    assert (first["session"], first["peer"], first["seconds"]) == ("ab12", "node-b", 1.25)
    ts = datetime.fromisoformat(first["ts"])
    assert ts.utcoffset() == timezone.utc.utcoffset(None)
    assert abs((datetime.now(timezone.utc) - ts).total_seconds()) < 60
    assert second["level"] == "WARNING" and second["task"] == "encode" and second["status"] == "slow"
    assert third["msg"] == "multi\nline arg"
    assert list(first)[:4] == ["ts", "level", "node", "msg"]


def test_logs_level_filter_and_exceptions() -> None:
    stream = io.StringIO()
    logger = configure("node-e", "WARNING", stream=stream)
    logger.info("hidden")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed", extra={"session": "s1"})
        log_event(logger, logging.ERROR, "again", exc_info=True, peer="p")
    entries = read_lines(stream)
    assert [e["msg"] for e in entries] == ["failed", "again"]
    assert "RuntimeError: boom" in entries[0]["error"] and entries[0]["session"] == "s1"
    assert "Traceback" in entries[1]["error"] and entries[1]["peer"] == "p"


def test_configure_is_idempotent_and_isolated(capsys: pytest.CaptureFixture[str]) -> None:
    first, second = io.StringIO(), io.StringIO()
    logger = configure("node-i", "INFO", stream=first)
    again = configure("node-i", "INFO", stream=second)
    assert again is logger
    assert len(logger.handlers) == 1
    logger.info("once")
    assert first.getvalue() == ""  # the replaced handler no longer writes
    assert len(read_lines(second)) == 1
    other = io.StringIO()
    configure("node-j", "INFO", stream=other).info("j only")
    assert len(read_lines(second)) == 1 and read_lines(other)[0]["node"] == "node-j"
    assert capsys.readouterr().err == ""  # nothing reached the root logger's stderr handler
    assert not any(getattr(h, "secureinfer_json", False) for h in logging.getLogger().handlers)


def test_reserved_fields_and_bad_levels() -> None:
    logger = configure("node-r", "INFO", stream=io.StringIO())
    with pytest.raises(ValueError, match="msg"):
        log_event(logger, "info", "x", msg="clash")
    with pytest.raises(ValueError, match="level"):
        log_event(logger, "info", "x", level="clash")
    with pytest.raises(ConfigError, match="LOUD"):
        configure("node-r", "LOUD")
    with pytest.raises(ConfigError, match="log level"):
        log_event(logger, "verbose", "x")


def test_default_stream_is_stderr_at_call_time(capsys: pytest.CaptureFixture[str]) -> None:
    logger = configure("node-s", "INFO")
    log_event(logger, "info", "to stderr", session="z")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and json.loads(err[0])["session"] == "z"
