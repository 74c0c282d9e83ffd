"""Fuzzing helpers: a node daemon in its own process (n0) in a committee with two in-process daemons (n1, n2), every
gRPC method of node.proto callable with raw bytes, and the checks made after every batch of fuzzed calls.

n0 runs `secureinfer node serve` in a child process so its liveness and its resident memory (VmRSS) are its own.
It hosts the tiny GPT-2 as party 0 of the secret committee c-secret (n0, n1, n2) and in the clear (c-public).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from secureinfer.client.connection import Connector, SessionSpec
from secureinfer.mpc.comm import Channel
from secureinfer.mpc.models import serving
from secureinfer.mpc.party import EngineConfig
from secureinfer.net.membership import CommitteeView
from secureinfer.net.options import grpc_options
from secureinfer.nodes.config import NodeConfig
from secureinfer.plaintext import reference as plaintext
from secureinfer.v1 import node_pb2, node_pb2_grpc

from .committee import publish
from .netutil import Cluster, LoopThread, Pki, tiny_config, tiny_params, wait_until

Code = grpc.StatusCode
PEER_WAIT_S = 1.0  # n0's wait for a first message or a peer's session: short, so fuzzed streams end quickly
CALL_TIMEOUT_S = 5.0  # the bound on one fuzzed call
# gRPC's client reports this INTERNAL when a write fails because the server already ended the stream.
CORE_WRITE_RACE = "Internal error from Core"
IDS = torch.tensor([[2, 5, 7, 3]])
SECURE_TOLERANCE = 0.02  # secure logits vs float64 plaintext (fixed point, 18 fractional bits, tiny model)

# Every method of node.proto and the health service: (path, streaming request, streaming reply, caller identity).
METHODS: dict[str, tuple[str, bool, bool, str]] = {
    "Peer.Link": ("/secureinfer.v1.Peer/Link", True, True, "n1"),
    "Inference.Session": ("/secureinfer.v1.Inference/Session", True, True, "alice"),
    "Inference.Cancel": ("/secureinfer.v1.Inference/Cancel", False, False, "alice"),
    "Inference.ListModels": ("/secureinfer.v1.Inference/ListModels", False, False, "alice"),
    "Membership.Gossip": ("/secureinfer.v1.Membership/Gossip", False, False, "n1"),
    "Membership.Status": ("/secureinfer.v1.Membership/Status", False, False, "alice"),
    "Records.Push": ("/secureinfer.v1.Records/Push", False, False, "alice"),
    "Records.Pull": ("/secureinfer.v1.Records/Pull", False, False, "n1"),  # only nodes read records
    "Records.Fetch": ("/secureinfer.v1.Records/Fetch", False, False, "n1"),
    "Health.Check": ("/grpc.health.v1.Health/Check", False, False, "alice"),
    "Health.Watch": ("/grpc.health.v1.Health/Watch", False, True, "alice"),
}

# The statuses each method may answer a client's bad input with (nodes/errors.py; README "Errors"): never UNKNOWN or
# INTERNAL. DEADLINE_EXCEEDED and CANCELLED may also be this side's own (its timeout, or a stream it cut off).
_ENDS = {Code.DEADLINE_EXCEEDED, Code.CANCELLED}
ALLOWED: dict[str, set[Code]] = {
    # UNAVAILABLE: a fuzzed open of a real secure session fails when the other parties never see it.
    "Inference.Session": {Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.PERMISSION_DENIED,
                          Code.ALREADY_EXISTS, Code.RESOURCE_EXHAUSTED, Code.UNAVAILABLE} | _ENDS,
    "Peer.Link": {Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.PERMISSION_DENIED, Code.RESOURCE_EXHAUSTED,
                  Code.UNAVAILABLE} | _ENDS,
    "Inference.Cancel": {Code.OK, Code.INVALID_ARGUMENT, Code.PERMISSION_DENIED, Code.RESOURCE_EXHAUSTED} | _ENDS,
    "Inference.ListModels": {Code.OK, Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED} | _ENDS,
    "Membership.Gossip": {Code.OK, Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED} | _ENDS,
    "Membership.Status": {Code.OK, Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED} | _ENDS,
    "Records.Push": {Code.OK, Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED} | _ENDS,
    "Records.Pull": {Code.OK, Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED} | _ENDS,
    "Records.Fetch": {Code.OK, Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED} | _ENDS,
    "Health.Check": {Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.RESOURCE_EXHAUSTED} | _ENDS,
    "Health.Watch": {Code.OK, Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED} | _ENDS,
}


# ------------------------------------------------------------------------------------------------ the node process


class NodeProcess:
    """`secureinfer node serve` in a child process (its own process group) from a NodeConfig written as TOML."""

    def __init__(self, config: NodeConfig, directory: Path, start_timeout_s: float = 60.0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.config_path, self.log_path = directory / "node.toml", directory / "node.log"
        self.config_path.write_text(config.to_toml(), encoding="utf-8")
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "secureinfer", "node", "serve", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.address = f"{config.host}:{self._wait_for_port(config.port_file, start_timeout_s)}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_bytes(self) -> int:
        """The process's resident set size now (VmRSS of /proc/PID/status)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no VmRSS for process {self.pid}")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 10 s."""
        if self.alive():
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def _wait_for_port(self, port_file: Path | None, timeout_s: float) -> int:
        if port_file is None:
            raise ValueError("the node config needs a port_file")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"node exited with {self.process.returncode}:\n{self.log_tail()}")
            text = port_file.read_text().strip() if port_file.exists() else ""
            if text.isdigit():
                return int(text)
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"node did not bind a port within {timeout_s} s:\n{self.log_tail()}")


# ------------------------------------------------------------------------------------------------ the target


@dataclass
class Target:
    """n0 (a child process) with n1 and n2 (in-process), the tiny model published to them, and raw channels."""

    node: NodeProcess
    cluster: Cluster
    pki: Pki
    alice: Connector
    cfg: Any
    params: dict[str, torch.Tensor]
    statuses: Counter = field(default_factory=Counter)  # (method, status name) -> calls
    details: dict[tuple[str, str], str] = field(default_factory=dict)  # (method, status name) -> the last details
    write_races: int = 0  # stream calls the server ended while this side still wrote (see `allowed`)
    _raced: bool = False
    _channels: dict[tuple[str, int], grpc.aio.Channel] = field(default_factory=dict)

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        return self.cluster.run(coro, timeout)

    def view(self, secret: bool) -> CommitteeView:
        if secret:
            nodes = ("n0", "n1", "n2")
            return CommitteeView("c-secret", nodes, (self.node.address, self.cluster.address("n1"),
                                                     self.cluster.address("n2")), node_pb2.PRIVACY_SECRET)
        return CommitteeView("c-public", ("n0",), (self.node.address,), node_pb2.PRIVACY_PUBLIC)

    def committee(self, secret: bool) -> node_pb2.Committee:
        view = self.view(secret)
        return node_pb2.Committee(committee_id=view.committee_id, node_ids=list(view.node_ids),
                                  addresses=list(view.addresses))

    def channel(self, who: str, max_message_bytes: int = 4 << 20) -> grpc.aio.Channel:
        """A cached mutual-TLS channel from identity `who` to n0 (call on the loop)."""
        key = (who, max_message_bytes)
        if key not in self._channels:
            identity = self.pki.identity(who)
            options = grpc_options(max_message_bytes) + identity.channel_options("n0")
            self._channels[key] = grpc.aio.secure_channel(self.node.address, identity.channel_credentials(), options)
        return self._channels[key]

    # --- raw calls (on the loop) ----------------------------------------------------------------------------------

    async def call(self, method: str, requests: list[bytes], *, half_close: bool = True,
                   max_message_bytes: int = 4 << 20, read_limit: int = 64, watch_timeout_s: float = 0.5) -> Code:
        """Send `requests` (serialized) to `method` of n0 with identity serializers; the status it ends with.
        Streams: written in order, half-closed unless `half_close` is False (then cut off after the writes).
        A server stream (Health.Watch, which never ends by itself) is cut off after `watch_timeout_s`."""
        path, stream_in, stream_out, who = METHODS[method]
        self._raced = False
        channel = self.channel(who, max_message_bytes)
        if stream_in:
            call = channel.stream_stream(path)(timeout=CALL_TIMEOUT_S)
            code = await self._stream(call, requests, half_close, read_limit)
        elif stream_out:
            call = channel.unary_stream(path)(requests[0] if requests else b"", timeout=watch_timeout_s)
            code = await self._read_all(call, read_limit)
        else:
            call = channel.unary_unary(path)(requests[0] if requests else b"", timeout=CALL_TIMEOUT_S)
            try:
                await call
            except grpc.aio.AioRpcError:
                pass
            code = await call.code()
        details = await call.details() or ""
        if self._raced and code == Code.INTERNAL and details == CORE_WRITE_RACE:
            self.write_races += 1
            self.statuses[(method, "INTERNAL (client write race)")] += 1
        else:
            self._raced = False
            self.statuses[(method, code.name)] += 1
        self.details[(method, code.name)] = details
        return code

    def allowed(self, method: str, code: Code) -> bool:
        """Whether the last call's status is one `method` documents; also the client library's own INTERNAL when
        the node ended the stream while this side was still writing (the node's status is lost there)."""
        return code in ALLOWED[method] or self._raced

    async def _stream(self, call: Any, requests: list[bytes], half_close: bool, read_limit: int) -> Code:
        try:
            for data in requests:
                if call.done():
                    break  # the server has ended the call already: its status says why
                await call.write(data)
            if half_close and not call.done():
                await call.done_writing()
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError, asyncio.CancelledError):
            self._raced = True  # the server ended the call while we wrote
        if not half_close:
            call.cancel()
        return await self._read_all(call, read_limit)

    @staticmethod
    async def _read_all(call: Any, read_limit: int) -> Code:
        try:
            for _ in range(read_limit):
                if await call.read() is grpc.aio.EOF:
                    break
            else:
                call.cancel()
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        return await call.code()

    # --- the checks after every batch -----------------------------------------------------------------------------

    async def health(self) -> int:
        stub = health_pb2_grpc.HealthStub(self.channel("alice"))
        return (await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)).status

    async def active(self) -> int:
        reply = await self.channel("alice").unary_unary(
            "/secureinfer.v1.Membership/Status", request_serializer=node_pb2.StatusRequest.SerializeToString,
            response_deserializer=node_pb2.StatusReply.FromString)(node_pb2.StatusRequest(), timeout=5)
        return reply.active_sessions

    def wait_idle(self, within_s: float = 10.0) -> None:
        """Wait until n0 reports no open session (fuzzed sessions end within their timeouts)."""
        deadline = time.monotonic() + within_s
        while self.run(self.active()) != 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"n0 still has {self.run(self.active())} sessions after {within_s} s")
            time.sleep(0.1)

    def logits(self, secret: bool) -> torch.Tensor:
        """A known-good decoder request (every position's logits) through the SDK."""
        view = self.view(secret)
        spec = SessionSpec(task=node_pb2.TASK_DECODE, privacy=view.privacy, model_id="olivia/tiny", output="all")
        io = serving.SECRET if secret else serving.PUBLIC

        def program(channel: Channel) -> torch.Tensor:
            return serving.client_logits(channel, self.cfg, EngineConfig(), IDS, (IDS.shape[1],), io)[0]

        return self.alice.run_session(view, spec, program, timeout_s=60)

    def check(self, secure: bool = False) -> None:
        """n0 is alive and SERVING, frees every fuzzed session, and answers a good request correctly."""
        assert self.node.alive(), f"n0 died:\n{self.node.log_tail()}"
        assert self.run(self.health()) == health_pb2.HealthCheckResponse.SERVING
        self.wait_idle()
        reference = plaintext.gpt2_forward(self.cfg, self.params, IDS)
        assert torch.allclose(self.logits(False), reference, atol=1e-9)
        if secure:
            out = self.logits(True)
            assert out.shape == reference.shape and (out - reference).abs().max().item() < SECURE_TOLERANCE

    async def close_channels(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()

    def bad_statuses(self) -> dict[tuple[str, str], int]:
        """The (method, status) pairs seen that the method may not answer with, and how often."""
        return {(m, s): n for (m, s), n in self.statuses.items() if s in Code.__members__ and Code[s] not in ALLOWED[m]}


def wait_known(cluster: Cluster, client: Connector, address: str) -> None:
    """Wait until n0 (a process at `address`) and the in-process n1 and n2 have each other's records."""
    async def seen_by_n0() -> set[str]:
        stub = node_pb2_grpc.MembershipStub(client.channel(address, "n0"))
        reply = await stub.Status(node_pb2.StatusRequest(), timeout=5)
        return {r.node_id for r in reply.records}

    def known() -> bool:
        try:
            by_n0 = client.loop_thread.run(seen_by_n0(), timeout=10)
        except grpc.aio.AioRpcError:
            return False
        return {"n1", "n2"} <= by_n0 and all(cluster.daemons[n].table.get("n0") is not None for n in ("n1", "n2"))

    wait_until(known, 20.0, "n0, n1 and n2 knowing each other")


@contextlib.contextmanager
def running_target(pki: Pki, loop: LoopThread, directory: Path, **settings: Any) -> Iterator[Target]:
    """Start n0 as a process (with NodeConfig overrides `settings`) and n1, n2 in-process, publish the tiny model;
    stop everything afterwards."""
    cluster = Cluster(pki, loop)
    node = alice = olivia = None
    try:
        config = NodeConfig(**{**dict(node_id="n0", certs_dir=pki.directory, peer_wait_s=PEER_WAIT_S,
                                      log_level="WARNING", port_file=directory / "n0.port", max_sessions=8,
                                      gossip_interval_s=5.0, record_ttl_s=60.0), **settings})
        for name in ("n1", "n2"):
            cluster.start(name, peer_wait_s=PEER_WAIT_S)
        # n0 meets n1 and n2 by gossip (nodes dial their peers from their membership tables)
        node = NodeProcess(dataclasses.replace(config, seeds=(cluster.address("n1"),)), directory / "n0")
        alice = Connector(pki.identity("alice"), [node.address], timeout_s=60)
        wait_known(cluster, alice, node.address)
        olivia = Connector(pki.identity("olivia"), [node.address], timeout_s=60)
        cfg = tiny_config()
        params = tiny_params(cfg)
        target = Target(node, cluster, pki, alice, cfg, params)
        publish(olivia, target.view(True), cfg, params)
        publish(olivia, target.view(False), cfg, params)
        try:
            yield target
        finally:
            target.run(target.close_channels())
    finally:
        for connector in (alice, olivia):
            if connector is not None:
                connector.close()
        if node is not None:
            node.stop()
        cluster.close()
