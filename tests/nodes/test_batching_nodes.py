"""Batched secure requests over real gRPC (nodes/batching.py): concurrent clients' steps run as one MPC forward, each
client getting only its own rows.

Three daemons (n0, n1, n2) host a tiny GPT-2 and a tiny BERT as secret shares. The nodes batch with a long window
(3 s) and max_rows = 5, so concurrent requests of 5 rows in all close their group the moment the last one joins (no
timing luck needed) and a request that cannot join waits the window and runs alone. Accuracy: fixed point with
randomized truncations, so each client's output is checked against float64 plaintext of its own input with the
secret-weights tests' tolerances (TOL); generations must give plaintext's greedy tokens. Batch membership is read
from each node's metrics (batches run, request steps inside them).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from secureinfer import strategy
from secureinfer.client.connection import Connector, SessionSpec
from secureinfer.models.sampling import SamplingConfig
from secureinfer.mpc.comm import Channel
from secureinfer.mpc.models import serving
from secureinfer.mpc.party import PARTY_NAMES, EngineConfig
from secureinfer.plaintext import reference as plaintext
from secureinfer.v1 import node_pb2

from .committee import SECRET, Net, publish, running_committee
from .netutil import LoopThread, Pki, tiny_config, tiny_params

BATCHED = strategy.SecureStrategy(batch_requests=True)
TOL = {"bert": 5e-4, "gpt2": 3e-3}  # as tests/mpc/models/test_secure_models.py
MAX_ROWS = 5


@pytest.fixture(scope="module")
def net(pki: Pki, loop: LoopThread) -> Iterator[Net]:
    with running_committee(pki, loop, peer_wait_s=5.0, batch_window_s=3.0, batch_max_rows=MAX_ROWS,
                           max_sessions=8) as running:
        cfg, params = bert()
        publish(running.olivia, running.view(SECRET), cfg, params, model_id="bert")
        yield running


@pytest.fixture(scope="module")
def bob(pki: Pki, net: Net) -> Iterator[Connector]:
    connector = Connector(pki.identity("bob"), [net.cluster.address("n0")], timeout_s=60)
    yield connector
    connector.close()


def bert() -> tuple[Any, dict[str, torch.Tensor]]:
    cfg = tiny_config(arch="bert", act="gelu", type_vocab_size=2, norm_eps=1e-12, bos_token_id=None,
                      eos_token_ids=())
    return cfg, tiny_params(cfg, seed=3)


def ids_of(rows: int, length: int, seed: int, vocab: int = 13) -> torch.Tensor:
    return torch.randint(0, vocab, (rows, length), generator=torch.Generator().manual_seed(seed))


def batch_counts(net: Net) -> list[tuple[float, float]]:
    """(batches run OK, request steps inside batches) on each node, once every session has ended."""
    net.run(net.cluster.wait_idle(SECRET, within_s=10.0))
    out = []
    for node in SECRET:
        registry = net.cluster.daemons[node].metrics.registry
        out.append((registry.get_sample_value("secureinfer_batches_total", {"status": "OK"}) or 0.0,
                    registry.get_sample_value("secureinfer_batched_steps_total") or 0.0))
    return out


def counted(net: Net, run: Callable[[], Any]) -> tuple[Any, tuple[int, int]]:
    """`run()`'s result and the (batches, batched steps) it added, the same on every node."""
    before = batch_counts(net)
    out = run()
    after = batch_counts(net)
    deltas = {(int(a[0] - b[0]), int(a[1] - b[1])) for a, b in zip(after, before)}
    assert len(deltas) == 1, f"the nodes disagree on the batches they ran: {before} -> {after}"
    return out, deltas.pop()


def together(*jobs: Callable[[], Any]) -> list[Any]:
    """Run the jobs in concurrent threads; their results (or the exceptions they raised), in order."""
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(job) for job in jobs]
        out = []
        for future in futures:
            try:
                out.append(future.result(timeout=120))
            except Exception as exc:  # noqa: BLE001 - a job's failure is part of what is checked
                out.append(exc)
        return out


def encode(connector: Connector, net: Net, ids: torch.Tensor, mask: torch.Tensor,
           crash: str = "") -> Callable[[], torch.Tensor]:
    """A job: a batched BERT embedding through the SDK's session plumbing; `crash` makes the client die after
    sending its tokens ("before output") or after the first party's output share ("during output")."""
    cfg, _ = bert()
    spec = SessionSpec(task=node_pb2.TASK_ENCODE, privacy=node_pb2.PRIVACY_SECRET, model_id="olivia/bert",
                       output="embedding", strategy_json=strategy.to_json(BATCHED))

    def program(channel: Channel) -> torch.Tensor:
        if not crash:
            return serving.client_encode(channel, cfg, EngineConfig(), ids, mask)[0]
        serving.wait_ready(channel)
        for p in PARTY_NAMES:
            channel.send(p, b"step", "ctrl")
            channel.send(p, serving.bert_meta(ids, mask, None), "meta")
        serving.SECRET.send_tokens(channel, cfg, EngineConfig(), ids)
        if crash == "during output":
            channel.recv(PARTY_NAMES[0], "output")
        else:
            time.sleep(0.3)
        raise RuntimeError(f"client crashed {crash}")

    return lambda: connector.run_session(net.view(SECRET), spec, program, timeout_s=60)


def close(name: str, got: torch.Tensor, want: torch.Tensor, tol: float) -> None:
    assert got.shape == want.shape, (name, tuple(got.shape), tuple(want.shape))  # its own rows, nobody else's
    diff = (got - want).abs().max().item()
    print(f"{name}: max abs diff {diff:.2e} (tolerance {tol:g})")
    assert diff <= tol, name


# ------------------------------------------------------------------------------------------------ encoders


def requests() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Four BERT requests of 1 + 2 + 1 + 1 = MAX_ROWS rows and different lengths (padded inside the batch)."""
    shapes = [(1, 5), (2, 3), (1, 7), (1, 4)]
    out = []
    for seed, (rows, length) in enumerate(shapes):
        ids = ids_of(rows, length, seed)
        mask = torch.ones_like(ids)
        if rows == 2:
            mask[1, 2:] = 0
        out.append((ids, mask))
    return out


def test_concurrent_encodes_run_as_one_batch_and_each_gets_its_own_rows(net: Net, bob: Connector) -> None:
    cfg, params = bert()
    jobs = [encode(net.alice if i % 2 else bob, net, ids, mask) for i, (ids, mask) in enumerate(requests())]
    results, (batches, steps) = counted(net, lambda: together(*jobs))
    assert (batches, steps) == (1, 4)  # one forward held all four requests' steps
    for i, ((ids, mask), got) in enumerate(zip(requests(), results)):
        assert isinstance(got, torch.Tensor), got
        close(f"client {i} embedding", got, plaintext.sentence_embedding(cfg, params, ids, mask), TOL["bert"])


@pytest.mark.parametrize("crash", ["before output", "during output"])
def test_a_client_that_goes_away_does_not_disturb_the_others(net: Net, bob: Connector, crash: str) -> None:
    cfg, params = bert()
    reqs = requests()
    jobs = [encode(net.alice if i % 2 else bob, net, ids, mask, crash=crash if i == 1 else "")
            for i, (ids, mask) in enumerate(reqs)]
    results, (batches, steps) = counted(net, lambda: together(*jobs))
    assert isinstance(results[1], Exception) and "crashed" in str(results[1]), results[1]
    print(f"client 1 crashed {crash}: {batches} batch(es), {steps} request steps in them")
    assert batches == 1 and steps in (3, 4)  # the crashed client's step ran in the batch, or was left out of it
    if crash == "during output":
        assert steps == 4
    for i in (0, 2, 3):
        ids, mask = reqs[i]
        close(f"client {i} beside a crashed client", results[i],
              plaintext.sentence_embedding(cfg, params, ids, mask), TOL["bert"])


# ------------------------------------------------------------------------------------------------ decoders


def generate(connector: Connector, net: Net, prompt: torch.Tensor, tokens: int) -> Callable[[], Any]:
    spec = SessionSpec(task=node_pb2.TASK_DECODE, privacy=node_pb2.PRIVACY_SECRET, model_id="olivia/tiny", output="last",
                       strategy_json=strategy.to_json(BATCHED))

    def program(channel: Channel) -> serving.Generation:
        results, _ = serving.client_generate_many(channel, net.cfg, EngineConfig(), [prompt], tokens,
                                                  SamplingConfig(), torch.tensor([], dtype=torch.int64))
        return results[0]

    return lambda: connector.run_session(net.view(SECRET), spec, program, timeout_s=60)


def test_concurrent_generations_step_together(net: Net, bob: Connector) -> None:
    prompts = [ids_of(2, 3, seed=10), ids_of(3, 3, seed=11)]  # 5 rows: every step's group is full at once
    results, (batches, steps) = counted(net, lambda: together(generate(net.alice, net, prompts[0], 3),
                                                              generate(bob, net, prompts[1], 3)))
    assert (batches, steps) == (3, 6)  # prefill and two decode steps, each one batch of both requests
    for i, (prompt, got) in enumerate(zip(prompts, results)):
        assert isinstance(got, serving.Generation), got
        want = plaintext.greedy_generate(net.cfg, net.params, prompt, 3, eos_token_ids=())
        print(f"client {i}: batched {got.tokens.tolist()} plaintext {want.tolist()}")
        assert torch.equal(got.tokens, want)
        full = plaintext.gpt2_forward(net.cfg, net.params, torch.cat([prompt, want[:, :-1]], dim=1))
        for s in range(3):  # the logits each token was chosen from: its own rows at each step
            close(f"client {i} step {s} logits", got.logits[s], full[:, prompt.shape[1] - 1 + s], TOL["gpt2"])


def test_steps_that_cannot_join_run_alone(net: Net, bob: Connector) -> None:
    """Decoder steps of different lengths never share a forward: each waits out the window and runs alone."""
    spec = SessionSpec(task=node_pb2.TASK_DECODE, privacy=node_pb2.PRIVACY_SECRET, model_id="olivia/tiny", output="all",
                       strategy_json=strategy.to_json(BATCHED))
    prompts = [ids_of(1, 3, seed=12), ids_of(1, 4, seed=13)]

    def job(connector: Connector, ids: torch.Tensor) -> Callable[[], torch.Tensor]:
        def program(channel: Channel) -> torch.Tensor:
            return serving.client_logits(channel, net.cfg, EngineConfig(), ids, (ids.shape[1],))[0]

        return lambda: connector.run_session(net.view(SECRET), spec, program, timeout_s=60)

    results, (batches, steps) = counted(net, lambda: together(job(net.alice, prompts[0]), job(bob, prompts[1])))
    assert (batches, steps) == (2, 2)
    for i, (ids, got) in enumerate(zip(prompts, results)):
        close(f"client {i} logits (alone)", got, plaintext.gpt2_forward(net.cfg, net.params, ids), TOL["gpt2"])


def test_unbatched_requests_are_not_batched(net: Net) -> None:
    spec = SessionSpec(task=node_pb2.TASK_DECODE, privacy=node_pb2.PRIVACY_SECRET, model_id="olivia/tiny", output="all")
    ids = ids_of(1, 3, seed=14)

    def program(channel: Channel) -> torch.Tensor:
        return serving.client_logits(channel, net.cfg, EngineConfig(), ids, (3,))[0]

    got, (batches, steps) = counted(net, lambda: net.alice.run_session(net.view(SECRET), spec, program))
    assert (batches, steps) == (0, 0)
    close("unbatched logits", got, plaintext.gpt2_forward(net.cfg, net.params, ids), TOL["gpt2"])
