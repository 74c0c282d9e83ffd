"""The in-memory network: FIFO order, Lamport round counting, byte counters, errors, abort, and link timing."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from secureinfer.mpc import runtime
from secureinfer.mpc.comm import CommError, CommStats, LinkModel, MemoryNetwork, payload_bytes

NAMES = ["A", "B", "C"]


def net(**kw) -> tuple[MemoryNetwork, dict]:
    network = MemoryNetwork(NAMES, **kw)
    return network, {n: network.channel(n) for n in NAMES}


def test_fifo_per_link():
    _, ch = net()
    for i in range(20):
        ch["A"].send("B", torch.tensor([i]))
        ch["C"].send("B", f"c{i}".encode())
    assert [ch["B"].recv("A").item() for _ in range(20)] == list(range(20))
    assert [ch["B"].recv("C") for _ in range(20)] == [f"c{i}".encode() for i in range(20)]


def test_independent_sends_cost_one_round():
    _, ch = net()
    ch["A"].send("B", b"x")
    ch["A"].send("C", b"y")
    ch["B"].send("C", b"z")
    ch["B"].recv("A")
    ch["C"].recv("A")
    ch["C"].recv("B")
    assert [ch[n].stats.rounds for n in NAMES] == [0, 1, 1]


def test_chain_of_k_exchanges_costs_k_rounds():
    _, ch = net()
    k = 7
    hops = ["A", "B", "C"]
    for step in range(k):
        frm, to = hops[step % 3], hops[(step + 1) % 3]
        ch[frm].send(to, torch.tensor([step]))
        assert ch[to].recv(frm).item() == step
    last = hops[k % 3]
    assert ch[last].stats.rounds == k
    # A simultaneous exchange (everyone sends, then everyone receives) adds exactly one round to the critical path.
    before = {n: ch[n].stats.rounds for n in NAMES}
    for i, n in enumerate(NAMES):
        ch[n].send(NAMES[(i + 1) % 3], b"m")
    for i, n in enumerate(NAMES):
        ch[n].recv(NAMES[(i - 1) % 3])
    assert max(ch[n].stats.rounds for n in NAMES) == max(before.values()) + 1


def test_byte_and_message_counters():
    _, ch = net()
    a = ch["A"]
    before = a.stats.snapshot()
    a.send("B", torch.zeros(10, dtype=torch.int64))  # 80 bytes
    a.send("C", torch.zeros((2, 3), dtype=torch.int32))  # 24 bytes
    a.send("C", b"12345")  # 5 bytes
    assert (a.stats.messages_sent, a.stats.bytes_sent) == (3, 109)
    assert a.stats.bytes_to == {"B": 80, "C": 29}
    delta = a.stats.since(before)
    assert (delta.messages_sent, delta.bytes_sent, delta.rounds) == (3, 109, 0)
    # Receiving costs the receiver no bytes.
    ch["B"].recv("A")
    assert ch["B"].stats.bytes_sent == 0 and ch["B"].stats.messages_sent == 0
    assert payload_bytes(torch.zeros(4, 4, dtype=torch.float64)) == 128
    assert isinstance(delta, CommStats)


def test_tag_mismatch_raises():
    _, ch = net()
    ch["A"].send("B", b"x", tag="step1")
    with pytest.raises(CommError, match="step1"):
        ch["B"].recv("A", tag="step2")
    # An untagged receive accepts any tag; matching tags pass.
    ch["A"].send("B", b"y", tag="t")
    assert ch["B"].recv("A") == b"y"
    ch["A"].send("B", b"z", tag="t")
    assert ch["B"].recv("A", tag="t") == b"z"


def test_recv_timeout_raises():
    _, ch = net(timeout_s=0.2)
    with pytest.raises(CommError, match="timed out"):
        ch["A"].recv("B")


def test_bad_addresses():
    network, ch = net()
    with pytest.raises(CommError):
        ch["A"].send("A", b"self")
    with pytest.raises(CommError):
        ch["A"].send("Z", b"nobody")
    with pytest.raises(ValueError):
        network.channel("Z")
    with pytest.raises(ValueError):
        MemoryNetwork(["A", "A"])


def test_abort_fails_pending_and_future_receives():
    network, ch = net(timeout_s=60.0)
    caught: list[BaseException] = []

    def waiter():
        try:
            ch["B"].recv("A")
        except BaseException as exc:  # noqa: BLE001
            caught.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.1)
    network.abort(RuntimeError("party A died"))
    t.join(timeout=20)
    assert not t.is_alive()
    assert len(caught) == 1 and isinstance(caught[0], CommError) and "aborted" in str(caught[0])
    assert "party A died" in str(caught[0])
    # Future receives fail too, even when a message is queued; the first reason wins.
    ch["A"].send("C", b"late")
    network.abort(RuntimeError("second"))
    with pytest.raises(CommError, match="party A died"):
        ch["C"].recv("A")


def test_simulate_reraises_a_party_error(config):
    def program(p):
        if p.index == 1:
            raise ValueError("boom in P1")
        return p.recv(p.next)  # P0 waits for P1, P2 for P0: both must be released by the abort

    with pytest.raises(ValueError, match="boom in P1"):
        runtime.simulate(program, config=config, timeout_s=60.0)


def test_link_model_validation():
    with pytest.raises(ValueError):
        LinkModel(latency_s=-1.0)
    with pytest.raises(ValueError):
        LinkModel(bandwidth_bytes_per_s=0)
    assert LinkModel.lan().bandwidth_bytes_per_s == 125e6
    assert LinkModel.wan().latency_s == 0.02


def test_link_model_delays_delivery():
    """A message of N bytes at bandwidth B arrives no sooner than N/B + latency; back-to-back ones queue up."""
    n, bw, lat = 40_000, 1e6, 0.03
    _, ch = net(link=LinkModel(latency_s=lat, bandwidth_bytes_per_s=bw))
    payload = torch.zeros(n // 8, dtype=torch.int64)
    t0 = time.monotonic()
    ch["A"].send("B", payload)
    ch["A"].send("B", payload)
    ch["B"].recv("A")
    t1 = time.monotonic()
    ch["B"].recv("A")
    t2 = time.monotonic()
    slack = 1e-3  # clock granularity only; no upper bounds are asserted
    assert t1 - t0 >= n / bw + lat - slack
    assert t2 - t0 >= 2 * n / bw + lat - slack
    # Latency-only links delay too; the reverse link is independent of the busy forward link.
    _, ch = net(link=LinkModel(latency_s=0.02))
    t0 = time.monotonic()
    ch["B"].send("A", b"x")
    ch["A"].recv("B")
    assert time.monotonic() - t0 >= 0.02 - slack
