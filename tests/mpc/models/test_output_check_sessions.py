"""In-process secure sessions cross-check every output they open (embeddings, logits at every decode step), and a
generation may run a fixed budget of decode steps so that their number no longer depends on the output.

The attack: one party sends the client an output component altered by one ring unit at a chosen step, having vouched
for the true one to its neighbour (reveal.reveal_to_owner replaced for that party and step only); the session must
fail with OutputMismatch naming that party, never hand out the altered output.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from secureinfer.models.checkpoint import load_checkpoint
from secureinfer.mpc.models import session
from secureinfer.mpc.party import Party
from secureinfer.mpc.protocols import reveal
from secureinfer.mpc.shares import AShare
from secureinfer.plaintext import reference as plaintext

from tests.tinymodels import VOCAB


def _ids(batch: int, length: int, seed: int) -> torch.Tensor:
    """Random token ids (test data, not secret randomness)."""
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def corrupt(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """Set `fault["party"]` and `fault["step"]`: that party alters its first output component at that step."""
    fault: dict = {"party": None, "step": 0}
    honest = reveal.reveal_to_owner
    sent: dict[int, int] = {}

    def reveal_to_owner(party: Party, x: AShare, owner: str, tag: str = "output",
                        witness: reveal.Witness | None = None) -> None:
        step = sent.get(party.index, 0)
        sent[party.index] = step + 1
        if party.index != fault["party"] or step != fault["step"]:
            return honest(party, x, owner, tag, witness)
        party.channel.send(owner, x.lo + 1, tag)  # one ring unit off, in what it sends the client only
        party.channel.send(owner, reveal.digest(x.hi), tag + reveal.DIGEST_SUFFIX)
        if witness is not None:
            witness.vouch(party, reveal.digest(x.lo), reveal.digest(x.hi))  # the true components, to its neighbours

    monkeypatch.setattr(reveal, "reveal_to_owner", reveal_to_owner)
    yield fault


@pytest.mark.parametrize("party", [0, 1, 2])
def test_generation_names_the_party_that_altered_a_decode_step(gpt2_dir, corrupt, party: int) -> None:
    cfg, params = load_checkpoint(gpt2_dir[0], torch.float64)
    corrupt.update(party=party, step=2)  # the second decode step after the prefill
    with pytest.raises(reveal.OutputMismatch) as info:
        session.secure_generate(cfg, params, _ids(1, 4, seed=1), 5, eos_token_ids=())
    print(info.value)
    assert info.value.parties == (f"P{party}",) and info.value.step == 2 and info.value.settled


def test_embedding_names_the_party_that_altered_it(bert_dir, corrupt) -> None:
    cfg, params = load_checkpoint(bert_dir[0], torch.float64)
    corrupt.update(party=2, step=0)
    with pytest.raises(reveal.OutputMismatch) as info:
        session.secure_encode(cfg, params, _ids(2, 5, seed=2))
    assert info.value.parties == ("P2",)


def test_logits_of_a_later_chunk_are_checked_too(gpt2_dir, corrupt) -> None:
    cfg, params = load_checkpoint(gpt2_dir[0], torch.float64)
    corrupt.update(party=0, step=1)
    with pytest.raises(reveal.OutputMismatch) as info:
        session.secure_logits(cfg, params, _ids(1, 5, seed=3), chunks=(4, 1))
    assert info.value.parties == ("P0",) and info.value.step == 1


def test_fixed_steps_run_the_whole_budget_and_discard_the_tail(gpt2_dir) -> None:
    cfg, params = load_checkpoint(gpt2_dir[0], torch.float64)
    prompt = _ids(1, 4, seed=9)
    first = int(plaintext.greedy_generate(cfg, params, prompt, 1, eos_token_ids=())[0, 0])
    early, early_report = session.secure_generate(cfg, params, prompt, 4, eos_token_ids=(first,))
    fixed, fixed_report = session.secure_generate(cfg, params, prompt, 4, eos_token_ids=(first,), fixed_steps=True)
    assert early.tokens.tolist() == fixed.tokens.tolist() == [[first]]
    assert fixed.logits.shape == early.logits.shape == (1, 1, cfg.vocab_size)
    assert len(early_report.steps) == 1 and len(fixed_report.steps) == 4  # the parties see 4 steps either way
    assert [s.tokens for s in fixed_report.steps] == [4, 1, 1, 1]
    none_early, report = session.secure_generate(cfg, params, prompt, 3, eos_token_ids=(), fixed_steps=True)
    assert none_early.tokens.shape == (1, 3) and len(report.steps) == 3
