"""The node daemon: a `grpc.aio` server with mutual TLS, sessions, gossip membership, health and metrics.

    secureinfer node serve --config node.toml

Start-up: load the identity (certs_dir), check the port is free, serve metrics, measure the capability record, open
the performance store, host again the models kept in data_dir (nodes/vault.py), bind the port (written to `port_file`), sign this node's record and gossip it to the seeds
and known peers every `gossip_interval_s`; each round also pulls the performance records of one random peer that
are new here (nodes/records.py). A setting that cannot be used at start-up (a port in use, unreadable certificates,
a performance store that does not open) stops the start with an error that names its key, and whatever was already
open is closed. SIGTERM or SIGINT stops accepting new sessions, gives running ones a grace period, then cancels the
rest and exits.
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
import signal
import socket
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from secureinfer.mpc.comm.audit import FrameLog
from secureinfer.mpc.models.serving import StepLimits
from secureinfer.net.certs import CertError, Identity
from secureinfer.net.errors import Cancelled
from secureinfer.net.membership import MembershipTable, gossip_targets, sign_record
from secureinfer.net.options import grpc_options, server_options
from secureinfer.perfstore import Store, StoreError, open_store
from secureinfer.v1 import node_pb2, node_pb2_grpc

from . import capability, logs, publishing
from .admission import Admission, AdmissionSettings
from .batching import Batcher, BatchSettings
from .capability import CapabilityError
from .config import ConfigError, NodeConfig
from .logs import log_event
from .malformed import MalformedRequests
from .metrics import MetricsError, NodeMetrics
from .records import RecordBook, RecordSync
from .revocation import RevocationError, RevocationInterceptor, RevocationWatch
from .servicers import InferenceServicer, MembershipServicer, PeerServicer, RecordsServicer
from .sessions import NodeRuntime, SessionRegistry
from .store import ModelStore
from .vault import Vault, VaultError

GOSSIP_FANOUT = 2
# Leakage audit (tests and debugging only, off by default): when set, every message a session of this node receives
# is written under $SECUREINFER_AUDIT_DIR/<node_id>/ (secureinfer.mpc.comm.audit.FrameLog). Never set it in
# production: the files hold this party's shares (useless alone, but the other parties' logs beside them would open
# every secret).
AUDIT_ENV = "SECUREINFER_AUDIT_DIR"
GOSSIP_TIMEOUT_S = 3.0
ABSENT_SEED_EVERY = 4  # gossip rounds between calls to seeds missing from the live view
# gRPC binds with SO_REUSEPORT by default: a second node configured with the same port would share it, each taking
# some of the connections. A node's port is its own.
EXCLUSIVE_PORT = ("grpc.so_reuseport", 0)


class StartupError(ConfigError):
    """A setting the daemon cannot use as configured (a port in use, a performance store that does not open, ...);
    the message starts with the setting's key."""


class NodeDaemon:
    """One node: call `start()`, then `wait()` until stopped; `stop()` shuts it down gracefully."""

    def __init__(self, config: NodeConfig, *, peer_wait_s: float | None = None) -> None:
        """`peer_wait_s` overrides the config's (tests use short waits)."""
        if peer_wait_s is not None and peer_wait_s <= 0:
            raise ValueError(f"peer_wait_s must be > 0, got {peer_wait_s}")
        self.config = config
        self.peer_wait_s = config.peer_wait_s if peer_wait_s is None else peer_wait_s
        self.logger = logs.configure(config.node_id, config.log_level)
        try:
            self.identity = Identity.load(config.certs_dir, config.node_id)
        except CertError as exc:
            raise CertError(_keyed("certs_dir", exc)) from None
        self.revocation = self._load_revocation()
        self.device = config.resolved_device()
        self.metrics = NodeMetrics()
        self.store = ModelStore()
        self.registry = SessionRegistry(config.max_sessions)
        self.table = MembershipTable(self.identity.ca_pem, config.node_id, revoked=self.revocation.is_revoked)
        self.health = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        self._channels: dict[tuple[str, str], grpc.aio.Channel] = {}
        self._server: grpc.aio.Server | None = None
        self._stopped = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._rng = random.Random()
        self._gossip_rounds = 0
        self.capability: node_pb2.Capability | None = None
        self.records: RecordBook | None = None  # the performance store, opened by start()
        self.vault: Vault | None = None  # the hosted models kept across restarts (data_dir), opened by start()
        self._sync: RecordSync | None = None
        self.address = ""
        self.port = 0

    def _audit_log(self) -> FrameLog | None:
        """The inbound-message log if AUDIT_ENV asks for one (tests only), else None."""
        root = os.environ.get(AUDIT_ENV, "")
        if not root:
            return None
        log_event(self.logger, "WARNING", "audit log on: every inbound message is written to disk (leakage audit; "
                  "not for production)", audit_dir=str(Path(root) / self.config.node_id))
        return FrameLog(Path(root) / self.config.node_id)

    # --- revocation (nodes/revocation.py) ----------------------------------------------------------------------------

    def _load_revocation(self) -> RevocationWatch:
        """The network's revocation list; refuse to start when this node's own certificate is on it."""
        path, required = self.config.revocation_path()
        try:
            watch = RevocationWatch(path, self.identity.ca_pem, required)
        except RevocationError as exc:
            raise RevocationError(_keyed("revocation_list", exc)) from None
        reason = watch.reason(self.identity.cert_pem)
        if reason is not None:
            raise RevocationError(f"revocation_list: {self.config.cert_path}: {reason}")
        return watch

    def _log_refused(self, reason: str) -> None:
        log_event(self.logger, "WARNING", "call refused: revoked certificate", reason=reason)

    def check_revocations(self) -> list[str]:
        """Re-read the revocation list if its file changed and drop the records of newly revoked nodes (each gossip
        round); returns their node ids."""
        try:
            changed = self.revocation.refresh()
        except RevocationError as exc:
            log_event(self.logger, "WARNING", "revocation list not reloaded", reason=str(exc))
            return []
        if not changed:
            return []
        gone = self.table.forget_revoked()
        log_event(self.logger, "INFO", "revocation list updated", number=self.revocation.current.number,
                  revoked=len(self.revocation.current.serials), dropped_nodes=gone)
        if self.revocation.is_revoked(self.identity.cert_pem):
            log_event(self.logger, "ERROR", "this node's own certificate is revoked; peers refuse it")
        return gone

    # --- channels to other nodes -----------------------------------------------------------------------------------

    def dial(self, address: str, node_id: str) -> grpc.aio.Channel:
        """A cached mutual-TLS channel to `address`, which must present `node_id`'s certificate (or any node's,
        for NODE_SAN)."""
        key = (address, node_id)
        if key not in self._channels:
            options = grpc_options(self.config.max_message_bytes) + self.identity.channel_options(node_id)
            self._channels[key] = grpc.aio.secure_channel(address, self.identity.channel_credentials(), options)
        return self._channels[key]

    # --- lifecycle -------------------------------------------------------------------------------------------------

    async def start(self) -> int:
        """Check the settings, measure, bind, serve; returns the bound port. A setting that cannot be used raises
        (StartupError names its key) after closing whatever was already open, so a failed start leaves nothing
        running."""
        try:
            return await self._start()
        except BaseException:
            await self._release(server_grace_s=None)
            self._stopped.set()
            raise

    async def _start(self) -> int:
        """Each start-up step in turn, the ones a setting can fail first; the bound port."""
        cfg = self.config
        _check_listenable(cfg.host, cfg.port)
        if cfg.metrics_port is not None:
            self._serve_metrics(cfg.metrics_port)
        try:
            self.capability = capability.measure(self.device)
        except CapabilityError as exc:
            raise StartupError(_keyed("device", exc)) from None
        self.records = RecordBook(self._open_perf_store())
        self._sync = RecordSync(self.records, self.dial, timeout_s=GOSSIP_TIMEOUT_S)
        self.vault = self._open_vault()
        if self.vault is not None:
            publishing.restore_kept(self.vault, self.store, self.device, self.logger,
                                   ca_pem=self.identity.ca_pem)
        # Bound last and started at once: gRPC keeps the port of a server that never started until the process ends.
        self._server = server = grpc.aio.server(
            options=server_options(cfg.max_message_bytes) + [EXCLUSIVE_PORT],
            interceptors=[RevocationInterceptor(self.revocation, self._log_refused), MalformedRequests()])
        self.port = _bind(server, cfg.host, cfg.port, self.identity.server_credentials())
        self.address = cfg.advertised_address(self.port)
        self._add_servicers(server)
        await server.start()
        self._refresh_record()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        if cfg.port_file is not None:
            try:
                _write_atomic(cfg.port_file, f"{self.port}\n")
            except OSError as exc:
                raise StartupError(f"port_file: cannot write {cfg.port_file}: {exc.strerror}") from None
        self._tasks.append(asyncio.create_task(self._gossip_loop()))
        log_event(self.logger, "INFO", "node serving", address=self.address, roles=list(cfg.roles),
                  device=self.capability.device, gflops=round(self.capability.matmul_gflops, 1))
        return self.port

    def _add_servicers(self, server: grpc.aio.Server) -> None:
        """The node's services (inference, peer, membership, records, health) on `server`, before it starts."""
        cfg = self.config
        runtime = NodeRuntime(identity=self.identity, roles=cfg.roles, device=self.device, store=self.store,
                              max_sessions=cfg.max_sessions, session_timeout_s=cfg.session_timeout_s,
                              max_payload_bytes=cfg.session_memory_bytes, shaping=cfg.link.model(), dial=self.dial,
                              peer_wait_s=self.peer_wait_s, audit=self._audit_log(),
                              batcher=Batcher(BatchSettings(cfg.batch_window_s, cfg.batch_max_rows), self.registry,
                                              self.metrics, self.logger),
                              max_inbox_bytes=cfg.inbox_bytes, max_model_bytes=cfg.max_model_bytes,
                              step_limits=StepLimits(cfg.session_max_rows, cfg.session_memory_bytes), vault=self.vault,
                              peers=self.table)
        self.admission = Admission(AdmissionSettings.from_config(cfg), cfg.node_id)
        node_pb2_grpc.add_InferenceServicer_to_server(
            InferenceServicer(runtime, self.registry, self.metrics, self.logger, self.admission), server)
        node_pb2_grpc.add_PeerServicer_to_server(PeerServicer(runtime, self.registry, self.logger), server)
        node_pb2_grpc.add_MembershipServicer_to_server(
            MembershipServicer(self.table, self.registry, cfg.node_id, self.metrics), server)
        node_pb2_grpc.add_RecordsServicer_to_server(RecordsServicer(self.records, self.logger), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)

    def _serve_metrics(self, port: int) -> None:
        """The Prometheus endpoint on `port` (StartupError naming metrics_port where it cannot listen)."""
        try:
            bound = self.metrics.serve(port)
        except MetricsError as exc:
            raise StartupError(_keyed("metrics_port", exc)) from None
        log_event(self.logger, "INFO", "metrics endpoint up", metrics_port=bound)

    def _open_perf_store(self) -> Store:
        """The performance store at the config's path (created if new), or a private in-memory one."""
        path = self.config.perf_store_path()
        if path is None:
            log_event(self.logger, "INFO", "performance records kept in memory (set data_dir or perf_store to keep "
                      "them across restarts)")
            return open_store(":memory:")
        key = "perf_store" if self.config.perf_store is not None else "data_dir"
        try:
            return open_store(path)
        except StoreError as exc:
            raise StartupError(_keyed(key, exc)) from None
        except OSError as exc:  # its folder cannot be made (a file is in the way, no permission)
            raise StartupError(f"{key}: cannot create {exc.filename or path.parent}: {exc.strerror}") from None

    def _open_vault(self) -> Vault | None:
        """Where hosted models are kept across restarts: data_dir's vault (made on the first start), or None."""
        if self.config.data_dir is None:
            log_event(self.logger, "INFO", "hosted models kept in memory only (set data_dir to keep them, encrypted, "
                      "across restarts)")
            return None
        try:
            vault = Vault.open(self.config.data_dir, self.config.node_id, self.config.max_model_bytes)
        except VaultError as exc:
            raise StartupError(_keyed("data_dir", exc)) from None
        except OSError as exc:
            raise StartupError(f"data_dir: cannot use {exc.filename or self.config.data_dir}: {exc.strerror}") from None
        if vault.key_exposed():
            log_event(self.logger, "WARNING", "the hosted-model key is readable by others: chmod 600 it",
                      key=str(vault.key_path))
        return vault

    async def _set_health(self, status: int) -> None:
        result = self.health.set("", status)
        if asyncio.iscoroutine(result):
            await result

    async def wait(self) -> None:
        await self._stopped.wait()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop gossip, refuse new calls, give running sessions `grace_s`, cancel the rest, close channels."""
        if self._stopped.is_set():
            return
        log_event(self.logger, "INFO", "node stopping", active_sessions=len(self.registry))
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._cancel_tasks()
        deadline = time.monotonic() + grace_s
        while len(self.registry) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.registry.abort_all(Cancelled("the node is shutting down"))
        await self._release(server_grace_s=1.0)
        self._stopped.set()

    async def _release(self, server_grace_s: float | None) -> None:
        """Close what start() opened: gossip, the server (after `server_grace_s`), channels, store, metrics."""
        await self._cancel_tasks()
        if self._server is not None:
            await self._server.stop(server_grace_s)
        for channel in self._channels.values():
            await channel.close()
        if self.records is not None:
            self.records.store.close()
        self.metrics.close()

    async def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    # --- membership ------------------------------------------------------------------------------------------------

    def _refresh_record(self) -> None:
        """Re-sign this node's record with a new heartbeat (wall-clock ns, so it rises across restarts too)."""
        record = node_pb2.NodeRecord(
            node_id=self.config.node_id, address=self.address, roles=list(self.config.roles),
            capability=self.capability, models=self.store.records(), healthy=True, heartbeat=time.time_ns(),
            issued_at=time.time(), ttl_s=self.config.record_ttl_s)
        self.table.set_self(sign_record(self.identity, record))
        self.metrics.set_hosted_models(len(self.store))

    async def _gossip_loop(self) -> None:
        while True:
            try:
                self.check_revocations()
                self._refresh_record()
                await self.gossip_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - gossip must survive anything a peer does
                log_event(self.logger, "WARNING", "gossip round failed", reason=str(exc))
            try:
                await self.sync_records_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - as above: a peer's bad reply must not stop the loop
                log_event(self.logger, "WARNING", "record sync failed", reason=str(exc))
            await asyncio.sleep(self.config.gossip_interval_s * self._rng.uniform(0.8, 1.2))

    async def gossip_once(self) -> None:
        """Push-pull with up to GOSSIP_FANOUT known peers, and with every seed this node's live view lacks (until
        some peer is known: all of them; later: a seed that restarted empty, or whose record expired while it was
        away, would otherwise never hear from the nodes that had dropped it)."""
        self._gossip_rounds += 1
        targets = gossip_targets(self.table, self.config.seeds, self.address, self._gossip_rounds, self._rng,
                                 GOSSIP_FANOUT, ABSENT_SEED_EVERY)
        request = node_pb2.GossipRequest(records=self.table.live())
        for address, node_id in targets:
            stub = node_pb2_grpc.MembershipStub(self.dial(address, node_id))
            try:
                reply = await stub.Gossip(request, timeout=GOSSIP_TIMEOUT_S)
            except grpc.aio.AioRpcError:
                continue
            before = self.table.rejected
            self.table.merge(list(reply.records))
            if self.table.rejected > before:
                self.metrics.record_rejected(self.table.rejected - before)
        self.metrics.gossip_round()
        self.metrics.set_known_nodes(len(self.table.live()))


    async def sync_records_once(self) -> int:
        """Anti-entropy with one random live peer: fetch the performance records it has and this node lacks;
        returns how many were new here."""
        if self._sync is None:
            return 0
        peers = self.table.sample_peers(1, self._rng)
        if not peers:
            return 0
        try:
            return await self._sync.pull_from(peers[0].address, peers[0].node_id)
        except grpc.aio.AioRpcError as exc:
            log_event(self.logger, "DEBUG", "record sync: peer did not answer", peer=peers[0].node_id,
                      status=exc.code().name)
            return 0


def _keyed(key: str, error: Exception) -> str:
    """`error`'s message led by the config key it concerns (unless it already starts with the key)."""
    text = str(error)
    return text if text.startswith((f"{key}:", f"{key} ")) else f"{key}: {text}"


def _listen_address(host: str, port: int) -> str:
    """host:port as gRPC and people read it (an IPv6 host in brackets)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _check_listenable(host: str, port: int) -> None:
    """Raise StartupError naming `host` or `port` unless host:port can be listened on now (asked before gRPC binds:
    its own failure says neither which address nor why)."""
    try:
        addresses = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"host: cannot resolve {host!r}: {exc.strerror}") from None
    failures = []
    for family, kind, proto, _name, sockaddr in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                failures.append(exc)
    taken = [exc for exc in failures if exc.errno in (errno.EADDRINUSE, errno.EACCES)]
    if taken or (failures and len(failures) == len(addresses)):
        key = "port" if taken else "host"
        raise StartupError(f"{key}: cannot listen on {_listen_address(host, port)}: {(taken or failures)[0].strerror}")


def _bind(server: grpc.aio.Server, host: str, port: int, credentials: grpc.ServerCredentials) -> int:
    """Bind `server` to host:port (port 0: a free one, checked by _check_listenable first); the bound port, or
    StartupError naming the setting."""
    address = _listen_address(host, port)
    try:
        bound = server.add_secure_port(address, credentials)
    except RuntimeError:  # taken between the check and now; gRPC has logged its own line
        bound = 0
    if bound == 0:
        raise StartupError(f"port: cannot listen on {address}")
    return bound


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def serve(config: NodeConfig) -> None:
    """Run a node until SIGTERM or SIGINT."""
    daemon = NodeDaemon(config)
    await daemon.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(daemon.stop()))
    await daemon.wait()
