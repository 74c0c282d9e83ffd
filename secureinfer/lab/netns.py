"""A multi-host network on one Linux machine: each node process in its own network namespace, links capped by `tbf`.

    with NetnsNetwork(SimulationConfig(n_nodes=3), NetnsConfig(rate_bits_per_s=100e6)) as net:
        net.owner().publish("tiny", cfg, params)           # the owner and client run here, in the root namespace
        net.cut_link("node-1")                              # `ip link set eth0 down` inside node-1's namespace

Topology (root only): a hub namespace holds a bridge; every node namespace has one veth `eth0` whose peer is a port of
the bridge, with its own address `10.213.X.(i+1)/24`; the root namespace joins the bridge through one more veth
(`10.213.X.254`), so the SDK in this process dials the nodes' real addresses. A cap puts a `tbf` qdisc on both ends
of every node's link (its egress and its ingress). Each network picks a free /24 (under a file lock) and names its
namespaces `sinet-PID-TAG-*`, so parallel runs do not collide; namespaces left by a run whose process is gone are
removed at the next start. Nodes run as `ip netns exec NS secureinfer node serve` (secureinfer.lab.simulate does
the rest: certificates, configs, health, membership). Teardown kills the nodes first, then deletes the namespaces,
on `stop()`, on an exception during start, and from a finalizer (garbage collection or interpreter exit).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .processes import HOST, reap
from .simulate import LocalNetwork, SimulationConfig, SimulationError

PREFIX = "sinet"
NODE_DEV = "eth0"  # the node's interface inside its namespace
ROOT_HOST = 254  # the root namespace's last octet on every network
_NAME = re.compile(rf"{PREFIX}-(\d+)-[0-9a-f]+-\w+")
_IP_TIMEOUT_S = 20.0


class NetnsError(SimulationError):
    """Network namespaces or tbf are unavailable here, or an `ip`/`tc` command failed."""


@dataclass(frozen=True)
class NetnsConfig:
    """Addressing and link shaping of a namespaced network: a tbf cap per node link (None: uncapped)."""

    rate_bits_per_s: float | None = None  # both directions of every node's link
    burst_bytes: int | None = None  # tbf bucket; None: 1/100 s of traffic at the rate, at least 64 KiB
    tbf_latency_ms: float = 200.0  # how long a packet may wait in the tbf queue before it is dropped
    subnet_prefix: str = "10.213"  # networks are PREFIX.X.0/24 for a free X

    def __post_init__(self) -> None:
        if self.rate_bits_per_s is not None and not self.rate_bits_per_s >= 8_000:
            raise ValueError(f"rate_bits_per_s must be >= 8000 (or None), got {self.rate_bits_per_s!r}")
        if self.burst_bytes is not None and self.burst_bytes < 2048:
            raise ValueError(f"burst_bytes must be >= 2048 (above one packet), got {self.burst_bytes!r}")
        if not self.tbf_latency_ms > 0:
            raise ValueError(f"tbf_latency_ms must be > 0, got {self.tbf_latency_ms!r}")
        if re.fullmatch(r"\d{1,3}\.\d{1,3}", self.subnet_prefix) is None:
            raise ValueError(f"subnet_prefix must be two octets like '10.213', got {self.subnet_prefix!r}")

    def burst_for(self, rate_bits_per_s: float) -> int:
        """The tbf bucket size for `rate_bits_per_s`."""
        return self.burst_bytes or max(int(rate_bits_per_s / 8 / 100), 64 * 1024)


# ------------------------------------------------------------------------------------------------ ip and tc


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run one `ip`/`tc` command; a failure raises NetnsError with its stderr."""
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=_IP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(args)}: {exc}") from exc
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def unavailable_reason() -> str | None:
    """Why namespaced networks cannot run here (not root, no `ip`/`tc`, namespaces or tbf refused), else None."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces and tbf need root (run as root, as CI does)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"the `{tool}` command (iproute2) is not installed"
    probe = f"{PREFIX}-{os.getpid()}-{secrets.token_hex(3)}-probe"
    try:
        _run("ip", "netns", "add", probe)
        try:
            _run("ip", "-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1")
            _run("ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "p0", "root", "tbf", "rate", "1mbit",
                 "burst", "32kb", "latency", "50ms")
        finally:
            _run("ip", "netns", "del", probe, check=False)
    except NetnsError as exc:
        return f"a probe network namespace with a tbf qdisc failed: {exc}"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_namespaces() -> list[str]:
    """Delete the namespaces of namespaced networks whose process is gone (a killed run); returns their names."""
    listed = _run("ip", "netns", "list", check=False).stdout.split()
    removed = []
    for name in listed:
        match = _NAME.fullmatch(name)
        if match and not _pid_alive(int(match.group(1))):
            _run("ip", "netns", "del", name, check=False)
            removed.append(name)
    return removed


def _free_subnet(prefix: str) -> str:
    """A PREFIX.X /24 that no address or route of the root namespace uses (call under the allocation lock)."""
    used = _run("ip", "-4", "-o", "addr", "show").stdout + _run("ip", "-4", "route", "show").stdout
    for octet in range(256):
        subnet = f"{prefix}.{octet}"
        if f"{subnet}." not in used:
            return subnet
    raise NetnsError(f"no free /24 left under {prefix}.0.0/16 in the root namespace")


def _tbf(namespace: str, device: str, rate_bits_per_s: float | None, config: NetnsConfig) -> None:
    """Put (or replace, or with None remove) the tbf cap on `device` in `namespace`."""
    if rate_bits_per_s is None:
        _run("ip", "netns", "exec", namespace, "tc", "qdisc", "del", "dev", device, "root", check=False)
        return
    _run("ip", "netns", "exec", namespace, "tc", "qdisc", "replace", "dev", device, "root", "tbf",
         "rate", f"{int(rate_bits_per_s)}bit", "burst", str(config.burst_for(rate_bits_per_s)),
         "latency", f"{config.tbf_latency_ms}ms")


def _teardown(processes: list[subprocess.Popen], namespaces: list[str], root_dev: str) -> None:
    """Kill the node processes, then delete the namespaces (their veths go with them) and the root veth."""
    reap(processes, None)
    for namespace in namespaces:
        _run("ip", "netns", "del", namespace, check=False)
    namespaces.clear()
    _run("ip", "link", "del", root_dev, check=False)


# ------------------------------------------------------------------------------------------------ the network


class NetnsNetwork(LocalNetwork):
    """A LocalNetwork whose nodes each live in their own network namespace behind a (capped) veth link."""

    def __init__(self, config: SimulationConfig = SimulationConfig(), netns: NetnsConfig = NetnsConfig()) -> None:
        super().__init__(config)
        self.netns = netns
        self.tag = f"{PREFIX}-{os.getpid()}-{secrets.token_hex(3)}"
        self.subnet = ""
        self.root_dev = f"sn{self.tag[-6:]}{secrets.token_hex(2)}"  # at most 15 characters
        self._namespaces: list[str] = []
        self._rate: float | None = None
        self._netns_finalizer: weakref.finalize | None = None

    # --- names and addresses ---------------------------------------------------------------------------------------

    @property
    def hub(self) -> str:
        """The namespace holding the bridge."""
        return f"{self.tag}-hub"

    def namespace(self, node_id: str) -> str:
        """The network namespace node `node_id` runs in."""
        return f"{self.tag}-n{self._index(node_id)}"

    @property
    def root_address(self) -> str:
        """This process's address on the network (the client's and owner's side)."""
        return f"{self.subnet}.{ROOT_HOST}"

    @property
    def rate_bits_per_s(self) -> float | None:
        """The cap now on every node link (None: uncapped)."""
        return self._rate

    def _index(self, node_id: str) -> int:
        match = re.fullmatch(r"node-(\d+)", node_id)
        if match is None or int(match.group(1)) >= self.config.n_nodes:
            raise SimulationError(f"no node {node_id!r} in this network of {self.config.n_nodes}")
        return int(match.group(1))

    def _node_host(self, index: int) -> str:
        return f"{self.subnet}.{index + 1}" if self.subnet else HOST

    def _launch_prefix(self, index: int) -> list[str]:
        return ["ip", "netns", "exec", f"{self.tag}-n{index}"]

    # --- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> "NetnsNetwork":
        """Remove stale namespaces, build this network's namespaces and links, then start the nodes inside them."""
        if self._netns_finalizer is not None:
            raise SimulationError("this NetnsNetwork was already started")
        reason = unavailable_reason()
        if reason is not None:
            raise NetnsError(reason)
        if self.config.n_nodes > 250:
            raise NetnsError(f"at most 250 nodes per namespaced network, got {self.config.n_nodes}")
        remove_stale_namespaces()
        self._netns_finalizer = weakref.finalize(self, _teardown, self._processes, self._namespaces, self.root_dev)
        try:
            self._build()
            super().start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop the nodes (LocalNetwork.stop), then delete every namespace and veth of this network."""
        try:
            super().stop(grace_s)
        finally:
            if self._netns_finalizer is not None:
                self._netns_finalizer()

    def __enter__(self) -> "NetnsNetwork":
        return self.start()

    def _build(self) -> None:
        """Hub with a bridge, one namespace and veth per node, the root veth, addresses and caps."""
        self._add_namespace(self.hub)
        _run("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.hub, "link", "set", "br0", "up")
        lock_path = Path(tempfile.gettempdir()) / "secureinfer-netns.lock"
        with open(lock_path, "a") as lock:  # two networks must not pick the same /24
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.subnet = _free_subnet(self.netns.subnet_prefix)
            _run("ip", "link", "add", self.root_dev, "type", "veth", "peer", "name", "root", "netns", self.hub)
            _run("ip", "addr", "add", f"{self.root_address}/24", "dev", self.root_dev)
            _run("ip", "link", "set", self.root_dev, "up")
        _run("ip", "-n", self.hub, "link", "set", "root", "master", "br0", "up")
        for index in range(self.config.n_nodes):
            self._add_node_link(index)
        self.set_rate(self.netns.rate_bits_per_s)

    def _add_namespace(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self._namespaces.insert(0, name)  # deleted in reverse order: node namespaces before the hub
        _run("ip", "-n", name, "link", "set", "lo", "up")

    def _add_node_link(self, index: int) -> None:
        namespace, port = f"{self.tag}-n{index}", f"v{index}"
        self._add_namespace(namespace)
        _run("ip", "-n", self.hub, "link", "add", port, "type", "veth", "peer", "name", NODE_DEV, "netns", namespace)
        _run("ip", "-n", self.hub, "link", "set", port, "master", "br0", "up")
        _run("ip", "-n", namespace, "addr", "add", f"{self._node_host(index)}/24", "dev", NODE_DEV)
        _run("ip", "-n", namespace, "link", "set", NODE_DEV, "up")

    # --- shaping and faults ----------------------------------------------------------------------------------------

    def set_rate(self, rate_bits_per_s: float | None) -> None:
        """Cap both directions of every node's link at `rate_bits_per_s` (None: remove the caps); live nodes too."""
        if rate_bits_per_s is not None:
            NetnsConfig(rate_bits_per_s=rate_bits_per_s)  # the same checks as the config's
        for index in range(self.config.n_nodes):
            _tbf(f"{self.tag}-n{index}", NODE_DEV, rate_bits_per_s, self.netns)  # node -> bridge
            _tbf(self.hub, f"v{index}", rate_bits_per_s, self.netns)  # bridge -> node
        self._rate = rate_bits_per_s

    def cut_link(self, node_id: str) -> None:
        """Take node `node_id`'s interface down (`ip link set eth0 down` in its namespace): its packets vanish."""
        _run("ip", "-n", self.namespace(node_id), "link", "set", NODE_DEV, "down")

    def restore_link(self, node_id: str) -> None:
        """Bring a cut interface back up (its address and route return with it)."""
        _run("ip", "-n", self.namespace(node_id), "link", "set", NODE_DEV, "up")

    def link_bytes(self, node_id: str) -> tuple[int, int]:
        """(received, sent) bytes counted by the kernel on node `node_id`'s interface so far."""
        out = _run("ip", "-n", self.namespace(node_id), "-s", "-j", "link", "show", NODE_DEV).stdout
        try:
            stats = json.loads(out)[0]["stats64"]
            return int(stats["rx"]["bytes"]), int(stats["tx"]["bytes"])
        except (ValueError, LookupError, TypeError) as exc:
            raise NetnsError(f"cannot read the counters of {node_id}'s {NODE_DEV}: {out[:200]!r}") from exc

    def throughput(self, node_id: str, nbytes: int = 4 << 20, timeout_s: float = 60.0) -> float:
        """Bytes per second of one TCP stream from inside node `node_id`'s namespace to this process (a link check)."""
        if nbytes < 1:
            raise ValueError(f"nbytes must be >= 1, got {nbytes}")
        sender = subprocess.Popen(
            self._launch_prefix(self._index(node_id)) + [sys.executable, "-c", _SENDER, str(nbytes)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = sender.stdout.readline().strip() if sender.stdout else ""
            if not line.isdigit():
                raise NetnsError(f"the throughput sender in {node_id}'s namespace did not start: {line!r}")
            return _receive_all((self._node_host(self._index(node_id)), int(line)), timeout_s)
        finally:
            sender.kill()
            sender.wait(timeout=10)


# Sends argv[1] bytes to the first connection on a free port (printed first) of this namespace's address.
_SENDER = (
    "import socket, sys\n"
    "s = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen(1); print(s.getsockname()[1], flush=True)\n"
    "c, _ = s.accept(); left = int(sys.argv[1]); block = bytes(1 << 16)\n"
    "while left > 0:\n"
    "    c.sendall(block[:min(left, len(block))]); left -= len(block)\n"
    "c.close()\n"
)


def _receive_all(address: tuple[str, int], timeout_s: float) -> float:
    """Read a stream to its end; bytes per second from the first byte on."""
    with socket.create_connection(address, timeout=timeout_s) as sock:
        deadline = time.monotonic() + timeout_s
        first = sock.recv(1 << 16)
        start, total = time.monotonic(), 0
        while True:
            if time.monotonic() > deadline:
                raise NetnsError(f"the throughput check from {address[0]} ran past {timeout_s:.0f} s")
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            total += len(chunk)
        elapsed = time.monotonic() - start
    if not first or elapsed <= 0:
        raise NetnsError(f"no data came from {address[0]}")
    return total / elapsed


def describe(network: NetnsNetwork) -> dict[str, Any]:
    """The layout of a running network (namespaces, addresses, cap), for logs and benchmark records."""
    return {"subnet": f"{network.subnet}.0/24", "root": network.root_address, "hub": network.hub,
            "rate_bits_per_s": network.rate_bits_per_s,
            "nodes": {n: {"namespace": network.namespace(n), "address": network.address(n)} for n in network.node_ids}}


__all__ = ["NetnsConfig", "NetnsError", "NetnsNetwork", "describe", "remove_stale_namespaces", "unavailable_reason"]
