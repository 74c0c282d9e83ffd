"""Real node processes over mutual TLS: secure and public requests against in-process and plaintext references,
the operator CLI, refusal of foreign certificates, and failures (a node killed mid-request, a dead committee).

Tolerances are those of tests/mpc/models/test_secure_models.py (accurate profile, f = 18): GPT-2 logits 3e-3, LLaMA
logits 2e-2 absolute; BERT sentence embeddings cosine > 0.99999. Public requests run the float64 plaintext forward
on the worker and must match it to 1e-12.
"""

from __future__ import annotations

import subprocess
import sys
import time

import grpc
import pytest
import torch

from secureinfer.client import Client
from secureinfer.client.connection import NetworkError, RequestFailed, SessionSpec
from secureinfer.mpc.models import session
from secureinfer.net import certs
from secureinfer.net.certs import Identity
from secureinfer.plaintext import reference as plaintext
from secureinfer.v1 import node_pb2, node_pb2_grpc

from .conftest import random_ids

TOL = {"gpt2": 3e-3, "llama": 2e-2}


@pytest.fixture(scope="module")
def published(local_network, tiny_models):
    """The tiny models published to the shared 3-node network: secret GPT-2, LLaMA and BERT, public GPT-2."""
    owner = local_network.owner()
    for name in ("gpt2", "llama", "bert"):
        cfg, params = tiny_models[name]
        owner.publish(f"tiny-{name}", cfg, params)
    cfg, params = tiny_models["gpt2"]
    owner.publish("tiny-gpt2", cfg, params, privacy="public")
    return tiny_models


def _all_serving(network) -> dict[str, str]:
    return {n: network.health(n) for n in network.node_ids if network.is_running(n)}


def _active_sessions(client: Client, address: str) -> int:
    seed_only = Client(client.identity, [address], timeout_s=10.0)
    try:
        return seed_only.connector.status().active_sessions
    finally:
        seed_only.close()


# ------------------------------------------------------------------------------------------------ correctness


def test_secure_generation_equals_in_process_session(local_network, published):
    cfg, params = published["gpt2"]
    prompt = random_ids(1, 5, seed=11)
    got = local_network.client().generate("tiny-gpt2", prompt, 4)
    want, _ = session.secure_generate(cfg, params, prompt, 4)
    greedy = plaintext.greedy_generate(cfg, params, prompt, 4)
    print(f"network {got.tokens.tolist()} in-process {want.tokens.tolist()} plaintext {greedy.tolist()}")
    assert torch.equal(got.tokens, want.tokens)
    assert torch.equal(got.tokens, greedy)
    # each step's opened logits against the plaintext forward of the same positions
    n = got.tokens.shape[1]
    full = plaintext.gpt2_forward(cfg, params, torch.cat([prompt, got.tokens], dim=1))
    reference = full[0, prompt.shape[1] - 1: prompt.shape[1] - 1 + n]
    err = (got.logits[:, 0] - reference).abs().max().item()
    print(f"generation logits: max |diff| vs plaintext {err:.2e}")
    assert err < TOL["gpt2"]
    assert (got.logits - want.logits).abs().max().item() < 2 * TOL["gpt2"]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_secure_logits_within_tolerance_of_plaintext(local_network, published, arch):
    cfg, params = published[arch]
    ids = random_ids(2, 6, seed=12)
    got = local_network.client().logits(f"tiny-{arch}", ids)
    want = plaintext.causal_lm_forward(cfg)(cfg, params, ids)
    err = (got - want).abs().max().item()
    top1 = (got.argmax(-1) == want.argmax(-1)).double().mean().item()
    print(f"{arch} logits over the network: max |diff| {err:.2e} (tol {TOL[arch]:.0e}), top-1 agreement {top1:.3f}")
    assert got.shape == want.shape
    assert err < TOL[arch]


def test_secure_bert_embeddings_match_plaintext(local_network, published):
    cfg, params = published["bert"]
    ids = random_ids(3, 8, seed=13)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    got = local_network.client().embed("tiny-bert", ids, mask)
    want = plaintext.sentence_embedding(cfg, params, ids, mask)
    cos = torch.nn.functional.cosine_similarity(got, want, dim=-1)
    print(f"bert embeddings over the network: min cosine {cos.min().item():.8f}")
    assert got.shape == want.shape
    assert cos.min() > 0.99999


def test_public_request_equals_plaintext_forward(local_network, published):
    cfg, params = published["gpt2"]
    ids = random_ids(2, 7, seed=14)
    got = local_network.client().logits("tiny-gpt2", ids, privacy="public")
    want = plaintext.gpt2_forward(cfg, params, ids)
    assert got.dtype == torch.float64 and got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-12


# ------------------------------------------------------------------------------------------------ operators


def test_network_status_cli_lists_every_node_and_model(local_network, published):
    out = subprocess.run([sys.executable, "-m", "secureinfer", "network", "status", "--seed", local_network.seed,
                          "--certs", str(local_network.certs_dir), "--name", "client"],
                         capture_output=True, text=True, timeout=60)
    print(out.stdout)
    assert out.returncode == 0, out.stderr
    for node_id, address in zip(local_network.node_ids, local_network.addresses):
        assert any(line.startswith(node_id) and address in line for line in out.stdout.splitlines())
    assert "3 live node(s)" in out.stdout
    assert "hosts owner/tiny-gpt2 (gpt2, secret)" in out.stdout and "hosts owner/tiny-gpt2 (gpt2, public)" in out.stdout


def test_foreign_certificates_are_refused_and_nodes_stay_healthy(local_network, published, tmp_path):
    other = tmp_path / "other-ca"
    certs.create_ca(other, common_name="an attacker's CA")
    certs.issue(other, "client", "client")
    foreign = Identity.load(other, "client")
    real_ca = local_network.certs_dir.joinpath("ca.pem").read_bytes()
    # trusts the network's CA (it is public) but presents a certificate the network's CA never signed
    impostor = Identity(name="client", role="client", cert_pem=foreign.cert_pem, key_pem=foreign.key_pem,
                        ca_pem=real_ca)
    view = local_network.client().committees("tiny-gpt2")[0]
    spec = SessionSpec(task=node_pb2.TASK_DECODE, privacy=node_pb2.PRIVACY_SECRET, model_id="tiny-gpt2",
                       output="all")
    for identity in (foreign, impostor):
        client = Client(identity, local_network.addresses, timeout_s=30.0)
        try:
            start = time.monotonic()
            with pytest.raises(NetworkError, match="no seed node answered"):
                client.nodes()
            with pytest.raises(RequestFailed) as failed:
                client.connector.run_session(view, spec, lambda channel: None)
            elapsed = time.monotonic() - start
        finally:
            client.close()
        print(f"refused in {elapsed:.2f} s: {failed.value}")
        assert failed.value.code == grpc.StatusCode.UNAVAILABLE
        assert elapsed < 20.0
    # plain TLS without any client certificate: the handshake itself fails
    channel = grpc.secure_channel(local_network.seed, grpc.ssl_channel_credentials(root_certificates=real_ca),
                                  options=Identity.channel_options("node-0"))
    try:
        with pytest.raises(grpc.RpcError) as no_cert:
            node_pb2_grpc.MembershipStub(channel).Status(node_pb2.StatusRequest(), timeout=10.0)
    finally:
        channel.close()
    assert no_cert.value.code() == grpc.StatusCode.UNAVAILABLE
    assert set(_all_serving(local_network).values()) == {"SERVING"}
    assert len(local_network.client().nodes()) == 3


# ------------------------------------------------------------------------------------------------ failures


def test_node_killed_mid_generation_fails_fast_and_survivors_stay_healthy(network_factory, tiny_models):
    network = network_factory(3)
    cfg, params = tiny_models["gpt2"]
    network.owner().publish("tiny-gpt2", cfg, params)
    client = network.client(timeout_s=300.0)
    victim = client.committees("tiny-gpt2")[0].node_ids[1]
    killed_at: list[float] = []

    def on_token(_token: torch.Tensor) -> None:
        if not killed_at:
            network.kill(victim)
            killed_at.append(time.monotonic())

    with pytest.raises(RequestFailed) as failed:
        client.generate("tiny-gpt2", random_ids(1, 4, seed=15), 12, on_token=on_token)
    elapsed = time.monotonic() - killed_at[0]
    print(f"killed {victim} after the first token; client failed {elapsed:.2f} s later: {failed.value}")
    assert failed.value.code == grpc.StatusCode.UNAVAILABLE
    assert elapsed < 20.0  # the client's deadline is 300 s
    survivors = [n for n in network.node_ids if n != victim]
    assert not network.is_running(victim)
    assert {n: network.health(n) for n in survivors} == {n: "SERVING" for n in survivors}
    deadline = time.monotonic() + 20.0
    while any(_active_sessions(client, network.address(n)) for n in survivors):
        assert time.monotonic() < deadline, "the survivors kept the failed session open"
        time.sleep(0.25)


def _wait_until_every_node_sees(network, model_id: str, committee_ids: list[str], within_s: float = 15.0) -> None:
    """Gossip has spread both committees to every node, in the client's order: whichever seed answers after the kill,
    the client sees the dead node's committee first (else it would rightly never try it)."""
    identity = Identity.load(network.certs_dir, "client")
    for address in network.addresses:
        with Client(identity, [address], timeout_s=10.0) as one_seed:
            deadline = time.monotonic() + within_s
            while [v.committee_id for v in one_seed.committees(model_id)] != committee_ids:
                assert time.monotonic() < deadline, f"{address} does not show {committee_ids} after {within_s} s"
                time.sleep(0.2)


def _committees_tried(client: Client) -> list[str]:
    """The committee ids the client opens sessions on from now on, in order (its connector spied on)."""
    tried: list[str] = []
    run_session = client.connector.run_session

    def spy(view, spec, program, timeout_s=None, cancel=None):
        tried.append(view.committee_id)
        return run_session(view, spec, program, timeout_s, cancel)

    client.connector.run_session = spy
    return tried


def test_dead_committee_member_makes_the_client_retry_on_the_next_committee(network_factory, tiny_models):
    # records outlive the killed node (ttl 30 s), so the client still sees its committee and has to retry
    network = network_factory(6, record_ttl_s=30.0)
    cfg, params = tiny_models["gpt2"]
    views = network.owner().publish("tiny-gpt2", cfg, params, committees=2)
    assert len(views) == 2 and not set(views[0].node_ids) & set(views[1].node_ids)
    client = network.client(timeout_s=300.0)
    order = client.committees("tiny-gpt2")
    assert {v.committee_id for v in order} == {v.committee_id for v in views}
    _wait_until_every_node_sees(network, "tiny-gpt2", [v.committee_id for v in order])
    network.kill(order[0].node_ids[0])
    tried = _committees_tried(client)
    prompt = random_ids(1, 4, seed=16)
    start = time.monotonic()
    got = client.generate("tiny-gpt2", prompt, 3)
    print(f"retried on committee {tried[-1]} after {order[0].committee_id} failed; {time.monotonic() - start:.1f} s")
    assert tried == [order[0].committee_id, order[1].committee_id]
    assert torch.equal(got.tokens, plaintext.greedy_generate(cfg, params, prompt, 3))
    alive = [n for n in network.node_ids if n != order[0].node_ids[0]]
    assert {n: network.health(n) for n in alive} == {n: "SERVING" for n in alive}


def test_generation_whose_committee_dies_mid_way_resumes_on_the_next_committee(network_factory, tiny_models):
    network = network_factory(6, record_ttl_s=30.0)
    cfg, params = tiny_models["gpt2"]
    views = network.owner().publish("tiny-gpt2", cfg, params, committees=2)
    client = network.client(timeout_s=300.0)
    order = client.committees("tiny-gpt2")
    assert {v.committee_id for v in order} == {v.committee_id for v in views}
    _wait_until_every_node_sees(network, "tiny-gpt2", [v.committee_id for v in order])
    tried = _committees_tried(client)
    shown: list[torch.Tensor] = []

    def on_token(token: torch.Tensor) -> None:
        shown.append(token)
        if len(shown) == 2:  # two tokens out: the serving committee loses a node
            network.kill(order[0].node_ids[1])

    prompt, new = random_ids(1, 4, seed=17), 5
    got = client.generate("tiny-gpt2", prompt, new, on_token=on_token)
    print(f"resumed on {tried[-1]} after {len(shown)} tokens; tried {tried}")
    assert tried == [order[0].committee_id, order[1].committee_id]
    want = plaintext.greedy_generate(cfg, params, prompt, new)
    assert torch.equal(got.tokens, want)  # the whole generation, as if nothing had failed
    assert torch.equal(torch.stack(shown, dim=1), want)  # every token shown once, in order
    assert got.logits.shape == (new, 1, cfg.vocab_size)
    ids = torch.cat([prompt, want[:, :-1]], dim=1)
    reference = plaintext.gpt2_forward(cfg, params, ids)[:, prompt.shape[1] - 1:]  # (1, new, V)
    error = float((got.logits.transpose(0, 1) - reference).abs().max())
    print(f"max |secure - plaintext| logits over both committees: {error:.2e}")
    assert error < 3e-3
