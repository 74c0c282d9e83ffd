"""Per-client admission: token bucket and concurrency cap per client certificate (unit tests on a fake clock), their
settings in the node's TOML, and the limits over real gRPC: RESOURCE_EXHAUSTED naming the limit, its value and when
to retry; other clients and other nodes unaffected; a secure session across a committee runs under a cap of one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
import torch

from secureinfer.net.certs import PeerCert
from secureinfer.net.wire import RETRY_AFTER
from secureinfer.nodes.admission import (Admission, AdmissionError, AdmissionSettings, RateLimited,
                                         TooManySessions)
from secureinfer.nodes.config import ConfigError, NodeConfig
from secureinfer.plaintext import reference as plaintext

from .committee import SECRET, running_committee
from .netutil import Cluster, LoopThread, Outcome, Pki, finish, open_message, wait_until
from .test_node_faults import logits

Code = grpc.StatusCode
ALICE, BOB, NODE = PeerCert("alice", "client", "f1"), PeerCert("bob", "client", "f2"), PeerCert("n1", "node", "f3")


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------------------------------------ unit


def test_token_bucket_allows_its_burst_then_says_when_to_retry() -> None:
    clock = Clock()
    admission = Admission(AdmissionSettings(rate_per_s=2.0, burst=3), "node-x", clock)
    for _ in range(3):
        admission.admit(ALICE).close()
    with pytest.raises(RateLimited) as refused:
        admission.admit(ALICE)
    assert refused.value.code == Code.RESOURCE_EXHAUSTED
    assert refused.value.retry_after_s == pytest.approx(0.5)
    message = str(refused.value)
    assert "alice" in message and "2 sessions/s" in message and "burst 3" in message and "retry in 0.50 s" in message
    admission.admit(BOB).close()  # another client has its own bucket
    clock.now += 0.25  # half a token: still refused, and told the rest of the wait
    with pytest.raises(RateLimited) as again:
        admission.admit(ALICE)
    assert again.value.retry_after_s == pytest.approx(0.25)
    clock.now += 0.25
    admission.admit(ALICE).close()
    clock.now += 100.0  # the bucket refills to its burst, no further
    for _ in range(3):
        admission.admit(ALICE).close()
    with pytest.raises(RateLimited):
        admission.admit(ALICE)


def test_concurrency_cap_is_freed_when_a_session_ends() -> None:
    admission = Admission(AdmissionSettings(max_concurrent=2), "node-x", Clock())
    first, second = admission.admit(ALICE), admission.admit(ALICE)
    with pytest.raises(TooManySessions) as refused:
        admission.admit(ALICE)
    assert refused.value.code == Code.RESOURCE_EXHAUSTED and refused.value.retry_after_s is None
    assert "limit of concurrent sessions is 2" in str(refused.value) and "retry when" in str(refused.value)
    with admission.admit(BOB):
        assert admission.active("bob") == 1
    assert admission.active("bob") == 0
    first.close()
    first.close()  # idempotent: frees one slot only
    assert admission.active("alice") == 1
    with admission.admit(ALICE):
        assert admission.active("alice") == 2
    second.close()
    assert admission.active("alice") == 0


def test_nodes_are_never_limited_and_no_limits_means_no_tracking() -> None:
    limited = Admission(AdmissionSettings(rate_per_s=0.001, burst=1, max_concurrent=1), clock=Clock())
    tickets = [limited.admit(NODE) for _ in range(20)]
    assert len(limited) == 0 and len(tickets) == 20
    open_door = Admission(AdmissionSettings(), clock=Clock())
    held = [open_door.admit(ALICE) for _ in range(50)]
    assert len(open_door) == 0 and len(held) == 50


def test_idle_clients_are_forgotten_so_memory_stays_bounded() -> None:
    clock = Clock()
    admission = Admission(AdmissionSettings(rate_per_s=10.0, burst=1, max_tracked=8), clock=clock)
    busy = admission.admit(PeerCert("busy", "client", "f"))
    for i in range(100):
        admission.admit(PeerCert(f"c{i}", "client", "f")).close()
        clock.now += 0.2  # each bucket refills within 0.1 s
        assert len(admission) <= 9
    assert admission.active("busy") == 1  # a client with a session running is kept
    busy.close()


@pytest.mark.parametrize("settings, fragment", [
    (dict(rate_per_s=0.0), "client_rate_per_s"),
    (dict(rate_per_s=float("nan")), "client_rate_per_s"),
    (dict(burst=3), "only meaningful"),
    (dict(rate_per_s=1.0, burst=0), "client_burst"),
    (dict(max_concurrent=0), "client_max_sessions"),
])
def test_bad_settings_are_refused(settings: dict, fragment: str) -> None:
    with pytest.raises(AdmissionError, match=fragment):
        AdmissionSettings(**settings)


def test_default_burst_is_the_rate_rounded_up() -> None:
    assert AdmissionSettings(rate_per_s=2.5).burst == 3
    assert AdmissionSettings(rate_per_s=0.1).burst == 1


# ------------------------------------------------------------------------------------------------ config


def test_node_toml_carries_the_client_limits(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[node]\nnode_id = "n0"\ncerts_dir = "certs"\nmax_sessions = 8\nclient_rate_per_s = 2\n'
                    'client_burst = 5\nclient_max_sessions = 3\n')
    config = NodeConfig.from_file(path)
    assert (config.client_rate_per_s, config.client_burst, config.client_max_sessions) == (2.0, 5, 3)
    settings = AdmissionSettings.from_config(config)
    assert (settings.rate_per_s, settings.burst, settings.max_concurrent) == (2.0, 5, 3)
    path.write_text(config.to_toml(relative_to=tmp_path))
    assert NodeConfig.from_file(path) == config
    plain = NodeConfig(node_id="n0", certs_dir=tmp_path)  # admission is on by default: every client is limited
    defaults = AdmissionSettings.from_config(plain)
    assert defaults.limited and (defaults.rate_per_s, defaults.burst, defaults.max_concurrent) == (50.0, 50, 2)
    assert "client_rate_per_s = 50.0" in plain.to_toml()


@pytest.mark.parametrize("max_sessions, cap", [(1, None), (2, 1), (3, 2), (4, 2), (8, 4), (9, 5)])
def test_no_one_client_holds_every_session_slot_by_default(tmp_path: Path, max_sessions: int, cap: int | None) -> None:
    """The default cap is half of max_sessions rounded up: always below it, except on a node of one slot."""
    config = NodeConfig(node_id="n0", certs_dir=tmp_path, max_sessions=max_sessions)
    assert config.client_session_cap == cap == AdmissionSettings.from_config(config).max_concurrent


@pytest.mark.parametrize("settings, fragment", [
    (dict(client_rate_per_s=-1.0), "client_rate_per_s: must be > 0"),
    (dict(client_rate_per_s=None, client_burst=2), "client_burst: only meaningful"),
    (dict(client_rate_per_s=1.0, client_burst=0), "client_burst: must be >= 1"),
    (dict(client_max_sessions=5, max_sessions=4), r"client_max_sessions: must be in 1..3 \(below max_sessions, 4,"),
    (dict(client_max_sessions=4, max_sessions=4), "so that no one client holds every session slot"),
    (dict(client_max_sessions=True), "client_max_sessions: expected an integer"),
])
def test_node_config_refuses_bad_client_limits(tmp_path: Path, settings: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        NodeConfig(node_id="n0", certs_dir=tmp_path, **settings)


# ------------------------------------------------------------------------------------------------ over gRPC


async def _bad_open(cluster: Cluster, who: str, node: str = "n0") -> tuple[Outcome, dict]:
    """A Session stream with a malformed open (admitted, then INVALID_ARGUMENT; or refused by admission)."""
    message = open_message(cluster, SECRET, 0, sid="short")
    call = cluster.inference(who, node).Session(timeout=10)
    await call.write(message)
    await call.done_writing()
    out = await finish(call)
    return out, dict(await call.trailing_metadata() or ())


def test_rate_limit_over_grpc_names_the_limit_and_when_to_retry(pki: Pki, loop: LoopThread) -> None:
    cluster = Cluster(pki, loop)
    try:
        daemon = cluster.start("n0", client_rate_per_s=0.5, client_burst=2)
        cluster.start("n1")
        outcomes = [cluster.run(_bad_open(cluster, "alice")) for _ in range(3)]
        assert [o.code for o, _ in outcomes] == [Code.INVALID_ARGUMENT, Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED]
        refused, meta = outcomes[2]
        assert "alice" in refused.details and "rate limit" in refused.details and "0.5 sessions/s" in refused.details
        assert "retry in" in refused.details, refused.details
        assert 0.0 < float(meta[RETRY_AFTER]) <= 2.0
        assert cluster.run(_bad_open(cluster, "bob"))[0].code == Code.INVALID_ARGUMENT  # bob has his own bucket
        for _ in range(5):  # another node calling is never rate limited (its open is judged, and refused, instead)
            assert cluster.run(_bad_open(cluster, "n1"))[0].code == Code.INVALID_ARGUMENT
        text = daemon.metrics.render().decode()
        assert 'secureinfer_admission_refused_total{limit="rate"} 1.0' in text
        assert 'secureinfer_admission_refused_total{limit="concurrency"} 0.0' in text
    finally:
        cluster.close()


def test_concurrency_cap_over_grpc_refuses_only_that_client(pki: Pki, loop: LoopThread) -> None:
    cluster = Cluster(pki, loop)
    try:
        cluster.start("n0", peer_wait_s=60.0, client_max_sessions=1)

        async def hold() -> object:  # a stream that says nothing holds alice's one slot until the peer wait ends
            return cluster.inference("alice", "n0").Session(timeout=90)

        held = cluster.run(hold())
        admission = cluster.daemons["n0"].admission
        wait_until(lambda: admission.active("alice") == 1, within_s=20.0, what="alice's held stream admitted")
        outcome: list[Outcome] = []

        def alice_refused() -> bool:
            outcome[:] = [cluster.run(_bad_open(cluster, "alice"))[0]]
            return outcome[0].code == Code.RESOURCE_EXHAUSTED

        wait_until(alice_refused, within_s=20.0, what="alice's second session refused")
        assert "limit of concurrent sessions is 1" in outcome[0].details and "alice" in outcome[0].details
        assert cluster.run(_bad_open(cluster, "bob"))[0].code == Code.INVALID_ARGUMENT

        async def cancel() -> None:
            held.cancel()
            await asyncio.sleep(0)

        cluster.run(cancel())
        wait_until(lambda: cluster.run(_bad_open(cluster, "alice"))[0].code == Code.INVALID_ARGUMENT, within_s=20.0,
                   what="alice's slot freed after her stream was cancelled")
        text = cluster.daemons["n0"].metrics.render().decode()
        assert 'secureinfer_admission_refused_total{limit="concurrency"}' in text
        assert 'secureinfer_admission_refused_total{limit="concurrency"} 0.0' not in text
    finally:
        cluster.close()


def test_secure_session_runs_under_a_cap_of_one(pki: Pki, loop: LoopThread) -> None:
    """Each node admits alice once; the nodes' links to each other are not counted against her."""
    with running_committee(pki, loop, 2.0, max_sessions=2, client_max_sessions=1, client_rate_per_s=20.0) as net:
        ids = torch.tensor([[2, 5, 7, 3]])
        for _ in range(2):
            got = logits(net, net.view(SECRET), ids)
            want = plaintext.gpt2_forward(net.cfg, net.params, ids)
            assert (got - want).abs().max().item() < 3e-3
