"""Secure BERT, GPT-2 and LLaMA forwards on tiny random checkpoints against the float64 plaintext references.

Each test runs a whole session (model owner publishes shares, the client shares one-hot tokens and alone opens the
outputs) on three simulated parties. Tolerances (accurate profile, f = 18, weights N(0, 0.3), logits of scale ~5-8):
BERT hidden states 5e-4, GPT-2 logits 3e-3, LLaMA logits 2e-2 absolute; cosine >= 0.9999 per row; top-1 agreement.
Measured when written: BERT 7.7e-5, GPT-2 3.3e-4, LLaMA 5.5e-3.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from secureinfer.models.checkpoint import load_checkpoint
from secureinfer.models.sampling import SamplingConfig
from secureinfer.mpc import runtime
from secureinfer.mpc.approx.profile import ACCURATE, FAST
from secureinfer.mpc.models import session
from secureinfer.mpc.models.blocks import normalize
from secureinfer.mpc.protocols import reveal
from secureinfer.plaintext import reference as plaintext

from tests.tinymodels import VOCAB, save, tiny_bert, tiny_llama

TOL = {"bert": 5e-4, "gpt2": 3e-3, "llama": 2e-2}


def _ids(batch: int, length: int, seed: int) -> torch.Tensor:
    """Random token ids (test data, not secret randomness)."""
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def _compare(name: str, got: torch.Tensor, want: torch.Tensor, tol: float) -> None:
    """Assert and print max abs diff, min row cosine and top-1 agreement."""
    err = (got - want).abs().max().item()
    rows_g, rows_w = got.reshape(-1, got.shape[-1]), want.reshape(-1, want.shape[-1])
    cos = torch.nn.functional.cosine_similarity(rows_g, rows_w, dim=-1).min().item()
    top1 = (rows_g.argmax(-1) == rows_w.argmax(-1)).double().mean().item()
    print(f"{name}: max |diff| {err:.2e} (tol {tol:.0e}, scale {want.abs().max():.2f}), min cosine {cos:.7f}, "
          f"top-1 agreement {top1:.3f}")
    assert err < tol
    assert cos > 0.9999


def _check_balanced(report: session.SessionReport) -> None:
    """Every party sent bytes in every step, and no party sent more than 1.5x another (roles rotate)."""
    for step in report.steps:
        assert min(step.bytes_per_party) > 0
        assert max(step.bytes_per_party) < 1.5 * min(step.bytes_per_party)


def test_bert_hidden_embedding_with_padding(bert_dir, config):
    path, _ = bert_dir
    cfg, params = load_checkpoint(path, torch.float64)
    ids = _ids(3, 9, seed=3)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    hidden, report = session.secure_encode(cfg, params, ids, mask, output="hidden", config=config)
    want = plaintext.bert_forward(cfg, params, ids, mask)
    real = mask.bool()
    _compare("bert hidden (real tokens)", hidden[real], want[real], TOL["bert"])
    step = report.steps[0]
    print(f"bert tiny: rounds {step.rounds}, bytes per party {step.bytes_per_party}")
    assert step.tokens == ids.numel()
    _check_balanced(report)
    emb, _ = session.secure_encode(cfg, params, ids, mask, output="embedding", config=config)
    cos = torch.nn.functional.cosine_similarity(emb, plaintext.sentence_embedding(cfg, params, ids, mask)).min()
    print(f"bert tiny sentence embeddings: min cosine {cos.item():.8f}")
    assert cos > 0.99999


def test_bert_classification_head(tmp_path):
    cfg, params = load_checkpoint(save(tiny_bert(seed=4, num_labels=3), tmp_path / "cls"), torch.float64)
    ids = _ids(2, 7, seed=5)
    types = torch.zeros_like(ids)
    types[:, 4:] = 1
    logits, _ = session.secure_encode(cfg, params, ids, token_type_ids=types, output="logits")
    want = plaintext.bert_classify(cfg, params, ids, token_type_ids=types)
    assert logits.shape == (2, 3)
    _compare("bert classifier logits", logits, want, TOL["bert"])


def test_gpt2_logits_and_kv_cache(gpt2_dir, config):
    path, _ = gpt2_dir
    cfg, params = load_checkpoint(path, torch.float64)
    ids = _ids(2, 8, seed=0)
    want = plaintext.gpt2_forward(cfg, params, ids)
    full, report = session.secure_logits(cfg, params, ids, config=config)
    _compare("gpt2 logits (one forward)", full, want, TOL["gpt2"])
    cached, report_c = session.secure_logits(cfg, params, ids, chunks=(5, 1, 1, 1), config=config)
    _compare("gpt2 logits (prefill 5 + 3 cached decode steps)", cached, want, TOL["gpt2"])
    _compare("gpt2 cached decode vs secure full recompute", cached, full, 2 * TOL["gpt2"])
    decode = report_c.steps[1:]
    print(f"gpt2 tiny: full forward rounds {report.steps[0].rounds}; decode steps rounds "
          f"{[s.rounds for s in decode]}, bytes/party {[s.bytes_per_party[0] for s in decode]}")
    assert len({s.rounds for s in decode}) == 1  # every decode step has the same round structure
    assert all(s.bytes_per_party[0] < report.steps[0].bytes_per_party[0] for s in decode)
    _check_balanced(report_c)


@pytest.mark.parametrize("variant", ["gqa", "tied_bias"])
def test_llama_logits_and_kv_cache(tmp_path, variant):
    model = tiny_llama(seed=3) if variant == "gqa" else tiny_llama(seed=6, tie=True, bias=True)
    cfg, params = load_checkpoint(save(model, tmp_path / variant), torch.float64)
    ids = _ids(1, 7, seed=1)
    want = plaintext.llama_forward(cfg, params, ids)
    cached, report = session.secure_logits(cfg, params, ids, chunks=(5, 1, 1))
    _compare(f"llama {variant} logits (prefill 5 + 2 cached decode steps)", cached, want, TOL["llama"])
    _check_balanced(report)


def test_greedy_generation_matches_plaintext(gpt2_dir, llama_dir):
    for path in (gpt2_dir[0], llama_dir[0]):
        cfg, params = load_checkpoint(path, torch.float64)
        prompts = [_ids(2, 5, seed=7), _ids(1, 3, seed=8)]
        results, report = session.secure_generate_many(cfg, params, prompts, 5, eos_token_ids=())
        for prompt, result in zip(prompts, results):
            want = plaintext.greedy_generate(cfg, params, prompt, 5, eos_token_ids=())
            print(f"{cfg.arch}: secure {result.tokens.tolist()} plaintext {want.tolist()}")
            assert torch.equal(result.tokens, want)
            assert result.logits.shape == (5, prompt.shape[0], cfg.vocab_size)
        assert len(report.steps) == 10 and [s.tokens for s in report.steps[:5]] == [10, 2, 2, 2, 2]


def test_generation_stops_at_eos_and_samples(gpt2_dir):
    cfg, params = load_checkpoint(gpt2_dir[0], torch.float64)
    prompt = _ids(1, 4, seed=9)
    first = int(plaintext.greedy_generate(cfg, params, prompt, 1, eos_token_ids=())[0, 0])
    result, report = session.secure_generate(cfg, params, prompt, 6, eos_token_ids=(first,))
    assert result.tokens.tolist() == [[first]] and len(report.steps) == 1
    sampled, _ = session.secure_generate(cfg, params, prompt, 4, eos_token_ids=(),
                                         sampling=SamplingConfig(temperature=0.8, top_k=5, top_p=0.9, seed=1))
    assert sampled.tokens.shape == (1, 4)
    for step_logits, token in zip(sampled.logits[:, 0], sampled.tokens[0]):
        assert int(token) in torch.topk(step_logits, 5).indices.tolist()  # top-k applied to the opened logits


def test_fast_profile_still_close(bert_dir):
    cfg, params = load_checkpoint(bert_dir[0], torch.float64)
    ids = _ids(2, 6, seed=10)
    fast, r_fast = session.secure_encode(cfg, params, ids, output="hidden", profile=FAST)
    acc, r_acc = session.secure_encode(cfg, params, ids, output="hidden", profile=ACCURATE)
    want = plaintext.bert_forward(cfg, params, ids)
    print(f"bert tiny: fast max diff {(fast - want).abs().max():.2e} ({r_fast.steps[0].bytes_per_party[0]} B/party), "
          f"accurate {(acc - want).abs().max():.2e} ({r_acc.steps[0].bytes_per_party[0]} B/party)")
    assert (fast - want).abs().max() < 0.1
    assert r_fast.steps[0].bytes_per_party[0] < r_acc.steps[0].bytes_per_party[0]


@pytest.mark.parametrize("center", [False, True])
def test_wide_normalize_handles_massive_activations(config, center):
    """Rows with sums of squares up to ~2^31 (beyond nn.norm's 2^25) next to rows with tiny ones (S ~ 1.5).

    Error relative to the row's largest output: up to ~1.5e-4 for the tiny row (d / 2^k keeps f - k bits; the
    rounding is unbiased), ~1e-6 for the rest (measured with k = 8; the LLaMA default is 7)."""
    gen = torch.Generator().manual_seed(11)
    c = 576
    x = torch.randn(6, c, generator=gen, dtype=torch.float64) * torch.tensor([0.05, 1.0, 30.0, 200.0, 500.0, 900.0]
                                                                               )[:, None]
    x[3, 7], x[4, 100] = 2.3e4, -3.0e4  # a massive activation
    x[5] = x[5] - 1500.0  # a large mean: S ~ 2^30.7
    gamma = 1.0 + 0.1 * torch.randn(c, generator=gen, dtype=torch.float64)
    beta = 0.1 * torch.randn(c, generator=gen, dtype=torch.float64)
    eps = 1e-5

    def program(party, xs, g, b):
        y = normalize(party, xs, g, b if center else None, ACCURATE, eps=eps, center=center, shift_bits=7)
        return reveal.reveal(party, y)

    if center:
        want = torch.nn.functional.layer_norm(x, (c,), gamma, beta, eps=eps)
    else:
        want = x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * gamma
    sim = runtime.simulate(program, inputs=[x, gamma, beta], config=config)
    got = config.fxp.decode(sim.outputs[0].cpu())
    rel = ((got - want).abs() / want.abs().amax(-1, keepdim=True)).max().item()
    print(f"wide {'layernorm' if center else 'rmsnorm'}: max error relative to the row's max {rel:.2e}, "
          f"rounds {sim.max_rounds}, bytes/party {sim.max_bytes_sent}")
    assert rel < 3e-4


def test_owner_params_fold_the_query_scale(gpt2_dir, llama_dir):
    for path in (gpt2_dir[0], llama_dir[0]):
        cfg, params = load_checkpoint(path, torch.float64)
        folded = session.owner_params(cfg, params)
        scale = cfg.head_dim ** -0.5
        if cfg.arch == "gpt2":
            w, w0 = folded["transformer.h.0.attn.c_attn.weight"], params["transformer.h.0.attn.c_attn.weight"]
            assert torch.allclose(w[:, :cfg.hidden], w0[:, :cfg.hidden] * scale)
            assert torch.equal(w[:, cfg.hidden:], w0[:, cfg.hidden:])
        else:
            name = "model.layers.1.self_attn.q_proj.weight"
            assert torch.allclose(folded[name], params[name] * scale)
        assert set(folded) == set(params)  # the checkpoint's own names, nothing added or dropped
        assert params is not folded and not any(v is folded[k] for k, v in params.items() if "q_proj" in k)


def test_model_rejects_bad_inputs(gpt2_dir, bert_dir):
    cfg, params = load_checkpoint(gpt2_dir[0], torch.float64)
    with pytest.raises(ValueError, match="chunks"):
        session.secure_logits(cfg, params, _ids(1, 4, seed=0), chunks=(2, 1))
    with pytest.raises(ValueError, match="BERT"):
        session.secure_encode(cfg, params, _ids(1, 4, seed=0))
    bcfg, bparams = load_checkpoint(bert_dir[0], torch.float64)
    with pytest.raises(ValueError, match="decoders"):
        session.secure_generate(bcfg, bparams, _ids(1, 4, seed=0), 2)
    too_long = dataclasses.replace(cfg, max_positions=3)
    with pytest.raises(ValueError, match="max_positions"):
        session.secure_logits(too_long, params, _ids(1, 4, seed=0))
