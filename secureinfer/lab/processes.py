"""The node processes of a local network: how each is launched, signalled and reaped, and its gRPC health.

A node runs `secureinfer node serve` through LAUNCHER, in its own process group, so that it dies with the thread
that started it (Linux) and a signal reaches the node and anything it started.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc

from secureinfer.net.certs import Identity

HOST = "127.0.0.1"  # where a local network's nodes listen, unless placed elsewhere (netns.py)

# Runs `secureinfer <args>` after asking the kernel to SIGKILL this process when its parent (the thread that
# spawned it) dies; exits at once if that parent is already gone. argv: parent pid, then the CLI arguments.
LAUNCHER = (
    "import os, signal, sys\n"
    "if sys.platform.startswith('linux'):\n"
    "    import ctypes\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG\n"
    "    if os.getppid() != int(sys.argv[1]):\n"
    "        os._exit(70)\n"
    "from secureinfer.cli import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


@dataclass
class NodeProcess:
    """One node process of the local network."""

    node_id: str
    directory: Path
    host: str = HOST  # the address it binds and is reached at
    process: subprocess.Popen | None = None
    address: str = ""

    @property
    def config_path(self) -> Path:
        return self.directory / "node.toml"

    @property
    def log_path(self) -> Path:
        return self.directory / "node.log"

    @property
    def port_file(self) -> Path:
        return self.directory / "port"


def operator_name(index: int) -> str:
    """The operator local node `index` is issued under: each node its own, as if three organisations ran any three
    of them, so any three make a committee."""
    return f"operator-{index}"


def signal_group(process: subprocess.Popen, sig: int) -> None:
    """Send `sig` to the process group of a still-running node (it leads its own session)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def reap(processes: list[subprocess.Popen], temp_dir: str | None) -> None:
    """Last-resort cleanup (finalizer): SIGKILL every node still running, wait for them, remove the temp dir."""
    for process in processes:
        signal_group(process, signal.SIGKILL)
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    if temp_dir is not None:
        shutil.rmtree(temp_dir, ignore_errors=True)


def health_status(address: str, node_id: str, identity: Identity, timeout_s: float = 5.0) -> str:
    """The standard gRPC health status of a node ("SERVING", "NOT_SERVING", ...) over mutual TLS, or "UNREACHABLE"."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    options = identity.channel_options(node_id)
    with grpc.secure_channel(address, identity.channel_credentials(), options=options) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""),
                                                              timeout=timeout_s)
        except grpc.RpcError:
            return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
