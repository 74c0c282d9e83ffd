"""A local network for demos and tests: N real node processes on loopback, with certificates made on the spot.

    with LocalNetwork(SimulationConfig(n_nodes=3)) as net:   # start(): CA, certs, node-0, then the others
        owner, client = net.owner(), net.client()
        owner.publish("tiny", cfg, params)
        print(client.logits("tiny", ids))

`start()` makes a CA and the identities `node-0` .. `node-{N-1}` (each its own operator, `operator-i`), `client`
and `owner` in `workdir/certs`, writes one
TOML file per node (port 0 and a port file; node-0's address as every other node's seed), and spawns each node as
`secureinfer node serve --config FILE` in its own process group (processes.py), its output in
`workdir/node-i/node.log`.
It returns once every node answers the standard gRPC health check over mutual TLS with SERVING and node-0's
membership view lists all N nodes. `stop()` sends SIGTERM, waits, then SIGKILLs stragglers and removes a temporary
workdir. Nodes never outlive the harness: a finalizer (garbage collection or interpreter exit) kills what is left,
and on Linux each node gets SIGKILL when the thread that started it dies (PR_SET_PDEATHSIG), even if the harness
itself is killed. Link latency and bandwidth are injected in software by each node ([link] in its TOML).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secureinfer.client import Client, ModelOwner
from secureinfer.client.connection import NetworkError
from secureinfer.net import certs
from secureinfer.net.certs import Identity
from secureinfer.nodes.config import LinkSettings, NodeConfig

from . import processes
from .processes import HOST, operator_name

DEFAULT_ROLES: tuple[str, ...] = ("secure", "plaintext")
CLIENT_NAME = "client"
OWNER_NAME = "owner"
_POLL_S = 0.05


class SimulationError(RuntimeError):
    """The local network could not start (a node exited, timed out, or the nodes did not find each other)."""


@dataclass(frozen=True)
class SimulationConfig:
    """How to run a local network: size, roles, link shaping, gossip timing and limits of its node processes."""

    n_nodes: int = 3
    roles: tuple[tuple[str, ...], ...] = ()  # per node; () = every node ("secure", "plaintext")
    workdir: Path | None = None  # None: a temporary directory, removed at stop()
    latency_s: float = 0.0  # added to every message a node sends (software-injected)
    bandwidth_bytes_per_s: float | None = None  # per-link cap (software-injected); None = unlimited
    gossip_interval_s: float = 0.5
    record_ttl_s: float = 5.0
    session_timeout_s: float = 600.0
    max_sessions: int = 4
    batch_window_s: float = 0.05  # batched secure requests: how long a node's group waits for partners
    log_level: str = "INFO"
    torch_threads: int = 1  # OMP/MKL threads per node: nodes share the machine's cores
    start_timeout_s: float = 60.0
    device: str = "cpu"
    extra_env: tuple[tuple[str, str], ...] = field(default=())  # more environment variables for the nodes
    seed_port: int = 0  # node-0's port: the seed address every other node and every client dials (0: any free one)
    keep_models: bool = False  # each node a data directory: hosted models kept encrypted, served again after restart()

    def __post_init__(self) -> None:
        if not isinstance(self.n_nodes, int) or isinstance(self.n_nodes, bool) or self.n_nodes < 1:
            raise ValueError(f"n_nodes must be a positive integer, got {self.n_nodes!r}")
        if self.roles and len(self.roles) != self.n_nodes:
            raise ValueError(f"roles: give one tuple per node ({self.n_nodes}), got {len(self.roles)}")
        if not isinstance(self.torch_threads, int) or self.torch_threads < 1:
            raise ValueError(f"torch_threads must be a positive integer, got {self.torch_threads!r}")
        if not self.start_timeout_s > 0:
            raise ValueError(f"start_timeout_s must be > 0, got {self.start_timeout_s!r}")
        if not isinstance(self.seed_port, int) or isinstance(self.seed_port, bool) or not 0 <= self.seed_port < 65536:
            raise ValueError(f"seed_port must be a port number (0: any free one), got {self.seed_port!r}")
        if self.workdir is not None:
            object.__setattr__(self, "workdir", Path(self.workdir))
        object.__setattr__(self, "roles", tuple(tuple(r) for r in self.roles))
        for index in range(self.n_nodes):  # NodeConfig checks roles, timings, limits and the log level
            self.node_config(index, Path("certs"), seeds=())

    def node_roles(self, index: int) -> tuple[str, ...]:
        """The roles of node `index`."""
        return self.roles[index] if self.roles else DEFAULT_ROLES

    def node_config(self, index: int, certs_dir: Path, seeds: tuple[str, ...], port_file: Path | None = None,
                    host: str = HOST) -> NodeConfig:
        """The NodeConfig of node `index` (port 0 on `host`, loopback by default)."""
        return NodeConfig(
            node_id=f"node-{index}", host=host, port=0, roles=self.node_roles(index), device=self.device,
            certs_dir=certs_dir, seeds=seeds, gossip_interval_s=self.gossip_interval_s,
            record_ttl_s=self.record_ttl_s, max_sessions=self.max_sessions, session_timeout_s=self.session_timeout_s,
            batch_window_s=self.batch_window_s,
            link=LinkSettings(latency_s=self.latency_s, bandwidth_bytes_per_s=self.bandwidth_bytes_per_s),
            log_level=self.log_level, port_file=port_file)


class LocalNetwork:
    """N node processes on loopback with generated certificates; `client()` and `owner()` connect to them."""

    def __init__(self, config: SimulationConfig | None = None) -> None:
        self.config = config or SimulationConfig()
        self._nodes: list[processes.NodeProcess] = []
        self._processes: list[subprocess.Popen] = []  # shared with the finalizer: never rebind
        self._members: list[Client | ModelOwner] = []
        self._workdir: Path | None = None
        self._finalizer: weakref.finalize | None = None
        self._client_identity: Identity | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> "LocalNetwork":
        """Make certificates, start node-0, then the others with node-0 as their seed; wait until all are up."""
        if self._finalizer is not None:
            raise SimulationError("this LocalNetwork was already started")
        temp_dir = None
        if self.config.workdir is None:
            temp_dir = tempfile.mkdtemp(prefix="secureinfer-sim-")
            self._workdir = Path(temp_dir)
        else:
            self._workdir = self.config.workdir.absolute()
            self._workdir.mkdir(parents=True, exist_ok=True)
        self._finalizer = weakref.finalize(self, processes.reap, self._processes, temp_dir)
        try:
            self._make_certs()
            self._nodes = [processes.NodeProcess(f"node-{i}", self._workdir / f"node-{i}", self._node_host(i))
                           for i in range(self.config.n_nodes)]
            deadline = time.monotonic() + self.config.start_timeout_s
            first = self._nodes[0]
            self._spawn(0, seeds=(), port=self.config.seed_port)
            self._wait_for_port(first, deadline)
            for index in range(1, len(self._nodes)):
                self._spawn(index, seeds=(first.address,))
            for node in self._nodes[1:]:
                self._wait_for_port(node, deadline)
            for node in self._nodes:
                self._wait_until_serving(node, deadline)
            self._wait_for_members(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace_s: float = 10.0) -> None:
        """Close the SDK objects made here, SIGTERM every node, SIGKILL any still running after `grace_s`."""
        for member in self._members:
            try:
                member.close()
            except Exception:  # noqa: BLE001 - closing must not stop the shutdown
                pass
        self._members.clear()
        for process in self._processes:
            processes.signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for process in self._processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
        if self._finalizer is not None:
            self._finalizer()  # SIGKILL stragglers, remove a temporary workdir

    def __enter__(self) -> "LocalNetwork":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- what is running -------------------------------------------------------------------------------------------

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise SimulationError("the network has not been started")
        return self._workdir

    @property
    def certs_dir(self) -> Path:
        """The directory with ca.pem and every identity (node-i, client, owner)."""
        return self.workdir / "certs"

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(node.node_id for node in self._nodes)

    @property
    def addresses(self) -> tuple[str, ...]:
        """host:port of every node, in node order."""
        return tuple(node.address for node in self._nodes)

    @property
    def seed(self) -> str:
        """node-0's address (what the other nodes were given as their seed)."""
        if not self._nodes or not self._nodes[0].address:
            raise SimulationError("the network has not been started")
        return self._nodes[0].address

    def address(self, node_id: str) -> str:
        return self._node(node_id).address

    def pid(self, node_id: str) -> int:
        """The process id of a node (it leads its own process group)."""
        process = self._node(node_id).process
        if process is None:
            raise SimulationError(f"{node_id} was never started")
        return process.pid

    def log_path(self, node_id: str) -> Path:
        return self._node(node_id).log_path

    def log_tail(self, node_id: str, lines: int = 20) -> str:
        """The last `lines` lines of a node's log."""
        try:
            text = self._node(node_id).log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def is_running(self, node_id: str) -> bool:
        process = self._node(node_id).process
        return process is not None and process.poll() is None

    def health(self, node_id: str, timeout_s: float = 5.0) -> str:
        """A node's gRPC health status over mutual TLS: "SERVING", "NOT_SERVING", ... or "UNREACHABLE"."""
        node = self._node(node_id)
        if not node.address:
            return "UNREACHABLE"
        return processes.health_status(node.address, node.node_id, self._identity(), timeout_s)

    def client(self, timeout_s: float = 600.0) -> Client:
        """A Client with the `client` identity, every node as a seed; closed at stop()."""
        return self._member(Client, CLIENT_NAME, timeout_s)

    def owner(self, timeout_s: float = 600.0) -> ModelOwner:
        """A ModelOwner with the `owner` identity, every node as a seed; closed at stop()."""
        return self._member(ModelOwner, OWNER_NAME, timeout_s)

    def kill(self, node_id: str) -> None:
        """SIGKILL a node (fault injection) and wait until it is gone."""
        process = self._node(node_id).process
        if process is None:
            raise SimulationError(f"{node_id} was never started")
        processes.signal_group(process, signal.SIGKILL)
        process.wait(timeout=10)

    def restart(self, node_id: str) -> None:
        """Start a killed node again with the same configuration, on the port it had (so its address, and what
        other nodes know of it, stay valid); wait until it is SERVING. It starts empty (models must be republished)
        unless the network keeps models (`keep_models`): then it hosts again what it hosted.
        Call it from a thread that outlives the node (the main thread): a node dies with the thread that started it."""
        node = self._node(node_id)
        if node.process is None or not node.address:
            raise SimulationError(f"{node_id} was never started")
        if node.process.poll() is None:
            raise SimulationError(f"{node_id} is still running: kill it first")
        index = self._nodes.index(node)
        # The first node (everyone's seed) had no seeds; restarted empty it joins through the nodes still running.
        running = tuple(n.address for n in self._nodes if n is not node and n.process is not None
                        and n.process.poll() is None and n.address)
        seeds = running if index == 0 else (self.seed,)
        self._spawn(index, seeds, port=int(node.address.rpartition(":")[2]))
        deadline = time.monotonic() + self.config.start_timeout_s
        self._wait_for_port(node, deadline)
        self._wait_until_serving(node, deadline)

    # --- internals -------------------------------------------------------------------------------------------------

    def _node(self, node_id: str) -> processes.NodeProcess:
        for node in self._nodes:
            if node.node_id == node_id:
                return node
        raise SimulationError(f"no node {node_id!r} in this network (nodes: {', '.join(self.node_ids)})")

    def _identity(self) -> Identity:
        if self._client_identity is None:
            self._client_identity = Identity.load(self.certs_dir, CLIENT_NAME)
        return self._client_identity

    def _member(self, kind: type, name: str, timeout_s: float) -> Any:
        if not self._nodes or not all(node.address for node in self._nodes):
            raise SimulationError("start the network before connecting to it")
        member = kind(Identity.load(self.certs_dir, name), self.addresses, timeout_s)
        self._members.append(member)
        return member

    def _node_host(self, index: int) -> str:
        """The address node `index` binds (subclasses place nodes elsewhere, e.g. in network namespaces)."""
        return HOST

    def _launch_prefix(self, index: int) -> list[str]:
        """What goes before node `index`'s command line (e.g. `ip netns exec NAME`); nothing on loopback."""
        return []

    def _make_certs(self) -> None:
        directory = self.certs_dir
        certs.create_ca(directory, common_name="secureinfer local network CA", force=True)
        for index in range(self.config.n_nodes):
            hosts = tuple(dict.fromkeys((self._node_host(index), HOST, "localhost")))
            certs.issue(directory, f"node-{index}", "node", hosts=hosts, force=True, operator=operator_name(index))
        certs.issue(directory, CLIENT_NAME, "client", force=True)
        certs.issue(directory, OWNER_NAME, "owner", force=True)

    def _spawn(self, index: int, seeds: tuple[str, ...], port: int = 0) -> None:
        node = self._nodes[index]
        node.directory.mkdir(parents=True, exist_ok=True)
        node.port_file.unlink(missing_ok=True)
        config = self.config.node_config(index, self.certs_dir, seeds, node.port_file, host=node.host)
        config = dataclasses.replace(config, port=port) if port else config
        if self.config.keep_models:
            config = dataclasses.replace(config, data_dir=node.directory / "data")
        node.config_path.write_text(config.to_toml(relative_to=node.directory), encoding="utf-8")
        env = dict(os.environ)
        threads = str(self.config.torch_threads)
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads,
                   PYTHONUNBUFFERED="1")
        env.update(dict(self.config.extra_env))
        command = self._launch_prefix(index) + [sys.executable, "-c", processes.LAUNCHER, str(os.getpid()), "node",
                                                "serve", "--config", str(node.config_path)]
        with open(node.log_path, "ab") as log:
            node.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=node.directory, env=env, start_new_session=True)
        self._processes.append(node.process)

    def _fail(self, node: processes.NodeProcess, what: str) -> SimulationError:
        tail = self.log_tail(node.node_id)
        return SimulationError(f"{node.node_id} {what}; the end of its log ({node.log_path}):\n{tail}")

    def _check_alive(self, node: processes.NodeProcess) -> None:
        if node.process is None:
            raise SimulationError(f"{node.node_id} was never started")
        code = node.process.poll()
        if code is not None:
            raise self._fail(node, f"exited with status {code} while starting")

    def _wait_for_port(self, node: processes.NodeProcess, deadline: float) -> None:
        while True:
            self._check_alive(node)
            try:
                text = node.port_file.read_text().strip()
            except FileNotFoundError:
                text = ""
            if text.isdigit():
                node.address = f"{node.host}:{int(text)}"
                return
            if time.monotonic() > deadline:
                raise self._fail(node, f"did not bind a port within {self.config.start_timeout_s:.0f} s")
            time.sleep(_POLL_S)

    def _wait_until_serving(self, node: processes.NodeProcess, deadline: float) -> None:
        status = "UNREACHABLE"
        while True:
            self._check_alive(node)
            status = processes.health_status(node.address, node.node_id, self._identity(), timeout_s=2.0)
            if status == "SERVING":
                return
            if time.monotonic() > deadline:
                raise self._fail(node, f"is not SERVING (health: {status}) after {self.config.start_timeout_s:.0f} s")
            time.sleep(0.1)

    def _wait_for_members(self, deadline: float) -> None:
        """Wait until node-0's membership view lists every node."""
        wanted = set(self.node_ids)
        seen: set[str] = set()
        with Client(self._identity(), (self.seed,), timeout_s=10.0) as probe:
            while True:
                for node in self._nodes:
                    self._check_alive(node)
                try:
                    seen = {record.node_id for record in probe.nodes()}
                except NetworkError:
                    seen = set()
                if wanted <= seen:
                    return
                if time.monotonic() > deadline:
                    missing = ", ".join(sorted(wanted - seen))
                    raise SimulationError(f"node-0 does not see {missing} after {self.config.start_timeout_s:.0f} s "
                                          f"of gossip (logs in {self.workdir})")
                time.sleep(0.1)


__all__ = ["LocalNetwork", "SimulationConfig", "SimulationError"]
