"""Comparisons (protocols/compare.py): msb on raw ring values, and <, <=, >, >=, == on fixed-point reals.

Outputs are bits, compared exactly with plaintext torch (float64 for the reals, int64 for ring values). Rounds and
bytes per party are asserted exactly for n = 240 elements (three dealer slices of 80: whole bytes per bit plane).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from secureinfer.mpc import runtime
from secureinfer.mpc.protocols import compare

from .helpers import ring_edge_data as ring_data
from .helpers import real_pairs
from .helpers import run_opened as run_measured
from .helpers import view_independence_failures

I64 = torch.iinfo(torch.int64)
N = 240  # three dealer slices of 80 elements: whole bytes per bit plane



@pytest.mark.parametrize("block_bits, rounds, total_bytes", [(1, 7, 7420), (2, 6, 4890), (4, 5, 6200)])
def test_msb_exact_rounds_bytes(config, block_bits, rounds, total_bytes):
    x = ring_data(N, 5)
    out, stats = run_measured(lambda p, s: compare.msb(p, s, block_bits=block_bits), [x], config)
    assert torch.equal(out, (x < 0).long())
    for s in stats:
        assert s.rounds == rounds and s.bytes_sent == total_bytes
    assert rounds <= 8
    print(f"msb w={block_bits}: {rounds} rounds, {total_bytes / N:.2f} bytes/element/party")


@pytest.mark.parametrize("bits", [2, 20, 41, 63])
def test_msb_narrow_width(config, bits):
    x = ring_data(N, bits)
    out, stats = run_measured(lambda p, s: compare.msb(p, s, bits=bits), [x], config)
    assert torch.equal(out, (x >> (bits - 1)) & 1)
    full = 4890
    assert all(s.bytes_sent < full for s in stats) or bits == 63
    print(f"msb bits={bits}: {stats[0].rounds} rounds, {stats[0].bytes_sent / N:.2f} bytes/element/party")


@settings(max_examples=8, deadline=None)
@given(st.lists(st.integers(min_value=I64.min, max_value=I64.max), min_size=1, max_size=20))
def test_msb_hypothesis(values):
    x = torch.tensor(values, dtype=torch.int64)
    out, stats = run_measured(lambda p, s: compare.msb(p, s), [x], None)
    assert torch.equal(out, (x < 0).long())
    assert max(s.rounds for s in stats) == 6


def test_msb_shapes(config):
    for shape in [(1,), (3, 5), (2, 1, 7), (0, 4)]:
        n = 1
        for s in shape:
            n *= s
        x = ring_data(n, 7).reshape(shape)
        out, _ = run_measured(lambda p, s: compare.msb(p, s), [x], config)
        assert out.shape == shape and torch.equal(out, (x < 0).long())


def test_comparisons_against_shared_and_public(config):
    limit = 2.0**40  # real; ring values up to 2^58
    x, y = real_pairs(N, limit, 1)
    fxp = config.fxp
    ex, ey = fxp.encode(x), fxp.encode(y)
    want = {"lt": ex < ey, "le": ex <= ey, "gt": ex > ey, "ge": ex >= ey, "eq": ex == ey}
    ops = {k: getattr(compare, k) for k in want}
    for name, op in ops.items():
        out, stats = run_measured(lambda p, a, b: op(p, a, b), [x, y], config)
        assert torch.equal(out, want[name].long()), name
        assert all(s.rounds == 6 for s in stats), (name, [s.rounds for s in stats])
        # Against a public tensor and a public scalar.
        out, _ = run_measured(lambda p, a: op(p, a, y), [x], config)
        assert torch.equal(out, want[name].long()), name + " public tensor"
        out, _ = run_measured(lambda p, a: op(p, a, 1.0), [x], config)
        assert torch.equal(out, getattr(ex, f"__{name}__")(fxp.encode(1.0)).long()), name + " public scalar"
    assert want["eq"].sum() >= 20  # the ties did happen


def test_ltz_and_eq_bytes(config):
    x = ring_data(N, 9)
    x[100:140] = 0
    out, stats = run_measured(lambda p, s: compare.ltz(p, s), [x], config)
    assert torch.equal(out, (x < 0).long())
    out, stats = run_measured(lambda p, s: compare.eqz(p, s), [x], config)
    assert torch.equal(out, (x == 0).long())
    for s in stats:
        assert s.rounds == 6 and s.bytes_sent == 3490
    print(f"eq: 6 rounds, {3490 / N:.2f} bytes/element/party")


def test_eq_exact_on_near_values(config):
    base = ring_data(N, 10)
    y = base.clone()
    y[1::3] ^= 1 << torch.arange(N)[1::3] % 64  # differ in exactly one bit
    y[2::3] += 1
    out, _ = run_measured(lambda p, a, b: compare.eq(p, a, b), [base, y], config)
    assert torch.equal(out, (base == y).long())


def test_msb_many_batches(config):
    x, y = ring_data(48, 11), ring_data(48, 12)
    out, stats = run_measured(lambda p, a, b: compare.msb_many(p, [a, b])[1], [x, y], config)
    assert torch.equal(out, (y < 0).long())
    assert max(s.rounds for s in stats) == 6


def test_bad_width_raises(config):
    with pytest.raises(ValueError):
        runtime.simulate(lambda p, s: compare.msb(p, s, bits=65), inputs=[ring_data(4, 1)], config=config)


@pytest.mark.parametrize("name", ["msb", "eqz"])
def test_views_do_not_depend_on_secret(config, name):
    n = 2400
    zero, large = torch.zeros(n, dtype=torch.int64), torch.full((n,), -(1 << 62) + 777, dtype=torch.int64)
    fn = getattr(compare, name)
    failures, report = view_independence_failures(lambda p, x: fn(p, x), [zero], [large], runs=2, config=config)
    print(f"{name} views: {report}")
    assert not failures, failures[:10]
