"""Boolean protocols (boolean, planes, split, prefix): AND, bit planes, the prefix plan and A2B, exactly on the ring.

Every output is compared bit-for-bit with int64 torch; rounds and bytes per party are asserted exactly (n = 240
elements: each of the three dealer slices holds 80 elements, a whole number of bytes per bit plane).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from secureinfer.mpc import runtime
from secureinfer.mpc.protocols import boolean, planes, prefix, reveal, split
from secureinfer.mpc.shares import BShare

from .helpers import ring_edge_data, run_opened, view_independence_failures

I64 = torch.iinfo(torch.int64)
N = 240
ring_data = ring_edge_data
run_measured = run_opened


def as_bool(p, s):
    """Reinterpret an input AShare's components as a boolean sharing (of the XOR of the components)."""
    return BShare(s.lo, s.hi, s.party)


def test_and_or_exact_one_round_8_bytes(config):
    """Boolean secrets: the inputs' components reinterpreted as XOR shares; the secrets are opened alongside."""
    x, y = ring_data(N, 1), ring_data(N, 2)

    def program(p, a, b):
        a, b = as_bool(p, a), as_bool(p, b)
        before = p.channel.stats.snapshot()
        z = boolean.and_(p, a, b)
        spent = p.channel.stats.since(before)
        opened = [reveal.reveal(p, v).cpu() for v in (a, b, z, boolean.or_(p, a, b))]
        return opened, spent

    sim = runtime.simulate(program, inputs=[x, y], config=config)
    (a, b, z, o), _ = sim.outputs[0]
    assert torch.equal(z, a & b)
    assert torch.equal(o, a | b)
    for _, spent in sim.outputs:
        assert spent.rounds == 1 and spent.bytes_sent == 8 * N


def test_planes_round_trip(device):
    for n in (1, 7, 8, 9, 100):
        x = ring_data(n, n).to(device)
        sliced = planes.to_planes(x)
        assert sliced.shape == (64, (n + 7) // 8) and sliced.dtype == torch.uint8
        bits = planes.unpack_bits(sliced, n).to(torch.int64).cpu()  # (64, n)
        want = (x.cpu().unsqueeze(0) >> torch.arange(64).unsqueeze(1)) & 1
        assert torch.equal(bits, want)
        assert torch.equal(planes.from_planes(sliced, n).cpu(), x.cpu())


def test_anf_tables_reproduce_functions():
    for w in (1, 2, 4):
        fns = [boolean.block_generate(w), boolean.block_propagate(w), boolean.bit_of_sum(w - 1)]
        for fn in fns:
            table = split.anf_table(fn, w)
            for a in range(1 << w):
                for v in range(1 << w):
                    val = 0
                    for s in range(1 << w):
                        if table[a][s] and (v & s) == s:
                            val ^= 1
                    assert val == fn(a, v), (w, a, v)


def test_prefix_plan_trims_to_a_tree_and_keeps_all_carries():
    levels, need_g, need_p = prefix.prefix_plan(32, frozenset({31}))
    assert [sum(op.do_g + op.do_p for op in lvl) for lvl in levels] == [31, 15, 7, 3, 1]
    assert need_g == frozenset(range(32)) and need_p == frozenset(range(1, 32))
    levels, _, _ = prefix.prefix_plan(32, frozenset(range(31)))
    assert len(levels) == 5
    # Symbolic check: simulate spans; each needed output must cover blocks 0..u.
    for n in (1, 2, 5, 16, 21, 32):
        levels, need_g, need_p = prefix.prefix_plan(n, frozenset(range(n)))
        span = {u: (u, u) for u in range(n)}
        for lvl in levels:
            new = dict(span)
            for op in lvl:
                lo_u, hi_u = span[op.u]
                lo_l, hi_l = span[op.low]
                assert hi_l == lo_u - 1
                new[op.u] = (lo_l, hi_u)
            span = new
        assert all(span[u] == (0, u) for u in range(n)), (n, span)


@pytest.mark.parametrize("block_bits, rounds, total_bytes", [(1, 7, 14360), (2, 7, 8950), (4, 6, 9870)])
def test_a2b_exact_rounds_bytes(config, block_bits, rounds, total_bytes):
    x = ring_data(N, 3)
    out, stats = run_measured(lambda p, s: boolean.a2b(p, s, block_bits=block_bits), [x], config)
    assert torch.equal(out, x)
    for s in stats:
        assert s.rounds == rounds
        assert s.bytes_sent == total_bytes
    print(f"a2b w={block_bits}: {rounds} rounds, {total_bytes / N:.2f} bytes/element/party")


def test_a2b_shapes_and_small_batches(config):
    for shape in [(1,), (2, 3), (5, 1, 4), (0,)]:
        n = 1
        for s in shape:
            n *= s
        x = ring_data(n, n + 11).reshape(shape)
        out, _ = run_measured(lambda p, s: boolean.a2b(p, s), [x], config)
        assert out.shape == x.shape and torch.equal(out, x)


@settings(max_examples=8, deadline=None)
@given(st.lists(st.integers(min_value=I64.min, max_value=I64.max), min_size=1, max_size=20))
def test_a2b_hypothesis(values):
    x = torch.tensor(values, dtype=torch.int64)
    out, _ = run_measured(lambda p, s: boolean.a2b(p, s), [x], None)
    assert torch.equal(out, x)


def test_a2b_views_do_not_depend_on_secret(config):
    n = 2400
    zero, large = torch.zeros(n, dtype=torch.int64), torch.full((n,), -(1 << 62) + 12345, dtype=torch.int64)
    failures, report = view_independence_failures(lambda p, x: boolean.a2b(p, x), [zero], [large], runs=2,
                                                  config=config)
    print(f"a2b views: {report}")
    assert not failures, failures[:10]
