"""Public-weights mode (open models): the weights in the clear at every party, the tokens and activations secret.

Each secure run is a whole session (the owner sends the folded parameters in the clear to each party, the client
shares one-hot tokens and alone opens the outputs). Accuracy: the same tolerances as the secret-weights tests
(test_secure_models.py). Bytes: a public-weights matmul is local, so a Dense layer sends only its truncation, and
the replicated truncation (trunc.trunc_replicated) sends 16 bytes per element fewer than the truncation of a
secret-weight product's 3-out-of-3 term; the one-hot embedding needs no resharing. Those are the only differences,
so the bytes saved by a whole forward are asserted exactly. The slow test measures real MiniLM at 128 tokens.
"""

from __future__ import annotations

import pytest
import torch

from secureinfer.models.checkpoint import load_checkpoint
from secureinfer.models.config import ModelConfig
from secureinfer.mpc import runtime
from secureinfer.mpc.models import blocks, serving, session, trace
from secureinfer.mpc.protocols import reveal, trunc
from secureinfer.mpc.shares import AShare
from secureinfer.plaintext import reference as plaintext
from secureinfer.strategy import SecureStrategy

from tests.tinymodels import VOCAB, save, tiny_bert, tiny_llama
from .test_secure_models import TOL, _ids  # the same tolerances as the secret-weights tests
from .test_secure_models import _compare as _compare_abs

PUBLIC = SecureStrategy(public_weights=True)
SAVED_PER_TRUNCATED = trunc.bytes_per_element(18) - trunc.bytes_per_element(18, replicated=True)  # 16
SAVED_PER_EMBEDDED = 3 * 8  # the secret one-hot product's resharing: one ring element per party


def _compare(name: str, got: torch.Tensor, want: torch.Tensor, tol: float) -> None:
    """The secret-weights tests' check (max abs diff within tol) plus every row's cosine above 0.9999."""
    _compare_abs(name, got, want, tol)
    rows_g, rows_w = got.reshape(-1, got.shape[-1]), want.reshape(-1, want.shape[-1])
    assert torch.nn.functional.cosine_similarity(rows_g, rows_w, dim=-1).min().item() > 0.9999


def _dense_outputs(cfg: ModelConfig, tokens: int, head_rows: int = 0) -> int:
    """Output elements of every dense layer of a forward over `tokens` positions (+ the LM head on `head_rows`)."""
    c, i, d = cfg.hidden, cfg.intermediate, cfg.head_dim
    qkv = (cfg.n_heads + 2 * cfg.n_kv_heads) * d
    mlp_in = 2 * i if cfg.arch == "llama" else i  # LLaMA's gate and up projections are one fused layer
    return cfg.n_layers * tokens * (qkv + c + mlp_in + c) + head_rows * cfg.vocab_size


def _bytes_compared(name: str, secret: session.SessionReport, public: session.SessionReport, saved: int) -> float:
    """Assert the bytes saved by public weights (summed over parties and steps) and return the per-party ratio."""
    total_s, total_p = sum(secret.bytes_per_party), sum(public.bytes_per_party)
    ratio = max(secret.bytes_per_party) / max(public.bytes_per_party)
    print(f"{name}: bytes per party secret {secret.bytes_per_party}, public {public.bytes_per_party} "
          f"(x{ratio:.3f}); rounds {secret.rounds} -> {public.rounds}")
    assert total_s - total_p == saved
    assert max(public.bytes_per_party) < max(secret.bytes_per_party)
    return ratio


# ---------------------------------------------------------------------------------------------------- one layer


def _held(config, x: torch.Tensor) -> torch.Tensor:
    return config.fxp.encode(x)


def test_public_dense_sends_only_its_truncation(config):
    """One Dense layer with public W, b: the output is trunc(x @ W) + b exactly (floor or +1 per element), in 2 rounds
    and trunc.bytes_per_element(f, replicated=True) bytes per output element; the secret layer's truncation costs
    bytes_per_element(f). A public one-hot embedding sends nothing and is exact."""
    fxp, f = config.fxp, config.fxp.frac_bits
    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((2, 5, 24), (24, 18), (18,)))
    xe, we, be = fxp.encode(x), fxp.encode(w).to(config.torch_device), fxp.encode(b).to(config.torch_device)
    table = fxp.encode(torch.randn(VOCAB, 8, generator=g, dtype=torch.float64)).to(config.torch_device)
    ids = _ids(2, 5, seed=1)
    onehot = torch.nn.functional.one_hot(ids, VOCAB).to(torch.int64)

    def program(p, xs, oh):
        layer = blocks.Dense.from_share(we, be)
        assert layer.public
        before = p.channel.stats.snapshot()
        y = blocks.dense(p, xs, layer)
        dense_stats = p.channel.stats.since(before)
        before = p.channel.stats.snapshot()
        e = blocks.embed(p, oh, blocks.Table.from_share(table))
        embed_stats = p.channel.stats.since(before)
        return reveal.reveal(p, y).cpu(), reveal.reveal(p, e).cpu(), dense_stats, embed_stats

    sim = runtime.simulate(program, inputs=[x, onehot], config=config)
    y, e, _, _ = sim.outputs[0]
    diff = y - ((xe @ we.cpu()) >> f) - be.cpu()
    assert set(diff.unique().tolist()) <= {0, 1}, "not floor(x @ W / 2^f) (+1) + b"
    assert torch.equal(e, table.cpu()[ids])
    dense = [o[2] for o in sim.outputs]
    embed = [o[3] for o in sim.outputs]
    n = 2 * 5 * 18
    assert sum(s.bytes_sent for s in dense) == trunc.bytes_per_element(f, replicated=True) * n == 43 * n
    assert max(s.rounds for s in dense) == 2
    assert sum(s.bytes_sent for s in embed) == 0 and max(s.rounds for s in embed) == 0
    print(f"public dense (2, 5, 24) x (24, 18): bytes per party {[s.bytes_sent for s in dense]}, "
          f"{max(s.rounds for s in dense)} rounds; secret-weight truncation would send "
          f"{trunc.bytes_per_element(f) * n} in all")


def test_public_lm_head_and_norm_gain(config):
    """The LM head on a public table (x @ T^T, one replicated truncation) and a LayerNorm with public gamma, beta
    agree with the secret-weight versions to within the truncations' ulps."""
    fxp = config.fxp
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 3, 8, generator=g, dtype=torch.float64) * 2
    table = torch.randn(VOCAB, 8, generator=g, dtype=torch.float64)
    gamma, beta = 1 + 0.1 * torch.randn(8, generator=g, dtype=torch.float64), 0.1 * torch.randn(8, generator=g)
    from secureinfer.mpc.approx.profile import ACCURATE

    def program(p, xs, ts, gs, bs):
        pub = [fxp.encode(t, p.config.torch_device) for t in (table, gamma, beta.double())]
        before = p.channel.stats.snapshot()
        head_pub = blocks.lm_head(p, xs, blocks.Table.from_share(pub[0]))
        head_stats = p.channel.stats.since(before)
        head_sec = blocks.lm_head(p, xs, blocks.Table.from_share(ts))
        ln_pub = blocks.normalize(p, xs, pub[1], pub[2], ACCURATE, eps=1e-12, center=True)
        ln_sec = blocks.normalize(p, xs, gs, bs, ACCURATE, eps=1e-12, center=True)
        return [reveal.reveal(p, t).cpu() for t in (head_pub, head_sec, ln_pub, ln_sec)] + [head_stats]

    sim = runtime.simulate(program, inputs=[x, table, gamma, beta.double()], config=config)
    head_pub, head_sec, ln_pub, ln_sec, _ = sim.outputs[0]
    assert (head_pub - head_sec).abs().max().item() <= 1  # each is floor(x T^T / 2^f) or that plus one
    assert fxp.decode(ln_pub - ln_sec).abs().max().item() < 1e-4
    want = torch.nn.functional.layer_norm(x, (8,), gamma, beta.double(), eps=1e-12)
    assert (fxp.decode(ln_pub) - want).abs().max().item() < 1e-4
    assert sum(o[4].bytes_sent for o in sim.outputs) == trunc.bytes_per_element(18, replicated=True) * 3 * VOCAB


def test_weights_must_be_all_secret_or_all_public(config):
    ring = torch.zeros(4, 3, dtype=torch.int64)
    share = AShare(ring, ring, 0)
    with pytest.raises(ValueError, match="public bias"):
        blocks.Dense.from_share(ring, share)
    with pytest.raises(ValueError, match="secret or every layer public"):
        blocks.Dense.fuse([blocks.Dense.from_share(ring), blocks.Dense.from_share(share)])
    cfg = ModelConfig(arch="gpt2", vocab_size=VOCAB, hidden=4, n_layers=1, n_heads=1, n_kv_heads=1, head_dim=4,
                      intermediate=8, max_positions=8, norm_eps=1e-5, act="gelu_tanh", tie_word_embeddings=True)
    with pytest.raises(ValueError, match="all secret shares or all public"):
        serving.build_model(cfg, {"a": share, "b": torch.zeros(2)}, session.ACCURATE)


# ---------------------------------------------------------------------------------------------------- tiny models


def test_bert_public_weights_match_plaintext_and_save_bytes(bert_dir, config):
    path, _ = bert_dir
    cfg, params = load_checkpoint(path, torch.float64)
    ids = _ids(3, 9, seed=3)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    hidden, public = session.secure_encode(cfg, params, ids, mask, output="hidden", config=config,
                                           public_weights=True)
    want = plaintext.bert_forward(cfg, params, ids, mask)
    real = mask.bool()
    _compare("bert public weights, hidden (real tokens)", hidden[real], want[real], TOL["bert"])
    _, secret = session.secure_encode(cfg, params, ids, mask, output="hidden", config=config)
    tokens = ids.numel()
    saved = SAVED_PER_TRUNCATED * _dense_outputs(cfg, tokens) + SAVED_PER_EMBEDDED * tokens * cfg.hidden
    ratio = _bytes_compared("bert tiny hidden", secret, public, saved)
    assert ratio > 1.03
    assert public.rounds == secret.rounds - 1  # the embedding's resharing round is gone
    emb, _ = session.secure_encode(cfg, params, ids, mask, output="embedding", config=config, public_weights=True)
    cos = torch.nn.functional.cosine_similarity(emb, plaintext.sentence_embedding(cfg, params, ids, mask)).min()
    print(f"bert tiny public-weights sentence embeddings: min cosine {cos.item():.8f}")
    assert cos > 0.99999


def test_bert_public_classification_head(tmp_path):
    cfg, params = load_checkpoint(save(tiny_bert(seed=4, num_labels=3), tmp_path / "cls"), torch.float64)
    ids = _ids(2, 7, seed=5)
    types = torch.zeros_like(ids)
    types[:, 4:] = 1
    logits, _ = session.secure_encode(cfg, params, ids, token_type_ids=types, output="logits",
                                      **PUBLIC.session_options())
    _compare("bert public classifier logits", logits, plaintext.bert_classify(cfg, params, ids, token_type_ids=types),
             TOL["bert"])


def test_gpt2_public_weights_logits_kv_cache_and_bytes(gpt2_dir, config):
    path, _ = gpt2_dir
    cfg, params = load_checkpoint(path, torch.float64)
    ids = _ids(2, 8, seed=0)
    want = plaintext.gpt2_forward(cfg, params, ids)
    chunks = (5, 1, 1, 1)
    cached, public = session.secure_logits(cfg, params, ids, chunks=chunks, config=config, public_weights=True)
    _compare("gpt2 public weights (prefill 5 + 3 cached decode steps)", cached, want, TOL["gpt2"])
    _, secret = session.secure_logits(cfg, params, ids, chunks=chunks, config=config)
    tokens = ids.numel()
    saved = SAVED_PER_TRUNCATED * _dense_outputs(cfg, tokens, head_rows=tokens) + \
        SAVED_PER_EMBEDDED * tokens * cfg.hidden
    ratio = _bytes_compared("gpt2 tiny prefill + decode", secret, public, saved)
    assert ratio > 1.02
    for s, p in zip(secret.steps, public.steps):  # every step, decode steps included, sends less
        assert max(p.bytes_per_party) < max(s.bytes_per_party) and p.rounds == s.rounds - 1


@pytest.mark.parametrize("variant", ["gqa", "tied_bias"])
def test_llama_public_weights_logits_and_bytes(tmp_path, variant):
    model = tiny_llama(seed=3) if variant == "gqa" else tiny_llama(seed=6, tie=True, bias=True)
    cfg, params = load_checkpoint(save(model, tmp_path / variant), torch.float64)
    ids = _ids(1, 7, seed=1)
    want = plaintext.llama_forward(cfg, params, ids)
    cached, public = session.secure_logits(cfg, params, ids, chunks=(5, 1, 1), public_weights=True)
    _compare(f"llama {variant} public weights (prefill 5 + 2 cached decode steps)", cached, want, TOL["llama"])
    _, secret = session.secure_logits(cfg, params, ids, chunks=(5, 1, 1))
    tokens = ids.numel()
    saved = SAVED_PER_TRUNCATED * _dense_outputs(cfg, tokens, head_rows=tokens) + \
        SAVED_PER_EMBEDDED * tokens * cfg.hidden
    _bytes_compared(f"llama {variant} tiny", secret, public, saved)


def test_public_weights_greedy_generation_matches_plaintext(gpt2_dir, llama_dir):
    for path in (gpt2_dir[0], llama_dir[0]):
        cfg, params = load_checkpoint(path, torch.float64)
        prompts = [_ids(2, 5, seed=7), _ids(1, 3, seed=8)]
        results, report = session.secure_generate_many(cfg, params, prompts, 5, eos_token_ids=(),
                                                        **PUBLIC.session_options())
        for prompt, result in zip(prompts, results):
            want = plaintext.greedy_generate(cfg, params, prompt, 5, eos_token_ids=())
            print(f"{cfg.arch} public weights: secure {result.tokens.tolist()} plaintext {want.tolist()}")
            assert torch.equal(result.tokens, want)
        assert len(report.steps) == 10


def test_strategy_maps_to_session_options():
    opts = SecureStrategy(profile="fast", public_weights=True).session_options()
    assert opts["public_weights"] is True and opts["profile"].name == "fast"
    assert opts["config"].fxp.frac_bits == 18 and opts["config"].device == "cpu"
    assert SecureStrategy().session_options()["public_weights"] is False


# ---------------------------------------------------------------------------------------------------- real MiniLM


@pytest.fixture(scope="module")
def minilm_both():
    """all-MiniLM-L6-v2 at 128 tokens (two sentences padded to 128, one of them filling it), secret and public
    weights, measured in one process one after the other, traced (per-op bytes and rounds of every party)."""
    from secureinfer.models.checkpoint import load_tokenizer, packaged_checkpoint

    from .test_secure_real import SENTENCES

    path = packaged_checkpoint("all-MiniLM-L6-v2")
    cfg, params = load_checkpoint(path, torch.float64)
    enc = load_tokenizer(path)([SENTENCES[0], SENTENCES[4]], padding="max_length", truncation=True, max_length=128,
                               return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert ids.shape == (2, 128) and int(mask[1].sum()) == 128
    want = plaintext.sentence_embedding(cfg, params, ids, mask)
    runs = {}
    for mode in ("secret", "public"):
        emb, report = session.secure_encode(cfg, params, ids, mask, public_weights=mode == "public", traced=True)
        cos = torch.nn.functional.cosine_similarity(emb, want, dim=-1)
        runs[mode] = (cos, report)
        step = report.steps[0]
        print(f"\nMiniLM 2 x 128 tokens, {mode} weights: cosine min {cos.min():.9f}; forward {step.seconds:.1f} s, "
              f"{step.rounds} rounds, bytes per party {step.bytes_per_party} ({max(step.bytes_per_party) / 1e6:.1f} "
              f"MB max)")
    ratio = max(runs["secret"][1].bytes_per_party) / max(runs["public"][1].bytes_per_party)
    print(f"MiniLM public vs secret weights: bytes per party x{ratio:.4f} less, time "
          f"x{runs['secret'][1].steps[0].seconds / runs['public'][1].steps[0].seconds:.3f}")
    return cfg, ids, runs, ratio


@pytest.mark.slow
def test_minilm_public_weights_accuracy_and_where_bytes_go(minilm_both):
    """Cosine >= 0.9995 with public weights; the bytes saved are exactly the dense truncations' 16 bytes per output
    element and the embedding's resharing: every other byte (attention, GeLU, LayerNorm) is the activations'."""
    cfg, ids, runs, ratio = minilm_both
    cos, public = runs["public"]
    assert cos.min() >= 0.9995
    tokens = ids.numel()
    saved = SAVED_PER_TRUNCATED * _dense_outputs(cfg, tokens) + SAVED_PER_EMBEDDED * tokens * cfg.hidden
    _bytes_compared("MiniLM 2 x 128", runs["secret"][1], public, saved)
    assert ratio > 1.02


DENSE_OPS = ("attn.qkv", "attn.out", "mlp.fc1", "mlp.fc2")


def _per_op(report: session.SessionReport) -> dict[str, tuple[int, int]]:
    """Per model op of the forward: (bytes sent summed over the three parties, rounds of party 0)."""
    parties = [trace.merge([r]).by_top() for r in report.steps[0].recordings]
    return {name: (sum(p[name].bytes_sent for p in parties), stats.rounds) for name, stats in parties[0].items()}


def _dense_op_outputs(cfg: ModelConfig, tokens: int) -> dict[str, int]:
    """Output elements of each dense op of a BERT forward over `tokens` positions (all layers)."""
    c, i = cfg.hidden, cfg.intermediate
    per_layer = {"attn.qkv": 3 * c, "attn.out": c, "mlp.fc1": i, "mlp.fc2": c}
    return {op: cfg.n_layers * tokens * width for op, width in per_layer.items()}


@pytest.mark.slow
def test_minilm_public_weights_save_only_the_weights_share_of_each_op(minilm_both):
    """What public weights save, op by op, on real MiniLM (traced, every party): each dense layer costs only the
    replicated truncation of its output (43 instead of 59 bytes per element at f = 18, over the parties) in the same
    rounds; the one-hot embedding sends nothing and takes no round; every other op (attention core, GeLU, LayerNorm,
    pooling, the output) is the activations' and costs exactly the same: public weights cannot make it cheaper."""
    cfg, ids, runs, ratio = minilm_both
    secret, public = _per_op(runs["secret"][1]), _per_op(runs["public"][1])
    outputs = _dense_op_outputs(cfg, ids.numel())
    f = 18
    for op in DENSE_OPS:
        assert secret[op] == (trunc.bytes_per_element(f) * outputs[op], secret[op][1]), (op, secret[op])
        assert public[op] == (trunc.bytes_per_element(f, replicated=True) * outputs[op], secret[op][1]), (op,
                                                                                                          public[op])
    assert secret["embed"] == (SAVED_PER_EMBEDDED * ids.numel() * cfg.hidden, 1)
    assert public.get("embed", (0, 0)) == (0, 0)
    others = sorted(set(secret) - set(DENSE_OPS) - {"embed"})
    assert others and {op: public[op] for op in others} == {op: secret[op] for op in others}
    dense_share = sum(secret[op][0] for op in DENSE_OPS) / sum(b for b, _ in secret.values())
    print(f"MiniLM: dense layers carry {dense_share:.1%} of the secret-weights bytes; public weights cut those by "
          f"{1 - trunc.bytes_per_element(f, replicated=True) / trunc.bytes_per_element(f):.1%}: the forward's bytes "
          f"per party fall x{ratio:.4f}")
