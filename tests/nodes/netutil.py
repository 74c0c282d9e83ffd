"""Helpers for node tests over real gRPC on 127.0.0.1: a background event loop, in-process daemons, raw calls."""

from __future__ import annotations

import asyncio
import concurrent.futures
import secrets
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from secureinfer.net.certs import Identity, create_ca, issue
from secureinfer.net.options import grpc_options
from secureinfer.nodes.config import NodeConfig
from secureinfer.nodes.daemon import NodeDaemon
from secureinfer.v1 import node_pb2, node_pb2_grpc
from tests.tinymodels import tiny_config, tiny_params  # noqa: F401 - re-exported for the node tests

T = TypeVar("T")
NODES = ("n0", "n1", "n2", "n3", "n4", "g0", "g1", "g2", "g3", "m0", "m1")
# Who runs each node: every node its own operator ("op-NAME"), but m0 and m1 one operator (a capture attempt).
OPERATORS = {"m0": "mallory-ops", "m1": "mallory-ops"}
CLIENTS = ("alice", "bob")
OWNERS = ("olivia", "oscar")
CALL_S = 20.0  # the bound on any one helper call: nothing in these tests may hang


class LoopThread:
    """A private asyncio loop in a daemon thread; `run` executes a coroutine there with a bounded wait."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="node-tests-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_S) -> T:
        """The coroutine's result; on timeout the coroutine is cancelled and TimeoutError raised."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"test coroutine did not finish within {timeout} s") from None

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


@dataclass(frozen=True)
class Pki:
    """The network CA directory (nodes, clients, owners) and a second, unrelated CA's directory."""

    directory: Path
    rogue: Path

    @classmethod
    def make(cls, root: Path) -> "Pki":
        directory, rogue = root / "net", root / "rogue"
        create_ca(directory)
        for name in NODES:
            issue(directory, name, "node", operator=OPERATORS.get(name, f"op-{name}"))
        for name in CLIENTS:
            issue(directory, name, "client")
        for name in OWNERS:
            issue(directory, name, "owner")
        create_ca(rogue, common_name="intruder CA")
        issue(rogue, "mallory", "client")
        issue(rogue, "n0", "node", operator="op-n0")
        return cls(directory, rogue)

    def identity(self, name: str) -> Identity:
        return Identity.load(self.directory, name)

    def intruder(self, name: str = "mallory") -> Identity:
        return Identity.load(self.rogue, name)


@dataclass
class Cluster:
    """In-process node daemons on one background loop, and cached raw gRPC channels to them."""

    pki: Pki
    loop: LoopThread
    daemons: dict[str, NodeDaemon] = field(default_factory=dict)
    _channels: dict[tuple[str, str, str], grpc.aio.Channel] = field(default_factory=dict)

    def start(self, name: str, *, peer_wait_s: float = 2.0, introduce: bool = True, **settings: Any) -> NodeDaemon:
        """Start node `name` (log level WARNING, random port) with NodeConfig overrides `settings`. Nodes dial their
        peers from their membership tables: unless `introduce` is off, the new node and the running ones take each
        other's records at once, and (without `seeds` of its own) it gossips with the first running node."""
        settings.setdefault("log_level", "WARNING")
        if introduce and self.daemons and "seeds" not in settings:
            settings["seeds"] = (next(iter(self.daemons.values())).address,)
        config = NodeConfig(node_id=name, certs_dir=self.pki.directory, **settings)
        daemon = self.loop.run(_construct(config, peer_wait_s))
        self.loop.run(daemon.start())
        if introduce:
            self.introduce(daemon)
        self.daemons[name] = daemon
        return daemon

    def introduce(self, daemon: NodeDaemon) -> None:
        """Give `daemon` the records of the running nodes and them its own (what gossip does, without the wait)."""
        own = daemon.table.get(daemon.config.node_id)
        for other in self.daemons.values():
            theirs = other.table.get(other.config.node_id)
            if theirs is not None:
                daemon.table.merge([theirs])
            if own is not None:
                other.table.merge([own])

    def address(self, name: str) -> str:
        return self.daemons[name].address

    def stop(self, name: str) -> None:
        daemon = self.daemons.pop(name)
        self.loop.run(daemon.stop(grace_s=0.5))

    def close(self) -> None:
        for name in list(self.daemons):
            self.stop(name)
        channels, self._channels = list(self._channels.values()), {}

        async def close_all() -> None:
            for channel in channels:
                await channel.close()

        self.loop.run(close_all())

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_S) -> T:
        return self.loop.run(coro, timeout)

    # --- raw calls (call these on the loop, i.e. inside a coroutine given to `run`) --------------------------------

    def channel(self, who: str | Identity, node: str, target: str | None = None,
                max_message_bytes: int = 4 << 20) -> grpc.aio.Channel:
        """A cached mutual-TLS channel from identity `who` to node `node` (TLS target: the node's name)."""
        identity = who if isinstance(who, Identity) else self.pki.identity(who)
        target = target or node
        key = (f"{identity.name}@{hash(identity.ca_pem)}/{max_message_bytes}", node, target)
        if key not in self._channels:
            options = grpc_options(max_message_bytes) + identity.channel_options(target)
            self._channels[key] = grpc.aio.secure_channel(self.address(node), identity.channel_credentials(),
                                                          options)
        return self._channels[key]

    def inference(self, who: str | Identity, node: str) -> node_pb2_grpc.InferenceStub:
        return node_pb2_grpc.InferenceStub(self.channel(who, node))

    def peer(self, who: str | Identity, node: str) -> node_pb2_grpc.PeerStub:
        return node_pb2_grpc.PeerStub(self.channel(who, node))

    def membership(self, who: str | Identity, node: str) -> node_pb2_grpc.MembershipStub:
        return node_pb2_grpc.MembershipStub(self.channel(who, node))

    # --- checks --------------------------------------------------------------------------------------------------

    async def health(self, node: str) -> int:
        stub = health_pb2_grpc.HealthStub(self.channel("alice", node))
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return reply.status

    async def active(self, node: str) -> int:
        reply = await self.membership("alice", node).Status(node_pb2.StatusRequest(), timeout=5)
        return reply.active_sessions

    async def wait_idle(self, nodes: Sequence[str], within_s: float) -> float:
        """Wait until every node reports 0 active sessions; returns the seconds it took (raises if it does not)."""
        start = time.monotonic()
        while True:
            counts = [await self.active(n) for n in nodes]
            if not any(counts):
                return time.monotonic() - start
            if time.monotonic() - start > within_s:
                raise AssertionError(f"sessions still active after {within_s} s: {dict(zip(nodes, counts))}")
            await asyncio.sleep(0.05)

    async def wait_active(self, nodes: Sequence[str], count: int, within_s: float) -> None:
        start = time.monotonic()
        while [await self.active(n) for n in nodes] != [count] * len(nodes):
            if time.monotonic() - start > within_s:
                raise AssertionError(f"nodes {nodes} did not reach {count} active sessions in {within_s} s")
            await asyncio.sleep(0.05)


async def _construct(config: NodeConfig, peer_wait_s: float) -> NodeDaemon:
    """Construct a daemon on the loop (its asyncio objects belong there)."""
    return NodeDaemon(config, peer_wait_s=peer_wait_s)


# ------------------------------------------------------------------------------------------------ messages


def session_id() -> str:
    return secrets.token_hex(16)


def committee(cluster: Cluster, nodes: Sequence[str], committee_id: str = "c-test") -> node_pb2.Committee:
    """A committee message; a node that is not running gets an address nothing listens on."""
    addresses = [cluster.address(n) if n in cluster.daemons else "127.0.0.1:9" for n in nodes]
    return node_pb2.Committee(committee_id=committee_id, node_ids=list(nodes), addresses=addresses)


def open_message(cluster: Cluster, nodes: Sequence[str], index: int, *, sid: str | None = None,
                 task: int = node_pb2.TASK_DECODE, privacy: int | None = None, model_id: str = "olivia/tiny",
                 committee_id: str = "c-test", **fields: Any) -> node_pb2.ClientMessage:
    """An `open` ClientMessage for party `index` of the committee `nodes` (secret for 3 nodes, else public)."""
    if privacy is None:
        privacy = node_pb2.PRIVACY_SECRET if len(nodes) == 3 else node_pb2.PRIVACY_PUBLIC
    request = node_pb2.OpenSession(session_id=sid or session_id(), task=task, privacy=privacy, model_id=model_id,
                                   committee=committee(cluster, nodes, committee_id), party_index=index, **fields)
    return node_pb2.ClientMessage(open=request)


@dataclass
class Outcome:
    """How a raw call ended: its status code and details, what it received, and how long it took."""

    code: grpc.StatusCode
    details: str
    received: list[Any]
    seconds: float


async def finish(call: Any, started: float | None = None) -> Outcome:
    """Read a stream until it ends; the status it ended with."""
    start = time.monotonic() if started is None else started
    received = []
    try:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                break
            received.append(message)
    except grpc.aio.AioRpcError:
        pass
    except asyncio.CancelledError:
        pass
    return Outcome(await call.code(), await call.details() or "", received, time.monotonic() - start)


async def unary_outcome(coro: Coroutine[Any, Any, Any]) -> Outcome:
    """Await a unary call; its status (OK with the reply in `received`, or the error)."""
    start = time.monotonic()
    try:
        reply = await coro
    except grpc.aio.AioRpcError as exc:
        return Outcome(exc.code(), exc.details() or "", [], time.monotonic() - start)
    return Outcome(grpc.StatusCode.OK, "", [reply], time.monotonic() - start)


async def open_stream(cluster: Cluster, who: str | Identity, node: str, first: node_pb2.ClientMessage,
                      timeout: float = 10.0, expect_accept: bool = True) -> Any:
    """Open an Inference.Session stream, send `first`, and (by default) read the acceptance."""
    call = cluster.inference(who, node).Session(timeout=timeout)
    await call.write(first)
    if expect_accept:
        reply = await call.read()
        if reply is grpc.aio.EOF or not reply.HasField("accepted"):
            raise AssertionError(f"{node} did not accept: {reply}")
    return call


# ------------------------------------------------------------------------------------------------ a tiny model


def wait_until(predicate: Callable[[], bool], within_s: float, what: str, step_s: float = 0.05) -> float:
    """Poll `predicate` until true; returns the seconds it took, or raises AssertionError naming `what`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > within_s:
            raise AssertionError(f"{what} did not happen within {within_s} s")
        time.sleep(step_s)
    return time.monotonic() - start

