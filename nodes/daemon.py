"""The node daemon: a `grpc.aio` server with mutual TLS, sessions, gossip membership, health and metrics.

    secureinfer node serve --config node.toml

Start-up: load the identity (certs_dir), measure the capability record, open the performance store, bind the port
(written to `port_file`), sign this node's record and gossip it to the seeds and known peers every
`gossip_interval_s`; each round also pulls the performance records of one random peer that are new here
(nodes/records.py). SIGTERM or SIGINT stops accepting new sessions, gives running ones a grace period, then cancels
the rest and exits.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from secureinfer.mpc.comm.audit import FrameLog
from secureinfer.net.certs import NODE_SAN, Identity
from secureinfer.net.errors import Cancelled
from secureinfer.net.membership import MembershipTable, sign_record
from secureinfer.net.options import grpc_options, server_options
from secureinfer.perfstore import Store, open_store
from secureinfer.v1 import node_pb2, node_pb2_grpc

from . import capability, logs
from .admission import Admission, AdmissionSettings
from .batching import Batcher, BatchSettings
from .config import NodeConfig
from .logs import log_event
from .malformed import MalformedRequests
from .metrics import NodeMetrics
from .records import RecordBook, RecordSync
from .revocation import RevocationError, RevocationInterceptor, RevocationWatch
from .servicers import InferenceServicer, MembershipServicer, PeerServicer, RecordsServicer
from .sessions import NodeRuntime, SessionRegistry
from .store import ModelStore

GOSSIP_FANOUT = 2
# Leakage audit (tests and debugging only, off by default): when set, every message a session of this node receives
# is written under $SECUREINFER_AUDIT_DIR/<node_id>/ (secureinfer.mpc.comm.audit.FrameLog). Never set it in
# production: the files hold this party's shares (useless alone, but the other parties' logs beside them would open
# every secret).
AUDIT_ENV = "SECUREINFER_AUDIT_DIR"
GOSSIP_TIMEOUT_S = 3.0
ABSENT_SEED_EVERY = 4  # gossip rounds between calls to seeds missing from the live view


class NodeDaemon:
    """One node: call `start()`, then `wait()` until stopped; `stop()` shuts it down gracefully."""

    def __init__(self, config: NodeConfig, *, peer_wait_s: float | None = None) -> None:
        """`peer_wait_s` overrides the config's (tests use short waits)."""
        if peer_wait_s is not None and peer_wait_s <= 0:
            raise ValueError(f"peer_wait_s must be > 0, got {peer_wait_s}")
        self.config = config
        self.peer_wait_s = config.peer_wait_s if peer_wait_s is None else peer_wait_s
        self.logger = logs.configure(config.node_id, config.log_level)
        self.identity = Identity.load(config.certs_dir, config.node_id)
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
        watch = RevocationWatch(path, self.identity.ca_pem, required)
        reason = watch.reason(self.identity.cert_pem)
        if reason is not None:
            raise RevocationError(f"{self.config.cert_path}: {reason}")
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
        """Measure, bind, serve; returns the bound port."""
        cfg = self.config
        self.capability = capability.measure(self.device)
        self.records = RecordBook(self._open_perf_store())
        self._sync = RecordSync(self.records, self.dial, timeout_s=GOSSIP_TIMEOUT_S)
        runtime = NodeRuntime(identity=self.identity, roles=cfg.roles, device=self.device, store=self.store,
                              max_sessions=cfg.max_sessions, session_timeout_s=cfg.session_timeout_s,
                              max_payload_bytes=4 << 30, shaping=cfg.link.model(), dial=self.dial,
                              peer_wait_s=self.peer_wait_s, audit=self._audit_log(),
                              batcher=Batcher(BatchSettings(cfg.batch_window_s, cfg.batch_max_rows), self.registry,
                                              self.metrics, self.logger))
        server = grpc.aio.server(options=server_options(cfg.max_message_bytes), interceptors=[
            RevocationInterceptor(self.revocation, self._log_refused), MalformedRequests()])
        self.admission = Admission(AdmissionSettings.from_config(cfg), cfg.node_id)
        node_pb2_grpc.add_InferenceServicer_to_server(
            InferenceServicer(runtime, self.registry, self.metrics, self.logger, self.admission), server)
        node_pb2_grpc.add_PeerServicer_to_server(PeerServicer(runtime, self.registry, self.logger), server)
        node_pb2_grpc.add_MembershipServicer_to_server(
            MembershipServicer(self.table, self.registry, cfg.node_id, self.metrics), server)
        node_pb2_grpc.add_RecordsServicer_to_server(RecordsServicer(self.records, self.logger), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        self.port = server.add_secure_port(f"{cfg.host}:{cfg.port}", self.identity.server_credentials())
        if self.port == 0:
            raise OSError(f"could not bind {cfg.host}:{cfg.port}")
        await server.start()
        self._server = server
        self.address = cfg.advertised_address(self.port)
        self._refresh_record()
        if cfg.metrics_port is not None:
            metrics_port = self.metrics.serve(cfg.metrics_port)
            log_event(self.logger, "INFO", "metrics endpoint up", metrics_port=metrics_port)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._tasks.append(asyncio.create_task(self._gossip_loop()))
        if cfg.port_file is not None:
            _write_atomic(cfg.port_file, f"{self.port}\n")
        log_event(self.logger, "INFO", "node serving", address=self.address, roles=list(cfg.roles),
                  device=self.capability.device, gflops=round(self.capability.matmul_gflops, 1))
        return self.port

    def _open_perf_store(self) -> Store:
        """The performance store at the config's path (created if new), or a private in-memory one."""
        path = self.config.perf_store_path()
        if path is None:
            log_event(self.logger, "INFO", "performance records kept in memory (set data_dir or perf_store to keep "
                      "them across restarts)")
        return open_store(":memory:" if path is None else path)

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
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        deadline = time.monotonic() + grace_s
        while len(self.registry) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.registry.abort_all(Cancelled("the node is shutting down"))
        if self._server is not None:
            await self._server.stop(1.0)
        for channel in self._channels.values():
            await channel.close()
        if self.records is not None:
            self.records.store.close()
        self.metrics.close()
        self._stopped.set()

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
        targets = [(r.address, r.node_id) for r in self.table.sample_peers(GOSSIP_FANOUT, self._rng)]
        absent_seeds_due = self._gossip_rounds % ABSENT_SEED_EVERY == 0  # a dead seed costs a timeout: not every round
        known = {r.address for r in self.table.live()}
        targets += [(seed, NODE_SAN) for seed in self.config.seeds if seed != self.address and
                    (len(targets) < GOSSIP_FANOUT or (absent_seeds_due and seed not in known))]
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
