"""Bit-to-arithmetic, bit products, select, ReLU and max (protocols/b2a.py, select.py) against plaintext.

Ring-exact results (B2A, mul_bit, select, ReLU, max select existing values exactly, no rounding) are compared
bit-for-bit with int64 torch on the fixed-point encodings; rounds and bytes per party are asserted exactly.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from secureinfer.mpc import runtime
from secureinfer.mpc.protocols import b2a, compare, reveal, select
from secureinfer.mpc.shares import BShare

from .helpers import ring_edge_data as ring_data
from .helpers import real_pairs
from .helpers import run_opened as run_measured
from .helpers import view_independence_failures

I64 = torch.iinfo(torch.int64)
N = 240  # three dealer slices of 80 elements: whole bytes per bit plane


def opened_bits_program(fn):
    """Program: reinterpret input 0's components as XOR shares (bit 0 is the secret bit), apply fn, open both."""

    def program(p, bsrc, *rest):
        b = BShare(bsrc.lo, bsrc.hi, bsrc.party)
        before = p.channel.stats.snapshot()
        out = fn(p, b, *rest)
        spent = p.channel.stats.since(before)
        return reveal.reveal(p, b).cpu() & 1, reveal.reveal(p, out).cpu(), spent

    return program


def test_bit_to_arith_one_round(config):
    src = ring_data(N, 21)
    sim = runtime.simulate(opened_bits_program(b2a.bit_to_arith), inputs=[src], config=config)
    bit, out, _ = sim.outputs[0]
    assert torch.equal(out, bit) and 0 < int(bit.sum()) < N
    for _, _, spent in sim.outputs:
        assert spent.rounds == 1 and spent.bytes_sent == 32 * N // 3
    print(f"bit_to_arith: 1 round, {32 / 3:.2f} bytes/element/party")


@pytest.mark.parametrize("shape", [(1,), (2,), (3, 7), (0,)])
def test_bit_to_arith_shapes(config, shape):
    n = 1
    for s in shape:
        n *= s
    src = ring_data(n, 22).reshape(shape)
    sim = runtime.simulate(opened_bits_program(b2a.bit_to_arith), inputs=[src], config=config)
    bit, out, _ = sim.outputs[1]
    assert out.shape == shape and torch.equal(out, bit)


def test_mul_bit_one_round_exact(config):
    src, x = ring_data(N, 23), ring_data(N, 24)  # x over the whole ring, edges included
    sim = runtime.simulate(opened_bits_program(b2a.mul_bit), inputs=[src, x], config=config)
    bit, out, _ = sim.outputs[2]
    assert torch.equal(out, bit * x)
    for _, _, spent in sim.outputs:
        assert spent.rounds == 1 and spent.bytes_sent == 16 * N
    print("mul_bit: 1 round, 16.00 bytes/element/party")


@settings(max_examples=6, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(I64.min, I64.max)), min_size=1, max_size=10))
def test_mul_bit_hypothesis(pairs):
    bits = torch.tensor([b for b, _ in pairs], dtype=torch.int64)
    x = torch.tensor([v for _, v in pairs], dtype=torch.int64)

    def program(p, xs):
        b = compare.eqz(p, xs.add_public(-x.to(p.device)))  # a known bit pattern: all ones here
        b = b.xor_public(1 - bits.to(p.device))  # -> bits
        return reveal.reveal(p, b2a.mul_bit(p, b, xs)).cpu()

    sim = runtime.simulate(program, inputs=[x])
    assert torch.equal(sim.outputs[0], bits * x)


def test_select_and_relu(config):
    limit = 2.0**40
    x, y = real_pairs(N, limit, 3)
    fxp = config.fxp
    ex, ey = fxp.encode(x), fxp.encode(y)

    def sel(p, a, b):
        return select.select(p, compare.lt(p, a, b), a, b)  # min(a, b)

    out, stats = run_measured(sel, [x, y], config)
    assert torch.equal(out, torch.minimum(ex, ey))
    assert all(s.rounds == 7 for s in stats)
    out, stats = run_measured(lambda p, a: select.relu(p, a), [x], config)
    assert torch.equal(out, torch.relu(ex))
    assert torch.equal(fxp.decode(out), torch.relu(fxp.decode(ex)))
    for s in stats:
        assert s.rounds == 7 and s.bytes_sent == 4890 + 16 * N
    print(f"relu: 7 rounds, {(4890 + 16 * N) / N:.2f} bytes/element/party")


@pytest.mark.parametrize("shape, dim, keepdim", [((128,), -1, False), ((3, 5), 1, True), ((7, 2, 3), 0, False),
                                                 ((4, 1), 1, False), ((2, 6, 3), -2, True)])
def test_max_and_min(config, shape, dim, keepdim):
    g = torch.Generator().manual_seed(sum(shape))
    x = (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * 2.0**40
    x.view(-1)[0] = -(2.0**40)
    ex = config.fxp.encode(x)
    out, stats = run_measured(lambda p, a: select.max(p, a, dim, keepdim), [x], config)
    assert torch.equal(out, ex.amax(dim, keepdim=keepdim))
    n = shape[dim]
    levels = (n - 1).bit_length()
    assert max(s.rounds for s in stats) == 7 * levels
    if shape == (128,):
        print(f"max over 128: {stats[0].rounds} rounds, bytes per party {[s.bytes_sent for s in stats]}")
    out, _ = run_measured(lambda p, a: select.min(p, a, dim, keepdim), [x], config)
    assert torch.equal(out, ex.amin(dim, keepdim=keepdim))


def test_max_with_ties_and_equal_rows(config):
    x = torch.tensor([[1.0, 1.0, 1.0], [-3.0, 2.5, 2.5], [0.0, -0.0, -1.0]], dtype=torch.float64)
    out, _ = run_measured(lambda p, a: select.max(p, a), [x], config)
    assert torch.equal(out, config.fxp.encode(x).amax(-1))


@pytest.mark.parametrize("name", ["bit_to_arith", "mul_bit"])
def test_views_do_not_depend_on_secret(config, name):
    n = 2400
    zero = torch.zeros(n, dtype=torch.int64)
    ones = torch.full((n,), (1 << 62) + 1, dtype=torch.int64)  # bit 0 set, large x

    def program(p, bsrc, x):
        b = BShare(bsrc.lo, bsrc.hi, bsrc.party)
        return b2a.bit_to_arith(p, b) if name == "bit_to_arith" else b2a.mul_bit(p, b, x)

    failures, report = view_independence_failures(program, [zero, zero], [ones, ones], runs=2, config=config)
    print(f"{name} views: {report}")
    assert not failures, failures[:10]


def test_mul_bit_broadcasts_the_bit(config):
    src, x = ring_data(3, 31).reshape(3, 1), ring_data(12, 32).reshape(3, 4)
    sim = runtime.simulate(opened_bits_program(b2a.mul_bit), inputs=[src, x], config=config)
    bit, out, spent = sim.outputs[0]
    assert out.shape == (3, 4) and torch.equal(out, bit * x)
    assert spent.rounds == 1
