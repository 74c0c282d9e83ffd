"""The LocalNetwork harness itself: its configuration, clear errors when a node cannot start, and no node process
outliving it (stop, an exception inside `with`, or the harness being SIGKILLed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from secureinfer.lab.simulate import LocalNetwork, SimulationConfig, SimulationError
from secureinfer.nodes.config import ConfigError, NodeConfig

from .conftest import node_processes


def _wait_gone(workdir: Path, timeout_s: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while node_processes(workdir) and time.monotonic() < deadline:
        time.sleep(0.2)
    return node_processes(workdir)


def test_config_is_checked_and_reaches_each_node_toml(tmp_path):
    with pytest.raises(ValueError, match="n_nodes"):
        SimulationConfig(n_nodes=0)
    with pytest.raises(ValueError, match="one tuple per node"):
        SimulationConfig(n_nodes=2, roles=(("secure",),))
    with pytest.raises(ConfigError, match="roles"):
        SimulationConfig(n_nodes=1, roles=(("gpu",),))
    with pytest.raises(ConfigError, match="record_ttl_s"):
        SimulationConfig(gossip_interval_s=2.0, record_ttl_s=1.0)
    with pytest.raises(ConfigError, match="bandwidth"):
        SimulationConfig(bandwidth_bytes_per_s=0.0)
    config = SimulationConfig(n_nodes=2, roles=(("secure",), ("plaintext",)), latency_s=0.004,
                              bandwidth_bytes_per_s=1.25e8)
    node = config.node_config(1, tmp_path / "certs", seeds=("127.0.0.1:7001",), port_file=tmp_path / "port")
    path = tmp_path / "node.toml"
    path.write_text(node.to_toml(relative_to=tmp_path))
    again = NodeConfig.from_file(path)
    assert again.roles == ("plaintext",) and again.seeds == ("127.0.0.1:7001",) and again.port == 0
    assert again.link.latency_s == 0.004 and again.link.bandwidth_bytes_per_s == 1.25e8
    assert again.port_file == tmp_path / "port"


def test_a_node_that_exits_during_start_is_a_clear_error(tmp_path):
    network = LocalNetwork(SimulationConfig(n_nodes=1, device="cuda:99", workdir=tmp_path / "bad"))
    start = time.monotonic()
    with pytest.raises(SimulationError, match=r"node-0 exited with status \d+ while starting") as failed:
        network.start()
    print(failed.value)
    assert "cuda" in str(failed.value).split("its log", 1)[1]  # the tail of the node's log says why
    assert time.monotonic() - start < 60
    assert node_processes(tmp_path / "bad") == []


def test_start_timeout_is_a_clear_error_and_cleans_up():
    network = LocalNetwork(SimulationConfig(n_nodes=1, start_timeout_s=0.05))
    with pytest.raises(SimulationError, match="did not bind a port within"):
        network.start()
    assert node_processes(network.workdir) == []
    assert not network.workdir.exists()  # a temporary workdir is removed


def test_with_block_stops_the_nodes_even_when_it_raises():
    with pytest.raises(RuntimeError, match="boom"):
        with LocalNetwork(SimulationConfig(n_nodes=1)) as network:
            assert network.health("node-0") == "SERVING" and len(node_processes(network.workdir)) == 1
            raise RuntimeError("boom")
    assert node_processes(network.workdir) == []
    assert not network.workdir.exists()
    network.stop()  # a second stop is harmless


def test_nodes_die_with_a_killed_harness(tmp_path):
    workdir = tmp_path / "orphans"
    script = ("import os, time\n"
              "from secureinfer.lab.simulate import LocalNetwork, SimulationConfig\n"
              "net = LocalNetwork(SimulationConfig(n_nodes=2, workdir=os.environ['SIM_WORKDIR'])).start()\n"
              "print('up', flush=True)\n"
              "time.sleep(600)\n")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "SIM_WORKDIR": str(workdir)}, start_new_session=True)
    try:
        assert process.stdout.readline().strip() == "up"
        assert len(node_processes(workdir)) == 2
        process.kill()  # SIGKILL: no finally, no atexit in the harness
        process.wait(timeout=30)
        assert _wait_gone(workdir) == []
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
