"""nn/attention.py: multi-head attention with grouped KV heads, rotary embeddings, masks and a KV cache."""

from __future__ import annotations

import math

import pytest
import torch

from secureinfer.mpc import runtime
from secureinfer.mpc.approx import ACCURATE, FAST
from secureinfer.mpc.nn import attention
from secureinfer.mpc.protocols import reveal
from secureinfer.mpc.shares import stack
from tests.approx.util import held, run

TOLERANCE = {"accurate": 2e-4, "fast": 1e-2}


def _rope(t: int, d: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    freqs = torch.outer(torch.arange(offset, offset + t, dtype=torch.float64), inv)
    emb = torch.cat([freqs, freqs], -1)
    return emb.cos(), emb.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


def _weights(c: int, h: int, hkv: int, seed: int, bias: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    d = c // h
    ws = [torch.randn(c, n, generator=g, dtype=torch.float64) / math.sqrt(c) for n in (c, hkv * d, hkv * d, c)]
    bs = [torch.randn(n, generator=g, dtype=torch.float64) * 0.1 for n in (c, hkv * d, hkv * d, c)] if bias else []
    return ws + bs


def _reference(x, ws, h, hkv, causal, key_mask=None, rope=None):
    b, t, c = x.shape
    d = c // h
    wq, wk, wv, wo, *bs = ws
    bq, bk, bv, bo = bs if bs else (0.0, 0.0, 0.0, 0.0)
    q = (x @ wq + bq).reshape(b, t, h, d).transpose(1, 2)
    k = (x @ wk + bk).reshape(b, t, hkv, d).transpose(1, 2)
    v = (x @ wv + bv).reshape(b, t, hkv, d).transpose(1, 2)
    if rope is not None:
        q, k = _rotate(q, *rope), _rotate(k, *rope)
    k, v = k.repeat_interleave(h // hkv, 1), v.repeat_interleave(h // hkv, 1)
    s = q @ k.transpose(-1, -2) / math.sqrt(d)
    keep = torch.ones(t, t, dtype=torch.bool)
    if causal:
        keep = keep.tril()
    keep = keep if key_mask is None else keep & key_mask[:, None, None, :]
    p = torch.softmax(s.masked_fill(~keep, -math.inf), -1)
    return (p @ v).transpose(1, 2).reshape(b, t, c) @ wo + bo


@pytest.mark.parametrize("profile", [ACCURATE, FAST], ids=lambda p: p.name)
def test_mha_gqa_rotary_causal_padding(config, profile):
    b, t, c, h, hkv = 2, 8, 32, 4, 2
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, t, c, generator=g, dtype=torch.float64)
    ws = _weights(c, h, hkv, 1, bias=True)
    key_mask = torch.ones(b, t, dtype=torch.bool)
    key_mask[1, 6:] = False
    rope = _rope(t, c // h)
    cfg = attention.AttentionConfig(n_heads=h, n_kv_heads=hkv, causal=True)

    def op(p, x_, wq, wk, wv, wo, bq, bk, bv, bo):
        w = attention.AttentionWeights(wq, wk, wv, wo, bq, bk, bv, bo)
        return attention.multi_head_attention(p, x_, w, cfg, profile, key_mask=key_mask, rope=rope)[0]

    res = run(config, op, x, *ws)
    want = _reference(held(config, x), [held(config, w) for w in ws], h, hkv, True, key_mask, rope)
    err = (res.value - want).abs().max().item()
    print(f"attention {profile.name}: max error {err:.2e}, {res.rounds} rounds, {res.max_bytes / 1e6:.2f} MB/party")
    assert err <= TOLERANCE[profile.name]


def test_bidirectional_attention_non_power_of_two_head_dim(config):
    """BERT-style: no mask, no rotary, head dim 24 (scale 1/sqrt(24) is folded into the score truncation)."""
    b, t, c, h = 1, 10, 48, 2
    g = torch.Generator().manual_seed(2)
    x = torch.randn(b, t, c, generator=g, dtype=torch.float64) * 2
    ws = _weights(c, h, h, 3, bias=False)
    cfg = attention.AttentionConfig(n_heads=h)

    def op(p, x_, wq, wk, wv, wo):
        return attention.multi_head_attention(p, x_, attention.AttentionWeights(wq, wk, wv, wo), cfg, ACCURATE)[0]

    res = run(config, op, x, *ws)
    want = _reference(held(config, x), [held(config, w) for w in ws], h, h, False)
    assert (res.value - want).abs().max().item() <= TOLERANCE["accurate"]


def test_kv_cache_decoding_matches_full_prefill(config):
    """Prefill 5 tokens, then decode 1 with the cache: the new output equals the full causal pass's last row."""
    b, t, c, h, hkv = 1, 6, 32, 4, 1
    g = torch.Generator().manual_seed(4)
    x = torch.randn(b, t, c, generator=g, dtype=torch.float64)
    ws = _weights(c, h, hkv, 5, bias=False)
    cfg = attention.AttentionConfig(n_heads=h, n_kv_heads=hkv, causal=True)
    cos, sin = _rope(t, c // h)

    def program(p, x_, wq, wk, wv, wo):
        w = attention.AttentionWeights(wq, wk, wv, wo)
        _, cache = attention.multi_head_attention(p, x_[:, :5], w, cfg, ACCURATE, rope=(cos[:5], sin[:5]))
        out, (k, v) = attention.multi_head_attention(p, x_[:, 5:], w, cfg, ACCURATE, rope=(cos[5:], sin[5:]),
                                                     past=cache)
        if k.shape != (b, hkv, t, c // h):
            raise AssertionError(f"cache shape {k.shape}")
        return reveal.reveal(p, out)

    sim = runtime.simulate(program, inputs=[x, *ws], config=config)
    got = config.fxp.decode(sim.outputs[0].cpu())
    want = _reference(held(config, x), [held(config, w) for w in ws], h, hkv, True, rope=(cos, sin))[:, 5:]
    assert (got - want).abs().max().item() <= TOLERANCE["accurate"]


def test_rotary_matches_reference_in_one_truncation(config):
    g = torch.Generator().manual_seed(6)
    q, k = (torch.randn(1, 2, 5, 8, generator=g, dtype=torch.float64) * 4 for _ in range(2))
    cos, sin = _rope(5, 8)
    res = run(config, lambda p, a, b: stack(attention.rotary(p, [a, b], cos, sin)), q, k)
    want = torch.stack([_rotate(held(config, q), cos, sin), _rotate(held(config, k), cos, sin)])
    assert (res.value - want).abs().max().item() <= 4 * 2.0**-18
    assert res.rounds == 2


def test_config_validation():
    with pytest.raises(ValueError):
        attention.AttentionConfig(n_heads=6, n_kv_heads=4)
    assert attention.AttentionConfig(n_heads=6).kv_heads == 6
