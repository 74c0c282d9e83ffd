"""`secureinfer node serve` with a setting it cannot use: one line on stderr naming the key and the address, exit
status 2, no traceback or warning, and nothing left running."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from secureinfer import cli
from secureinfer.net import certs
from secureinfer.nodes.config import NodeConfig
from secureinfer.nodes.daemon import NodeDaemon, StartupError

NODE = "node-a"


@pytest.fixture(scope="module")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    certs.create_ca(directory, common_name="test CA")
    certs.issue(directory, NODE, "node", operator="acme")
    return directory


def write_config(tmp_path: Path, identities: Path, **settings: object) -> Path:
    """node.toml for NODE on loopback (port 0 unless given) with `settings` in [node] (they win over these)."""
    settings = {"node_id": NODE, "host": "127.0.0.1", "certs_dir": str(identities), **settings}
    path = tmp_path / "node.toml"
    path.write_text("[node]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items()),
                    encoding="utf-8")
    return path


@contextmanager
def occupied(reuse_port: bool = False) -> Iterator[int]:
    """A loopback port some other program listens on (with SO_REUSEPORT, as a gRPC server binds)."""
    with socket.socket() as taken:
        if reuse_port:
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(config: Path) -> subprocess.CompletedProcess:
    """`secureinfer node serve --config CONFIG` as a real process (it must end by itself)."""
    return subprocess.run([sys.executable, "-m", "secureinfer", "node", "serve", "--config", str(config)],
                          capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------------------------------------ real processes


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain listener", "SO_REUSEPORT listener"])
def test_grpc_port_in_use_is_one_line_naming_port_and_address(tmp_path, certs_dir, reuse_port):
    with occupied(reuse_port) as port:
        out = serve(write_config(tmp_path, certs_dir, port=port))
    assert out.returncode == 2
    assert out.stderr == f"secureinfer node serve: port: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert out.stdout == ""


def test_metrics_port_in_use_is_one_line_naming_metrics_port_and_address(tmp_path, certs_dir):
    with occupied() as port:
        out = serve(write_config(tmp_path, certs_dir, metrics_port=port))
    assert out.returncode == 2
    assert out.stderr == (f"secureinfer node serve: metrics_port: cannot serve metrics on 127.0.0.1:{port}: "
                          "Address already in use\n")
    for noise in ("Traceback", "Event loop is closed", "never awaited", "Errno"):
        assert noise not in out.stderr


# ------------------------------------------------------------------------------------------------ in process


def test_a_failed_start_closes_what_it_opened(tmp_path, certs_dir):
    """A start that fails at its last step (the port file) frees the gRPC port it served on and the metrics endpoint,
    and the daemon counts as stopped."""
    port = free_port()

    async def attempt() -> NodeDaemon:
        daemon = NodeDaemon(NodeConfig(node_id=NODE, certs_dir=certs_dir, port=port, metrics_port=0,
                                       data_dir=tmp_path / "data", port_file=tmp_path / "missing" / "port",
                                       log_level="WARNING"))
        with pytest.raises(StartupError, match="^port_file: cannot write"):
            await daemon.start()
        await asyncio.wait_for(daemon.wait(), 1.0)
        return daemon

    daemon = asyncio.run(attempt())
    assert daemon.metrics.port is None
    with socket.socket() as again:  # no SO_REUSEADDR: bound only if nothing holds the port any more
        again.bind(("127.0.0.1", port))


@pytest.mark.parametrize("settings, line", [
    ({"certs_dir": "missing"}, "certs_dir: certificate of 'node-a' not found: {tmp}/missing/node-a.pem"),
    ({"revocation_list": "crl.pem"}, "revocation_list: revocation list not found: {tmp}/crl.pem"),
    ({"perf_store": "not-a-store"}, "perf_store: cannot open performance store {tmp}/not-a-store: file is not a "
                                    "database"),
    ({"data_dir": "not-a-store"}, "data_dir: cannot create {tmp}/not-a-store: File exists"),
    ({"port_file": "missing/dir/port"}, "port_file: cannot write {tmp}/missing/dir/port: No such file or directory"),
    ({"host": "no-such-host.invalid"}, "host: cannot resolve 'no-such-host.invalid': "),
    ({"metrics_port": 70000}, "metrics_port: port must be in 0..65535, got 70000"),
], ids=["certs_dir", "revocation_list", "perf_store", "data_dir", "port_file", "host", "metrics_port value"])
def test_each_setting_that_cannot_be_used_is_named(tmp_path, certs_dir, capsys, settings, line):
    (tmp_path / "not-a-store").write_text("not SQLite\n" * 100)
    config = write_config(tmp_path, certs_dir, log_level="WARNING", **settings)
    assert cli.main(["node", "serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("secureinfer node serve: " + line.format(tmp=tmp_path)) and err.count("\n") == 1, err
