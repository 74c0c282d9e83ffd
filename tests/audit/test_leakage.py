"""Leakage audit of whole secure sessions on the in-process runtime: BERT, GPT-2 and LLaMA, secret and public
weights, generation with the secret KV cache. See leakage.py for the checks; the negative controls insert an op
that opens a secret (test-only code) and show that the same checks catch it."""

from __future__ import annotations

import pytest
import torch

from secureinfer.mpc.models import secure_ops
from secureinfer.mpc.protocols import reveal, sharing
from secureinfer.mpc.runtime import OWNER

from .leakage import canary_finds, compare_views
from .models import audited, canaries_for, params_for, repeated, tiny

ARCHS = ("bert", "gpt2", "llama")
PROMPT_A = torch.tensor([[7, 3, 11, 5]])
PROMPT_B = torch.tensor([[2, 12, 4, 9]])
RUNS = 2  # fresh randomness each run; the pooled groups then hold thousands of elements


def run_kwargs(arch: str) -> dict:
    return {"new_tokens": 2} if arch != "bert" else {}


@pytest.mark.parametrize("public_weights", [False, True], ids=["secret-weights", "public-weights"])
@pytest.mark.parametrize("arch", ARCHS)
def test_no_canary_in_any_party_inbound(arch: str, public_weights: bool) -> None:
    cfg = tiny(arch)
    params = params_for(cfg, seed=1)
    canaries = canaries_for(cfg, params, PROMPT_A)
    inbound, _ = audited(cfg, params, PROMPT_A, public_weights=public_weights, **run_kwargs(arch))
    assert all(inbound), "a party received nothing: the recorder saw no traffic"
    for i, messages in enumerate(inbound):
        from_owner = [m for m in messages if m.sender == OWNER]
        rest = [m for m in messages if m.sender != OWNER]
        assert not canary_finds(rest, canaries), canary_finds(rest, canaries)
        if public_weights:
            # Positive control on real traffic: open weights do travel in the clear, and the search finds them.
            assert any("weight" in f for f in canary_finds(from_owner, canaries, limit=10 ** 6)), f"P{i}"
        else:
            assert not canary_finds(from_owner, canaries), canary_finds(from_owner, canaries)


def views_differ_failures(arch: str, runs: int = RUNS, hidden: int = 8, secret: str = "prompt",
                          public_weights: bool = False) -> list:
    """Each party's ViewReport between two runs that differ only in the secret prompt (or the secret weights)."""
    cfg = tiny(arch, hidden=hidden)
    pa, pb = params_for(cfg, seed=1), params_for(cfg, seed=1 if secret == "prompt" else 2)
    ids_b = PROMPT_B if secret == "prompt" else PROMPT_A
    kw = dict(public_weights=public_weights, **run_kwargs(arch))
    va = repeated(lambda: audited(cfg, pa, PROMPT_A, **kw), runs)
    vb = repeated(lambda: audited(cfg, pb, ids_b, **kw), runs)
    reports = []
    for i in range(3):
        # Public weights travel in the clear (the same in both runs here); the parties' and client's traffic is tested.
        keep = (lambda m: m.sender != OWNER) if public_weights else (lambda m: True)
        reports.append(compare_views([[m for m in r if keep(m)] for r in va[i]],
                                     [[m for m in r if keep(m)] for r in vb[i]]))
    return reports


@pytest.mark.parametrize("arch", ARCHS)
def test_views_do_not_depend_on_the_prompt(arch: str) -> None:
    for i, report in enumerate(views_differ_failures(arch)):
        print(f"{arch} P{i}: {report.groups} groups, {report.elements} elements, {report.tests} tests, "
              f"max two-sample {report.two_sample:.2f}, max uniform {report.uniform:.2f} (of critical)")
        assert not report.failures, report.failures[:10]
        assert report.tests >= 40 and report.elements > 2000, "too little traffic to test"


def test_views_do_not_depend_on_the_weights() -> None:
    for report in views_differ_failures("gpt2", secret="weights"):
        assert not report.failures, report.failures[:10]


def test_public_weights_views_do_not_depend_on_the_prompt() -> None:
    for report in views_differ_failures("llama", public_weights=True):
        assert not report.failures, report.failures[:10]


# --- negative controls: an op that opens a secret must be caught -----------------------------------------------


def _leak(party, x):
    """Test-only broken code: open x to every party (through reveal, as a buggy op would) and pass it on."""
    opened = reveal.reveal(party, x)
    party.send(party.next, opened, "leak")  # and hand the plaintext on, as a careless op would
    party.recv(party.prev, "leak")


@pytest.fixture
def leaky_activation(monkeypatch):
    original = secure_ops.SecureOps.act

    def act(self, x, kind, name):
        _leak(self.party, x)
        return original(self, x, kind, name)

    monkeypatch.setattr(secure_ops.SecureOps, "act", act)




@pytest.mark.parametrize("arch", ARCHS)
def test_view_check_catches_an_op_that_opens_activations(arch: str, leaky_activation) -> None:
    reports = views_differ_failures(arch)
    assert all(any("depends on the secret" in f or "not uniform" in f for f in r.failures) for r in reports), \
        [r.failures[:3] for r in reports]


@pytest.mark.parametrize("arch", ARCHS)
def test_canary_search_finds_opened_one_hot_rows(arch: str, monkeypatch) -> None:
    """Canary negative control: an op that opens the one-hot tokens (test-only code) is found by the byte search."""
    cfg = tiny(arch)
    params = params_for(cfg, seed=1)
    canaries = canaries_for(cfg, params, PROMPT_A)
    receive = sharing.receive_input

    def leaky_receive(party, owner, tag="input", **kwargs):
        share = receive(party, owner, tag, **kwargs)
        if tag == "tokens":
            _leak(party, share)
        return share

    monkeypatch.setattr(sharing, "receive_input", leaky_receive)
    inbound, _ = audited(cfg, params, PROMPT_A)
    for i, messages in enumerate(inbound):
        finds = canary_finds(messages, canaries, limit=10 ** 6)
        assert any("one-hot row" in f for f in finds), f"P{i}: the opened one-hot rows were not found"


@pytest.mark.long
@pytest.mark.parametrize("arch", ARCHS)
def test_long_views_do_not_depend_on_the_prompt(arch: str) -> None:
    """Long variant: a wider model (hidden 32) and 8 runs per input (SECUREINFER_LONG_TESTS=1)."""
    for i, report in enumerate(views_differ_failures(arch, runs=8, hidden=32)):
        print(f"long {arch} P{i}: {report.groups} groups, {report.elements} elements, {report.tests} tests, "
              f"max two-sample {report.two_sample:.2f}, max uniform {report.uniform:.2f} (of critical)")
        assert not report.failures, report.failures[:10]
