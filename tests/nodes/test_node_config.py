"""NodeConfig: TOML round trip, relative paths, and the errors for unknown keys, bad types and bad values."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from secureinfer.nodes.admission import AdmissionSettings
from secureinfer.nodes.config import ConfigError, LinkSettings, NodeConfig


def write(tmp_path: Path, text: str, name: str = "node.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def full_config(tmp_path: Path) -> NodeConfig:
    """A config with every field away from its default (odd characters in strings included)."""
    return NodeConfig(
        node_id="node-1.a_b",
        host="::1",
        port=50051,
        advertise="[::1]:50051",
        roles=("plaintext",),
        device="cuda:1",
        certs_dir=tmp_path / "certs dir",
        seeds=("10.0.0.1:7000", "seed.example:7001"),
        data_dir=tmp_path / 'data "quoted" \\ dir',
        metrics_port=9100,
        gossip_interval_s=0.25,
        record_ttl_s=2.5,
        max_sessions=8,
        client_rate_per_s=2.5,
        client_burst=3,
        client_max_sessions=5,
        session_max_rows=7,
        session_memory_bytes=3 << 20,
        max_model_bytes=1 << 20,
        session_timeout_s=30.0,
        max_message_bytes=8 * 1024 * 1024,
        link=LinkSettings(latency_s=0.005, bandwidth_bytes_per_s=1.25e8),
        log_level="DEBUG",
        port_file=tmp_path / "ports" / "node-1.port",
    )


def test_round_trip_every_field(tmp_path: Path) -> None:
    config = full_config(tmp_path)
    path = write(tmp_path, config.to_toml())
    again = NodeConfig.from_file(path)
    assert again == config
    assert again.to_toml() == config.to_toml()


def test_round_trip_defaults_leave_out_none(tmp_path: Path) -> None:
    config = NodeConfig(node_id="n0", certs_dir=tmp_path)
    text = config.to_toml()
    assert "advertise" not in text and "metrics_port" not in text and "bandwidth_bytes_per_s" not in text
    assert NodeConfig.from_file(write(tmp_path, text)) == config


def test_to_toml_relative_to_makes_a_portable_file(tmp_path: Path) -> None:
    config = NodeConfig(node_id="n0", certs_dir=tmp_path / "certs", data_dir=tmp_path / "data")
    text = config.to_toml(relative_to=tmp_path)
    assert 'certs_dir = "certs"' in text
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    loaded = NodeConfig.from_file(write(moved, text))
    assert loaded.certs_dir == moved / "certs"
    assert loaded.data_dir == moved / "data"


def test_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    path = write(
        sub,
        """
        [node]
        node_id = "alpha"
        certs_dir = "certs"
        data_dir = "../state/alpha"
        port_file = "/abs/alpha.port"
        """,
    )
    config = NodeConfig.from_file(path)
    assert config.certs_dir == sub / "certs"
    assert config.data_dir == tmp_path / "state" / "alpha"
    assert config.port_file == Path("/abs/alpha.port")
    assert config.cert_path == sub / "certs" / "alpha.pem"
    assert config.key_path == sub / "certs" / "alpha.key"
    assert config.ca_path == sub / "certs" / "ca.pem"


def test_ints_accepted_for_floats_and_lists_become_tuples(tmp_path: Path) -> None:
    config = NodeConfig.from_mapping(
        {"node": {"node_id": "a", "certs_dir": "c", "gossip_interval_s": 2, "record_ttl_s": 20,
                  "seeds": ["h:1"], "log_level": "warning"}, "link": {"latency_s": 1}},
        tmp_path,
    )
    assert isinstance(config.gossip_interval_s, float) and config.gossip_interval_s == 2.0
    assert config.seeds == ("h:1",)
    assert config.log_level == "WARNING"
    assert config.link == LinkSettings(latency_s=1.0)


def test_unknown_key_is_named_with_the_allowed_ones(tmp_path: Path) -> None:
    path = write(tmp_path, '[node]\nnode_id = "a"\ncerts_dir = "c"\ngosip_interval_s = 1.0\n')
    with pytest.raises(ConfigError, match="gosip_interval_s") as info:
        NodeConfig.from_file(path)
    assert "gossip_interval_s" in str(info.value) and "certs_dir" in str(info.value)
    with pytest.raises(ConfigError, match="bandwith"):
        NodeConfig.from_mapping({"node": {"node_id": "a", "certs_dir": "c"}, "link": {"bandwith": 1}}, tmp_path)
    with pytest.raises(ConfigError, match="'nodes'"):
        NodeConfig.from_mapping({"nodes": {}}, tmp_path)


@pytest.mark.parametrize(
    "key, value",
    [
        ("port", '"50051"'),
        ("port", "true"),
        ("port", "1.5"),
        ("roles", '"secure"'),
        ("roles", "[1, 2]"),
        ("certs_dir", "3"),
        ("gossip_interval_s", '"fast"'),
        ("metrics_port", "[9100]"),
        ("node_id", "7"),
    ],
)
def test_wrong_type_names_the_key(tmp_path: Path, key: str, value: str) -> None:
    node = {"node_id": '"a"', "certs_dir": '"c"', key: value}
    text = "[node]\n" + "".join(f"{k} = {v}\n" for k, v in node.items())
    with pytest.raises(ConfigError, match=rf"^{key}: expected"):
        NodeConfig.from_file(write(tmp_path, text))


def test_wrong_link_type_names_the_key(tmp_path: Path) -> None:
    text = '[node]\nnode_id = "a"\ncerts_dir = "c"\n[link]\nlatency_s = "5ms"\n'
    with pytest.raises(ConfigError, match="link.latency_s"):
        NodeConfig.from_file(write(tmp_path, text))


def test_missing_required_keys_and_tables(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="certs_dir"):
        NodeConfig.from_mapping({"node": {"node_id": "a"}}, tmp_path)
    with pytest.raises(ConfigError, match="node_id"):
        NodeConfig.from_mapping({"node": {"certs_dir": "c"}}, tmp_path)
    with pytest.raises(ConfigError, match=r"\[node\]"):
        NodeConfig.from_mapping({"link": {}}, tmp_path)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        NodeConfig.from_file(write(tmp_path, "[node\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        NodeConfig.from_file(tmp_path / "absent.toml")


@pytest.mark.parametrize("node_id", ["", "-lead", ".x", "a b", "a/b", "é", "x" * 64])
def test_invalid_node_id(tmp_path: Path, node_id: str) -> None:
    with pytest.raises(ConfigError, match="node_id"):
        NodeConfig(node_id=node_id, certs_dir=tmp_path)


def test_longest_node_id_is_valid(tmp_path: Path) -> None:
    assert NodeConfig(node_id="x" * 63, certs_dir=tmp_path).node_id == "x" * 63


@pytest.mark.parametrize("roles", [(), ("secure", "admin"), ("secure", "secure"), ("SECURE",)])
def test_invalid_roles(tmp_path: Path, roles: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError, match="roles"):
        NodeConfig(node_id="a", certs_dir=tmp_path, roles=roles)


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"port": -1}, "port"),
        ({"port": 65536}, "port"),
        ({"metrics_port": 70000}, "metrics_port"),
        ({"advertise": "host"}, "advertise"),
        ({"advertise": "host:0"}, "advertise"),
        ({"advertise": "::1:80"}, "advertise"),
        ({"seeds": ("ok:1", "bad:port")}, "seeds"),
        ({"device": "gpu"}, "device"),
        ({"device": "cuda:"}, "device"),
        ({"gossip_interval_s": 0.0}, "gossip_interval_s"),
        ({"session_timeout_s": -1.0}, "session_timeout_s"),
        ({"record_ttl_s": 1.0}, "record_ttl_s"),  # must exceed the 1.0 s gossip interval
        ({"max_sessions": 0}, "max_sessions"),
        ({"max_message_bytes": 1024}, "max_message_bytes"),
        ({"log_level": "LOUD"}, "log_level"),
        ({"host": ""}, "host"),
        ({"gossip_interval_s": float("nan")}, "gossip_interval_s"),
        ({"session_max_rows": 0}, "session_max_rows"),
        ({"session_memory_bytes": 1000}, "session_memory_bytes"),
        ({"max_model_bytes": 0}, "max_model_bytes"),
    ],
)
def test_out_of_range_values(tmp_path: Path, changes: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}:"):
        NodeConfig(node_id="a", certs_dir=tmp_path, **changes)


def test_edge_ports_are_valid(tmp_path: Path) -> None:
    config = NodeConfig(node_id="a", certs_dir=tmp_path, port=65535, metrics_port=0, advertise="h:65535")
    assert (config.port, config.metrics_port) == (65535, 0)


def test_link_settings() -> None:
    with pytest.raises(ConfigError, match="link.latency_s"):
        LinkSettings(latency_s=-0.1)
    with pytest.raises(ConfigError, match="link.bandwidth_bytes_per_s"):
        LinkSettings(bandwidth_bytes_per_s=0)
    assert LinkSettings(latency_s=0.01, bandwidth_bytes_per_s=1000).delay_for(500) == pytest.approx(0.51)
    assert LinkSettings(latency_s=0.01).delay_for(10**9) == pytest.approx(0.01)


def test_config_is_frozen(tmp_path: Path) -> None:
    config = NodeConfig(node_id="a", certs_dir=str(tmp_path))
    assert config.certs_dir == tmp_path  # strings become paths
    with pytest.raises(AttributeError):
        config.port = 1  # type: ignore[misc]


def test_resolved_device_and_advertised_address(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    assert NodeConfig(node_id="a", certs_dir=tmp_path, device="cuda:1").resolved_device() == "cuda:1"
    auto = NodeConfig(node_id="a", certs_dir=tmp_path, device="auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert auto.resolved_device() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert auto.resolved_device() == "cuda"
    assert NodeConfig(node_id="a", certs_dir=tmp_path).advertised_address(4242) == "127.0.0.1:4242"
    assert NodeConfig(node_id="a", certs_dir=tmp_path, host="::1").advertised_address(1) == "[::1]:1"
    assert NodeConfig(node_id="a", certs_dir=tmp_path, advertise="pub:9").advertised_address(1) == "pub:9"


def test_check_files(tmp_path: Path) -> None:
    config = NodeConfig(node_id="n1", certs_dir=tmp_path)
    with pytest.raises(ConfigError, match="n1.key"):
        config.check_files()
    for name in ("ca.pem", "n1.pem", "n1.key"):
        (tmp_path / name).write_text("x")
    config.check_files()


def test_session_limits_and_their_defaults(tmp_path: Path) -> None:
    """Bounds before allocation are on by default: 64 rows a step, a 1 GiB session budget whose links hold at most
    64 MiB unread each, 8 GiB a hosted model; a smaller budget also lowers what a link holds."""
    config = NodeConfig(node_id="n0", certs_dir=tmp_path)
    assert (config.session_max_rows, config.session_memory_bytes, config.max_model_bytes) == (64, 1 << 30, 8 << 30)
    assert config.inbox_bytes == 64 << 20
    assert NodeConfig(node_id="n0", certs_dir=tmp_path, session_memory_bytes=2 << 20).inbox_bytes == 2 << 20


def test_the_serve_help_example_is_a_valid_config_showing_the_defaults(tmp_path: Path) -> None:
    """`secureinfer node serve --help` shows a TOML example: it parses, and the limits it shows are the defaults."""
    from secureinfer.cli.node import NODE_EXAMPLE

    text = textwrap.dedent(NODE_EXAMPLE.split("\n", 1)[1])
    config = NodeConfig.from_file(write(tmp_path, text))
    default = NodeConfig(node_id=config.node_id, certs_dir=config.certs_dir)
    for key in ("max_sessions", "client_rate_per_s", "client_burst", "client_max_sessions", "session_max_rows",
                "session_memory_bytes", "max_model_bytes"):
        assert f"\n  {key} = " in NODE_EXAMPLE, key
    assert AdmissionSettings.from_config(config) == AdmissionSettings.from_config(default)
    for key in ("max_sessions", "session_max_rows", "session_memory_bytes", "max_model_bytes"):
        assert getattr(config, key) == getattr(default, key), key
    assert config.data_dir == tmp_path / "data" and "models.key" in NODE_EXAMPLE
