"""Multi-host runs on one machine: every node in its own network namespace with its own address, links capped by tbf
(secureinfer.lab.netns). Secure generation across namespaces equals the in-process run; a cap visibly limits the bytes a
node puts on its link per second; a link cut mid-request (`ip link set eth0 down`) ends in a clear error, or in a
retry on the other committee, within a bounded time, and the surviving nodes stay healthy.

These need root, iproute2 and a kernel that allows network namespaces and tbf (CI runs as root on such a machine);
elsewhere they skip, saying why. Tolerances: tokens exactly equal; GPT-2 logits 3e-3 absolute (as test_network.py).
Caps are asserted loosely (the 2-core box is noisy): TCP throughput within [0.5, 1.15] x cap; a capped request's
wall time at least 0.9 x (bytes on the link - tbf bucket) / cap, its wire rate at most 1.15 x cap.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch

from secureinfer.client import Client
from secureinfer.client.connection import RequestFailed
from secureinfer.lab.netns import PREFIX, NetnsConfig, NetnsNetwork, remove_stale_namespaces, unavailable_reason
from secureinfer.lab.simulate import SimulationConfig
from secureinfer.mpc.models import session
from secureinfer.plaintext import reference as plaintext

from .conftest import node_processes, random_ids

TOL_GPT2 = 3e-3
CUT_BOUND_S = 60.0  # a cut link must fail the request (or be retried around) well inside this; the deadline is 300 s


@pytest.fixture(scope="module")
def netns_ok() -> None:
    """Skip the module, with the reason, where namespaced networks cannot run."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"namespaced networks unavailable: {reason}")


def _namespaces(tag: str) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=20).stdout
    return [line.split()[0] for line in listed.splitlines() if line.startswith(tag)]


@pytest.fixture
def netns_factory(netns_ok: None, tmp_path: Path) -> Iterator[Callable[..., NetnsNetwork]]:
    """Start namespaced networks for one test; every node, namespace and veth is gone afterwards, failures included."""
    started: list[NetnsNetwork] = []

    def make(n_nodes: int = 3, rate_bits_per_s: float | None = None, **kwargs: Any) -> NetnsNetwork:
        kwargs.setdefault("workdir", tmp_path / f"net{len(started)}")
        network = NetnsNetwork(SimulationConfig(n_nodes=n_nodes, **kwargs), NetnsConfig(rate_bits_per_s))
        started.append(network)
        return network.start()

    try:
        yield make
    finally:
        for network in started:
            network.stop()
        for network in started:
            assert not node_processes(network.workdir), "node processes outlived their network"
            assert not _namespaces(network.tag), "namespaces outlived their network"


def _wire_bytes(network: NetnsNetwork) -> dict[str, tuple[int, int]]:
    return {n: network.link_bytes(n) for n in network.node_ids}


def _active_sessions(client: Client, address: str) -> int:
    with Client(client.identity, [address], timeout_s=10.0) as seed_only:
        return seed_only.connector.status().active_sessions


# ------------------------------------------------------------------------------------------------ harness


def test_stale_namespaces_of_a_dead_run_are_removed_and_live_ones_kept(netns_ok):
    dead_pid = 2 ** 22 + 7  # above the kernel's pid_max ceiling: no process can have it
    stale, live = f"{PREFIX}-{dead_pid}-abcdef-hub", f"{PREFIX}-{os.getpid()}-abcdef-hub"
    for name in (stale, live):
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=20)
    try:
        removed = remove_stale_namespaces()
        assert stale in removed and live not in removed
        assert _namespaces(stale) == [] and _namespaces(live) == [live]
    finally:
        for name in (stale, live):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)


def test_config_is_checked():
    with pytest.raises(ValueError, match="rate_bits_per_s"):
        NetnsConfig(rate_bits_per_s=0.0)
    with pytest.raises(ValueError, match="burst_bytes"):
        NetnsConfig(rate_bits_per_s=1e6, burst_bytes=10)
    with pytest.raises(ValueError, match="subnet_prefix"):
        NetnsConfig(subnet_prefix="10.213.1")
    assert NetnsConfig().burst_for(1e9) == 1_250_000 and NetnsConfig().burst_for(1e6) == 64 * 1024


# ------------------------------------------------------------------------------------------------ correctness


def test_secure_generation_across_namespaces_equals_in_process(netns_factory, tiny_models):
    network = netns_factory(3, rate_bits_per_s=1e9)
    addresses = {n: network.address(n).rsplit(":", 1)[0] for n in network.node_ids}
    print(f"nodes at {addresses}, client at {network.root_address}")
    assert len(set(addresses.values())) == 3 and not any(a.startswith("127.") for a in addresses.values())
    cfg, params = tiny_models["gpt2"]
    network.owner().publish("tiny-gpt2", cfg, params)
    prompt = random_ids(1, 5, seed=21)
    before = _wire_bytes(network)
    got = network.client().generate("tiny-gpt2", prompt, 4)
    after = _wire_bytes(network)
    want, _ = session.secure_generate(cfg, params, prompt, 4)
    print(f"namespaces {got.tokens.tolist()} in-process {want.tokens.tolist()}")
    assert torch.equal(got.tokens, want.tokens)
    assert torch.equal(got.tokens, plaintext.greedy_generate(cfg, params, prompt, 4))
    assert (got.logits - want.logits).abs().max().item() < 2 * TOL_GPT2
    # the parties' traffic really crossed their own interfaces (not loopback)
    sent = {n: after[n][1] - before[n][1] for n in network.node_ids}
    print(f"bytes each node sent on its eth0: {sent}")
    assert all(v > 100_000 for v in sent.values())


# ------------------------------------------------------------------------------------------------ bandwidth caps


def test_tbf_cap_limits_bytes_per_second_on_every_link(netns_factory, tiny_models):
    rate = 8e6  # 8 Mbit/s: 1 MB/s
    network = netns_factory(3, rate_bits_per_s=rate)
    tcp = network.throughput("node-1", 2 << 20) * 8
    print(f"TCP from node-1's namespace: {tcp / 1e6:.2f} Mbit/s under an {rate / 1e6:.0f} Mbit/s cap")
    assert 0.5 * rate < tcp < 1.15 * rate
    cfg, params = tiny_models["gpt2"]
    network.owner().publish("tiny-gpt2", cfg, params)
    client = network.client()
    ids = random_ids(4, 24, seed=22)  # about 9 MB per node: bandwidth-bound at 1 MB/s
    before = _wire_bytes(network)
    start = time.monotonic()
    got = client.logits("tiny-gpt2", ids)
    elapsed = time.monotonic() - start
    after = _wire_bytes(network)
    sent = max(after[n][1] - before[n][1] for n in network.node_ids)
    received = max(after[n][0] - before[n][0] for n in network.node_ids)
    burst = network.netns.burst_for(rate)
    floor = (max(sent, received) - burst) * 8 / rate
    print(f"capped request: {elapsed:.1f} s, busiest link {max(sent, received) / 1e6:.1f} MB "
          f"({max(sent, received) * 8 / elapsed / 1e6:.2f} Mbit/s), bandwidth floor {floor:.1f} s")
    assert (got - plaintext.gpt2_forward(cfg, params, ids)).abs().max().item() < TOL_GPT2
    assert sent > 2_000_000
    assert elapsed >= 0.9 * floor
    assert max(sent, received) * 8 / elapsed <= 1.15 * rate


# ------------------------------------------------------------------------------------------------ link cuts


def test_link_cut_mid_generation_fails_clearly_and_survivors_stay_healthy(netns_factory, tiny_models):
    network = netns_factory(3)
    cfg, params = tiny_models["gpt2"]
    network.owner().publish("tiny-gpt2", cfg, params)
    client = network.client(timeout_s=300.0)
    victim = client.committees("tiny-gpt2")[0].node_ids[1]
    cut_at: list[float] = []

    def on_token(_token: torch.Tensor) -> None:
        if not cut_at:
            network.cut_link(victim)
            cut_at.append(time.monotonic())

    with pytest.raises(RequestFailed) as failed:
        client.generate("tiny-gpt2", random_ids(1, 4, seed=23), 12, on_token=on_token)
    elapsed = time.monotonic() - cut_at[0]
    print(f"cut {victim}'s link after the first token; the client failed {elapsed:.1f} s later: {failed.value}")
    assert failed.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert elapsed < CUT_BOUND_S
    survivors = [n for n in network.node_ids if n != victim]
    assert network.is_running(victim)  # only its link is gone
    assert network.health(victim, timeout_s=3.0) == "UNREACHABLE"
    assert {n: network.health(n) for n in survivors} == {n: "SERVING" for n in survivors}
    deadline = time.monotonic() + 30.0
    while any(_active_sessions(client, network.address(n)) for n in survivors):
        assert time.monotonic() < deadline, "the survivors kept the failed session open"
        time.sleep(0.5)
    # the link comes back: the node is reachable again and the committee serves the next request
    network.restore_link(victim)
    deadline = time.monotonic() + 30.0
    while network.health(victim, timeout_s=3.0) != "SERVING":
        assert time.monotonic() < deadline, f"{victim} is not SERVING 30 s after its link came back"
        time.sleep(0.5)
    client.wait_for_model("tiny-gpt2", timeout_s=30.0)  # its record expired while cut; gossip brings it back
    prompt = random_ids(1, 4, seed=24)
    again = client.generate("tiny-gpt2", prompt, 3)
    assert torch.equal(again.tokens, plaintext.greedy_generate(cfg, params, prompt, 3))


@pytest.mark.slow
def test_link_cut_mid_request_is_retried_on_the_other_committee(netns_factory, tiny_models):
    network = netns_factory(6, record_ttl_s=60.0)
    cfg, params = tiny_models["gpt2"]
    views = network.owner().publish("tiny-gpt2", cfg, params, committees=2)
    assert len(views) == 2 and not set(views[0].node_ids) & set(views[1].node_ids)
    client = network.client(timeout_s=300.0)
    order = client.committees("tiny-gpt2")
    victim = order[0].node_ids[2]
    tried: list[str] = []
    cut_at: list[float] = []
    run_session = client.connector.run_session

    def spy(view, spec, program, timeout_s=None, cancel=None):
        tried.append(view.committee_id)

        def cut_then_run(channel):  # the session is open on all three nodes: cut one before the prefill
            if view.committee_id == order[0].committee_id:
                network.cut_link(victim)
                cut_at.append(time.monotonic())
            return program(channel)

        return run_session(view, spec, cut_then_run, timeout_s, cancel)

    client.connector.run_session = spy
    prompt = random_ids(1, 4, seed=25)
    got = client.generate("tiny-gpt2", prompt, 3)
    elapsed = time.monotonic() - cut_at[0]
    print(f"cut {victim} inside committee {order[0].committee_id}; retried on {tried[-1]}, done {elapsed:.1f} s later")
    assert tried == [order[0].committee_id, order[1].committee_id]
    assert torch.equal(got.tokens, plaintext.greedy_generate(cfg, params, prompt, 3))
    assert elapsed < CUT_BOUND_S
    alive = [n for n in network.node_ids if n != victim]
    assert {n: network.health(n) for n in alive} == {n: "SERVING" for n in alive}
