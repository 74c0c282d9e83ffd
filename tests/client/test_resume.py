"""A generation resumed on another session continues exactly where the first left off (secureinfer/client/resume.py):
three in-process parties serve a first attempt cut short after some tokens, then a fresh session (new shares, new
randomness: another committee) prefills the prompt and those tokens and decodes the rest. The joined generation is
the uninterrupted greedy one, each token handed out once, with the logits each was sampled from."""

from __future__ import annotations

import torch

from secureinfer.client.resume import Resumable
from secureinfer.lab.bench.load import tiny_model
from secureinfer.models.sampling import SamplingConfig
from secureinfer.mpc.approx import profile as approx_profile
from secureinfer.mpc.models import serving, session
from secureinfer.plaintext import reference as plaintext

TOLERANCE = 3e-3  # |secure - float64| logits, accurate profile


def _attempt(cfg, params, resumable: Resumable) -> serving.Generation:
    """One session on fresh shares running the resumable's client side."""
    generation, _ = session._run(cfg, params, lambda ch: resumable.program(ch, cfg, serving.SECRET), "last",
                                 profile=approx_profile.get("accurate"), config=None, traced=False)
    return generation


def test_a_generation_cut_short_resumes_where_it_stopped() -> None:
    cfg, params = tiny_model(seed=3)
    prompt, new = (torch.arange(5, dtype=torch.int64) * 37 % cfg.vocab_size).reshape(1, 5), 5
    shown: list[torch.Tensor] = []
    resumable = Resumable(prompt, new, SamplingConfig(), shown.append)
    resumable.max_new_tokens = 2  # the first committee is lost after two tokens
    first = _attempt(cfg, params, resumable)
    assert first.tokens.shape == (1, 2) and len(shown) == 2
    resumable.max_new_tokens = new
    got = _attempt(cfg, params, resumable)
    want = plaintext.greedy_generate(cfg, params, prompt, new, eos_token_ids=())
    assert resumable.attempts == 2
    assert torch.equal(got.tokens, want) and torch.equal(torch.stack(shown, dim=1), want)
    reference = plaintext.gpt2_forward(cfg, params, torch.cat([prompt, want[:, :-1]], dim=1))[:, prompt.shape[1] - 1:]
    error = float((got.logits.transpose(0, 1) - reference).abs().max())
    print(f"max |secure - plaintext| logits across both sessions: {error:.2e}")
    assert got.logits.shape == (new, 1, cfg.vocab_size) and error < TOLERANCE


def test_rows_that_ended_keep_their_end_token_after_a_resume() -> None:
    cfg, params = tiny_model(seed=4)
    prompt = (torch.arange(8, dtype=torch.int64) * 11 % cfg.vocab_size).reshape(2, 4)
    resumable = Resumable(prompt, 4, SamplingConfig())
    resumable.max_new_tokens = 2
    first = _attempt(cfg, params, resumable)
    resumable.done = torch.tensor([True, False])  # row 0 sampled its end token before the committee was lost
    resumable.max_new_tokens = 4
    got = _attempt(cfg, params, resumable)
    assert torch.equal(got.tokens[:, :2], first.tokens)
    assert (got.tokens[0, 2:] == first.tokens[0, 1]).all()  # row 0 repeats its last token
    assert got.tokens.shape == (2, 4) and got.logits.shape == (4, 2, cfg.vocab_size)


def test_nothing_left_to_compute_returns_what_was_sampled() -> None:
    cfg, params = tiny_model(seed=5)
    prompt = torch.tensor([[1, 2, 3]])
    resumable = Resumable(prompt, 2, SamplingConfig())
    first = _attempt(cfg, params, resumable)  # all tokens out; suppose the session then failed while stopping
    again = _attempt(cfg, params, resumable)
    assert torch.equal(again.tokens, first.tokens) and torch.equal(again.logits, first.logits)
