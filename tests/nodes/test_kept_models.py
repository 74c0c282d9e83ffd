"""Hosted models survive restarts (nodes/vault.py, nodes/publishing.py), over real gRPC with mutual TLS: a node with
a data directory keeps what it hosts (secret shares, a public-weights committee's open weights, a plaintext model),
encrypted at rest, and after a restart, or being killed, serves them again and lists them in its record without
republishing. Corrupt, truncated and foreign files are refused with a log line and skipped; a node without a data
directory keeps nothing.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import torch

from secureinfer.client.connection import Connector, SessionSpec
from secureinfer.mpc.comm import Channel
from secureinfer.mpc.models import serving
from secureinfer.mpc.party import EngineConfig
from secureinfer.net.membership import CommitteeView
from secureinfer.nodes.config import NodeConfig
from secureinfer.plaintext import reference as plaintext
from secureinfer.v1 import node_pb2, node_pb2_grpc

from .committee import publish
from .fuzzutil import NodeProcess, wait_known
from .netutil import Cluster, LoopThread, Pki, tiny_config, tiny_params, wait_until

SECRET_NODES = ("n0", "n1", "n2")
IDS = torch.tensor([[2, 5, 7, 3]])
TOLERANCE = 3e-3  # secure logits vs float64 plaintext (tiny model, 18 fractional bits)


class Collected(logging.Handler):
    """Every log record of the node loggers it is attached to."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def of(self, message: str) -> list[logging.LogRecord]:
        return [r for r in self.records if r.getMessage() == message]


def view(cluster: Cluster, committee_id: str, nodes: tuple[str, ...], addresses: dict[str, str] | None = None
         ) -> CommitteeView:
    secret = len(nodes) == 3
    where = addresses or {n: cluster.address(n) for n in nodes}
    return CommitteeView(committee_id, nodes, tuple(where[n] for n in nodes),
                         node_pb2.PRIVACY_SECRET if secret else node_pb2.PRIVACY_PUBLIC)


def logits(client: Connector, committee: CommitteeView, cfg, model_id: str = "olivia/tiny") -> torch.Tensor:
    spec = SessionSpec(task=node_pb2.TASK_DECODE, privacy=committee.privacy, model_id=model_id, output="all")
    io = serving.SECRET if committee.privacy == node_pb2.PRIVACY_SECRET else serving.PUBLIC

    def program(channel: Channel) -> torch.Tensor:
        return serving.client_logits(channel, cfg, EngineConfig(), IDS, (IDS.shape[1],), io)[0]

    return client.run_session(committee, spec, program, timeout_s=60)


def hosted(cluster: Cluster, node: str) -> set[tuple[str, str]]:
    """(model, committee) of every model `node` lists."""
    async def go() -> set[tuple[str, str]]:
        reply = await cluster.inference("alice", node).ListModels(node_pb2.ListModelsRequest(), timeout=5)
        return {(m.model_id, m.committee_id) for m in reply.models}

    return cluster.run(go())


def start(cluster: Cluster, name: str, data: Path | None, port: int = 0) -> None:
    """Node `name` keeping its models in data/name (None: no data directory), logging at INFO (restores show)."""
    cluster.start(name, data_dir=None if data is None else data / name, port=port, log_level="INFO")


def restart(cluster: Cluster, name: str, data: Path | None) -> None:
    """Stop node `name` and start it again on the same port (its channels and committee addresses stay valid)."""
    port = cluster.daemons[name].port
    cluster.stop(name)
    start(cluster, name, data, port)


@pytest.fixture
def collected() -> Iterator[Collected]:
    handler = Collected()
    loggers = [logging.getLogger(f"secureinfer.node.{n}") for n in SECRET_NODES]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


def test_every_kind_of_hosted_model_is_served_again_after_a_restart(pki: Pki, loop: LoopThread, tmp_path: Path,
                                                                    collected: Collected) -> None:
    cluster = Cluster(pki, loop)
    owner = Connector(pki.identity("olivia"), ["127.0.0.1:9"], timeout_s=60)
    client = Connector(pki.identity("alice"), ["127.0.0.1:9"], timeout_s=60)
    cfg, params = tiny_config(), tiny_params(tiny_config())
    want = plaintext.gpt2_forward(cfg, params, IDS)
    try:
        for name in SECRET_NODES:
            start(cluster, name, tmp_path)
        publish(owner, view(cluster, "c-shares", SECRET_NODES), cfg, params)
        publish(owner, view(cluster, "c-open", SECRET_NODES), cfg, params, public_weights=True)
        publish(owner, view(cluster, "c-plain", ("n0",)), cfg, params)
        before = {n: hosted(cluster, n) for n in SECRET_NODES}
        for name in SECRET_NODES:
            restart(cluster, name, tmp_path)
        assert {n: hosted(cluster, n) for n in SECRET_NODES} == before
        assert ("olivia/tiny", "c-plain") in before["n0"] and len(before["n1"]) == 2
        for committee in ("c-shares", "c-open"):
            got = logits(client, view(cluster, committee, SECRET_NODES), cfg)
            assert (got - want).abs().max().item() < TOLERANCE, committee
        assert torch.allclose(logits(client, view(cluster, "c-plain", ("n0",)), cfg), want, atol=1e-9)
        assert len(collected.of("kept model restored")) == 7 and not collected.of("kept model refused")
        for name in SECRET_NODES:  # at rest: nothing in the clear, a key only the node reads
            key = tmp_path / name / "models.key"
            assert key.stat().st_mode & 0o077 == 0
            for file in (tmp_path / name / "models").glob("*.model"):
                assert b"olivia" not in file.read_bytes()
    finally:
        owner.close()
        client.close()
        cluster.close()


def test_corrupt_truncated_and_foreign_files_are_refused_and_skipped(pki: Pki, loop: LoopThread, tmp_path: Path,
                                                                     collected: Collected) -> None:
    cluster = Cluster(pki, loop)
    owner = Connector(pki.identity("olivia"), ["127.0.0.1:9"], timeout_s=60)
    cfg, params = tiny_config(), tiny_params(tiny_config())
    try:
        for name in SECRET_NODES:
            start(cluster, name, tmp_path)
        publish(owner, view(cluster, "c-shares", SECRET_NODES), cfg, params)
        publish(owner, view(cluster, "c-plain", ("n0",)), cfg, params)
        models = tmp_path / "n0" / "models"
        good = sorted(models.glob("*.model"))
        assert len(good) == 2
        port = cluster.daemons["n0"].port
        cluster.stop("n0")
        corrupt = bytearray(good[0].read_bytes())
        corrupt[len(corrupt) // 2] ^= 1
        (models / "corrupt.model").write_bytes(bytes(corrupt))
        (models / "truncated.model").write_bytes(good[0].read_bytes()[:-40])
        shutil.copy(next((tmp_path / "n1" / "models").glob("*.model")), models / "foreign.model")
        (models / "garbage.model").write_bytes(b"\x00" * 100)
        start(cluster, "n0", tmp_path, port)
        assert hosted(cluster, "n0") == {("olivia/tiny", "c-shares"), ("olivia/tiny", "c-plain")}
        reasons = {Path(r.file).name: r.reason for r in collected.of("kept model refused")}
        assert set(reasons) == {"corrupt.model", "truncated.model", "foreign.model", "garbage.model"}, reasons
        assert "does not open" in reasons["corrupt.model"] and "truncated" in reasons["truncated.model"]
        assert "written by node 'n1'" in reasons["foreign.model"] and "bad magic" in reasons["garbage.model"]
        assert all(r.levelname == "WARNING" for r in collected.of("kept model refused"))
    finally:
        owner.close()
        cluster.close()


def test_a_node_without_a_data_directory_keeps_nothing(pki: Pki, loop: LoopThread, tmp_path: Path) -> None:
    cluster = Cluster(pki, loop)
    owner = Connector(pki.identity("olivia"), ["127.0.0.1:9"], timeout_s=60)
    cfg = tiny_config()
    try:
        start(cluster, "n0", None)
        publish(owner, view(cluster, "c-plain", ("n0",)), cfg, tiny_params(cfg))
        assert hosted(cluster, "n0") == {("olivia/tiny", "c-plain")}
        restart(cluster, "n0", None)
        assert hosted(cluster, "n0") == set()
    finally:
        owner.close()
        cluster.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_node_killed_and_restarted_serves_its_shares_without_republishing(pki: Pki, loop: LoopThread,
                                                                           tmp_path: Path) -> None:
    """n0 runs as its own process: SIGKILL it while it holds shares, start it again on the same port and data
    directory, and the committee's requests succeed with no publish in between."""
    cluster = Cluster(pki, loop)
    owner = Connector(pki.identity("olivia"), ["127.0.0.1:9"], timeout_s=60)
    client = Connector(pki.identity("alice"), ["127.0.0.1:9"], timeout_s=60)
    cfg, params = tiny_config(), tiny_params(tiny_config())
    for name in ("n1", "n2"):
        cluster.start(name, peer_wait_s=5.0, gossip_interval_s=0.25)
    # n0 finds its peers, and they it, by gossip through n1 (nodes dial peers from their membership tables)
    config = NodeConfig(node_id="n0", certs_dir=pki.directory, port=free_port(), data_dir=tmp_path / "n0",
                        port_file=tmp_path / "n0.port", peer_wait_s=5.0, log_level="INFO",
                        seeds=(cluster.address("n1"),), gossip_interval_s=0.25)
    node = NodeProcess(config, tmp_path / "run")
    try:
        wait_known(cluster, client, node.address)
        addresses = {"n0": node.address, "n1": cluster.address("n1"), "n2": cluster.address("n2")}
        committee = view(cluster, "c-shares", SECRET_NODES, addresses)
        publish(owner, committee, cfg, params)
        want = plaintext.gpt2_forward(cfg, params, IDS)
        assert (logits(client, committee, cfg) - want).abs().max().item() < TOLERANCE
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(timeout=10)
        config.port_file.unlink()
        node = NodeProcess(config, tmp_path / "run")
        assert node.address == addresses["n0"]
        wait_until(lambda: ("olivia/tiny", "c-shares") in _listed(client, node.address), 20.0, "n0 listing it")
        wait_known(cluster, client, node.address)
        got = logits(client, committee, cfg)
        assert (got - want).abs().max().item() < TOLERANCE
        assert "kept model restored" in node.log_path.read_text()
    finally:
        node.stop()
        owner.close()
        client.close()
        cluster.close()


def _listed(client: Connector, address: str) -> set[tuple[str, str]]:
    """(model, committee) of every model the node at `address` (n0) lists; empty while it does not answer."""
    async def go() -> set[tuple[str, str]]:
        stub = node_pb2_grpc.InferenceStub(client.channel(address, "n0"))
        reply = await stub.ListModels(node_pb2.ListModelsRequest(), timeout=5)
        return {(m.model_id, m.committee_id) for m in reply.models}

    try:
        return client.loop_thread.run(go(), timeout=10)
    except grpc.aio.AioRpcError:
        return set()
