"""Truncation (protocols/trunc.py): the stated guarantee, checked exactly on the ring over the whole input range.

The docstring promises: for |x| < 2^62 the output is floor(x / 2^bits) or floor(x / 2^bits) + 1, with no failure
probability. int64 `>>` is an arithmetic shift, i.e. exactly floor(x / 2^bits) for negative x as well.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from secureinfer.mpc import runtime
from secureinfer.mpc.protocols import reveal, trunc

LIMIT = (1 << 62) - 1  # the largest |x| the guarantee covers


def wide_inputs(n: int, seed: int) -> torch.Tensor:
    """n values spread over |x| < 2^62: uniform over the range, uniform magnitudes (log scale), and edge values."""
    g = torch.Generator().manual_seed(seed)
    uniform = torch.randint(-LIMIT, LIMIT, (n // 2,), generator=g, dtype=torch.int64)
    bit_len = torch.randint(0, 62, (n // 2,), generator=g)
    mags = torch.randint(0, 1 << 62, (n // 2,), generator=g, dtype=torch.int64) >> (62 - bit_len)
    signs = torch.randint(0, 2, (n // 2,), generator=g) * 2 - 1
    edges = torch.tensor(
        [0, 1, -1, 2, -2, LIMIT, -LIMIT, LIMIT - 1, -LIMIT + 1, 1 << 61, -(1 << 61), (1 << 18) - 1, -(1 << 18),
         1 << 18, -(1 << 18) - 1, 1 << 40, -(1 << 40)],
        dtype=torch.int64,
    )
    return torch.cat([edges, uniform, mags * signs])[:n]


def run_trunc(x: torch.Tensor, bits: int, config) -> torch.Tensor:
    sim = runtime.simulate(lambda p, s: reveal.reveal(p, trunc.trunc(p, s, bits)), inputs=[x], config=config)
    outs = [o.cpu() for o in sim.outputs]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[1], outs[2])
    return outs[0]


@pytest.mark.parametrize("bits", [1, 18, 36, 61])
def test_trunc_exact_guarantee_over_whole_range(config, bits):
    n = 100_000
    x = wide_inputs(n, seed=bits)
    out = run_trunc(x, bits, config)
    diff = out - (x >> bits)
    failures = int(((diff != 0) & (diff != 1)).sum())
    plus_one = float((diff == 1).double().mean())
    print(f"trunc bits={bits}: {n} elements, {failures} failures, +1 rounding rate {plus_one:.4f}")
    assert failures == 0, f"{failures} wrong outputs; worst diff {diff.abs().max().item()}"
    # Sanity: the +1 rounding happens, but not always (it is probabilistic, about the discarded fraction).
    assert 0.0 < plus_one < 1.0


@settings(max_examples=10, deadline=None)
@given(
    st.lists(st.integers(min_value=-LIMIT, max_value=LIMIT), min_size=1, max_size=30),
    st.integers(min_value=1, max_value=61),
)
def test_trunc_guarantee_hypothesis(values, bits):
    from secureinfer.mpc.party import EngineConfig

    x = torch.tensor(values, dtype=torch.int64)
    diff = run_trunc(x, bits, EngineConfig()) - (x >> bits)
    assert set(diff.unique().tolist()) <= {0, 1}


def test_trunc_rounding_is_unbiased(config):
    """Not in the docstring, but a property of this construction (the mask r is uniform): the +1 happens with
    probability equal to the discarded fraction, so exact multiples of 2^bits truncate exactly."""
    bits, n = 18, 20_000
    k = torch.arange(-n // 2, n // 2, dtype=torch.int64) * 977
    assert torch.equal(run_trunc(k << bits, bits, config), k)
    quarter = (k << bits) + (1 << (bits - 2))  # fractional part 0.25
    rate = float((run_trunc(quarter, bits, config) - k).double().mean())
    print(f"trunc: +1 rate for fraction 0.25 is {rate:.4f}")
    assert 0.23 < rate < 0.27  # 0.25 +- ~6.5 standard deviations


@pytest.mark.parametrize("bits", [0, 62, 64, -1])
def test_trunc_rejects_bad_bit_counts(config, bits):
    with pytest.raises(ValueError):
        runtime.simulate(lambda p, s: trunc.trunc(p, s, bits), inputs=[torch.zeros(2, dtype=torch.int64)],
                         config=config)


def test_trunc_rounds_bytes_and_helper_rotation(config):
    """2 rounds per call; the batch is cut in thirds, each with its own helper (3 elements + ceil(bits/8) bytes per
    output; the openers 2 elements each); the first third's helper rotates from call to call."""
    n = 1000
    x = wide_inputs(n, seed=7)
    slices = [n // 3, 2 * n // 3 - n // 3, n - 2 * n // 3]  # 333, 333, 334

    def program(p, s):
        per_call = []
        for _ in range(3):
            before = p.channel.stats.snapshot()
            s = trunc.trunc(p, s, 1)
            per_call.append(p.channel.stats.since(before))
        return per_call

    sim = runtime.simulate(program, inputs=[x], config=config)
    per_call = [sim.outputs[i] for i in range(3)]  # per_call[party][call]
    for call in range(3):
        want = [sum((25 if (call + k) % 3 == i else 16) * m for k, m in enumerate(slices)) for i in range(3)]
        sent = [per_call[i][call].bytes_sent for i in range(3)]
        assert sent == want, f"call {call}: bytes per party {sent}, want {want}"
        # The largest (last) slice's helper sends the most: party (call + 2) % 3.
        assert max(range(3), key=lambda i: sent[i]) == (call + 2) % 3
    totals = [sum(c.bytes_sent for c in per_call[i]) for i in range(3)]
    print(f"trunc x3: bytes per party {totals}")
    assert totals == [57 * n] * 3 == [trunc.bytes_per_element(1) * n] * 3
    assert [s.bytes_sent for s in sim.stats] == totals
    # Rounds: per-call Lamport deltas of one party are not meaningful (a former helper's clock lags and then jumps),
    # so check the critical path: the first call costs 2 rounds and three chained calls cost 6.
    assert max(per_call[i][0].rounds for i in range(3)) == 2
    assert sim.max_rounds == 6


@pytest.mark.parametrize("bits,per_element", [(8, 57), (18, 59), (30, 60), (40, 61), (61, 64)])
def test_trunc_bytes_per_element_by_width(config, bits, per_element):
    """b's half of msb(r) travels in ceil(bits/8) bytes: 56 + ceil(bits/8) bytes per element over the parties."""
    n = 300
    sim = runtime.simulate(lambda p, s: trunc.trunc(p, s, bits), inputs=[wide_inputs(n, seed=bits)], config=config)
    assert trunc.bytes_per_element(bits) == per_element
    assert sum(s.bytes_sent for s in sim.stats) == per_element * n
    assert sim.max_rounds == 2


@pytest.mark.parametrize("bits", [1, 18, 36, 61])
def test_trunc_thrifty_same_guarantee_fewer_bytes_one_round_more(config, bits):
    """The thrifty variant keeps the exact guarantee, takes 3 rounds and 41 + ceil(bits/8) bytes per element."""
    n = 3000
    x = wide_inputs(n, seed=100 + bits)
    sim = runtime.simulate(lambda p, s: reveal.reveal(p, trunc.from_additive(p, s.lo + p.zero_share(s.shape), bits,
                                                                             thrifty=True)),
                           inputs=[x], config=config)
    diff = sim.outputs[0].cpu() - (x >> bits)
    print(f"thrifty trunc bits={bits}: {int(((diff != 0) & (diff != 1)).sum())} failures")
    assert torch.all((diff == 0) | (diff == 1))
    reveal_bytes = 8 * n * 3  # the reveal sends one element per party
    assert sum(s.bytes_sent for s in sim.stats) - reveal_bytes == trunc.bytes_per_element(bits, thrifty=True) * n
    assert trunc.bytes_per_element(bits, thrifty=True) == 41 + (bits + 7) // 8
    sent = [s.bytes_sent for s in sim.stats]
    assert max(sent) - min(sent) <= 16 + 8, f"unbalanced: {sent}"  # thirds of the batch, one helper each


def test_trunc_thrifty_rounds(config):
    x = wide_inputs(30, seed=5)
    sim = runtime.simulate(lambda p, s: trunc.from_additive(p, s.lo + p.zero_share(s.shape), 18, thrifty=True),
                           inputs=[x], config=config)
    assert sim.max_rounds == 3


@pytest.mark.parametrize("thrifty", [False, True])
@pytest.mark.parametrize("bits", [1, 18, 36, 61])
def test_trunc_replicated_same_guarantee_fewer_bytes(config, bits, thrifty):
    """trunc_replicated (the helper's term is zero and not sent): the exact guarantee over the whole range, the
    same rounds, and bytes_per_element(bits, thrifty, replicated=True) = 40 (thrifty 33) + ceil(bits/8) bytes."""
    n = 30_000
    x = wide_inputs(n, seed=200 + bits)

    def program(p, s):
        before = p.channel.stats.snapshot()
        out = trunc.trunc_replicated(p, s, bits, thrifty=thrifty)
        stats = p.channel.stats.since(before)
        return reveal.reveal(p, out), stats

    sim = runtime.simulate(program, inputs=[x], config=config)
    diff = sim.outputs[0][0].cpu() - (x >> bits)
    failures = int(((diff != 0) & (diff != 1)).sum())
    sent = [o[1].bytes_sent for o in sim.outputs]
    print(f"trunc_replicated bits={bits} thrifty={thrifty}: {failures} failures, bytes per party {sent}")
    assert failures == 0
    assert 0.0 < float((diff == 1).double().mean()) < 1.0
    per_element = trunc.bytes_per_element(bits, thrifty=thrifty, replicated=True)
    assert per_element == (33 if thrifty else 40) + (bits + 7) // 8
    assert per_element == trunc.bytes_per_element(bits, thrifty=thrifty) - (8 if thrifty else 16)
    assert sum(sent) == per_element * n
    assert max(sent) - min(sent) <= 24, f"unbalanced: {sent}"
    assert max(o[1].rounds for o in sim.outputs) == (3 if thrifty else 2)


def test_trunc_replicated_small_and_empty_batches(config):
    for n in (0, 1, 2, 5):
        x = wide_inputs(max(n, 1), seed=n)[:n]
        sim = runtime.simulate(lambda p, s: reveal.reveal(p, trunc.trunc_replicated(p, s, 18)), inputs=[x],
                               config=config)
        diff = sim.outputs[0].cpu() - (x >> 18)
        assert sim.outputs[0].shape == x.shape and torch.all((diff == 0) | (diff == 1))
