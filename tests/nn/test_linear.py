"""nn/linear.py and nn/embedding.py: secret linear layers (one truncation), exact embeddings (no truncation)."""

from __future__ import annotations

import pytest
import torch

from secureinfer.mpc.nn import embedding, linear
from secureinfer.mpc.protocols import trunc
from secureinfer.mpc.shares import stack
from tests.approx.util import held, run, ulp



def _trunc_bytes(config, elements: int) -> int:
    """Bytes (all parties) of one truncation call by f bits on `elements` elements."""
    return trunc.bytes_per_element(config.fxp.frac_bits) * elements


def _data(seed: int, *shapes, scale: float = 1.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64) * scale for s in shapes]


def test_linear_with_bias_batched(config):
    x, w, b = _data(0, (2, 8, 48), (48, 24), (24,))
    x[0, 0, :3] = torch.tensor([0.0, 1000.0, -1000.0])  # zeros and large values
    res = run(config, lambda p, x_, w_, b_: linear.linear(p, x_, w_, b_), x, w, b)
    want = held(config, x) @ held(config, w) + held(config, b)
    err = (res.value - want).abs().max().item()
    assert err <= ulp(config)
    assert res.rounds == 2
    assert sum(res.bytes_per_party) == _trunc_bytes(config, 2 * 8 * 24)


def test_linear_many_is_one_truncation(config):
    x, wq, wk, wv, bq = _data(1, (1, 6, 32), (32, 32), (32, 16), (32, 16), (32,))

    def op(p, x_, a, b, c, bias):
        q, k, v = linear.linear_many(p, x_, [a, b, c], [bias, None, None])
        from secureinfer.mpc.shares import cat
        return cat([q, k, v], dim=-1)

    res = run(config, op, x, wq, wk, wv, bq)
    xq = held(config, x)
    want = torch.cat([xq @ held(config, wq) + held(config, bq), xq @ held(config, wk), xq @ held(config, wv)], -1)
    assert (res.value - want).abs().max().item() <= ulp(config)
    assert res.rounds == 2
    assert sum(res.bytes_per_party) == _trunc_bytes(config, 6 * 64)


def test_linear_public_and_residual(config):
    x, y = _data(2, (5, 16), (5, 8))
    w, b = _data(3, (16, 8), (8,))
    res = run(config, lambda p, x_, y_: linear.residual(linear.linear_public(p, x_, w, b), y_), x, y)
    want = held(config, x) @ held(config, w) + held(config, b) + held(config, y)
    assert (res.value - want).abs().max().item() <= ulp(config)
    assert res.rounds == 2


def test_linear_shape_mismatch_raises(config):
    from secureinfer.mpc import runtime

    x, w = _data(4, (3, 5), (4, 2))
    with pytest.raises(ValueError):
        runtime.simulate(lambda p, a, b: linear.linear(p, a, b), inputs=[x, w], config=config)


def test_embedding_is_exact_and_one_round(config):
    vocab, dim = 50, 12
    ids = torch.tensor([[3, 0, 49, 7, 7]])
    table = _data(5, (vocab, dim), scale=3.0)[0]
    onehot = embedding.one_hot(ids, vocab)
    positions = torch.tensor([0, 1, 2, 3, 4])
    pos_table = _data(6, (8, dim))[0]

    def op(p, oh, tab, pos):
        tok = embedding.embedding(p, oh, tab)  # (1, 5, dim)
        return stack([tok[0], embedding.lookup_public(pos, positions)])

    res = run(config, op, onehot, table, pos_table, raw=True)
    want_tok = config.fxp.encode(table)[ids[0]]
    assert torch.equal(res.value[0], want_tok.cpu()), "one-hot x table must be exact (no truncation)"
    assert torch.equal(res.value[1], config.fxp.encode(pos_table)[positions].cpu())
    assert res.rounds == 1
    assert sum(res.bytes_per_party) == 8 * 5 * dim * 3  # one element per output per party


def test_one_hot_validation():
    assert embedding.one_hot(torch.tensor([1, 0]), 3).tolist() == [[0, 1, 0], [1, 0, 0]]
    with pytest.raises(ValueError):
        embedding.one_hot(torch.tensor([3]), 3)
    with pytest.raises(ValueError):
        embedding.one_hot(torch.tensor([0.5]), 3)
