"""approx/{normalise,reciprocal,rsqrt}.py: highest-bit one-hot, 1/x and scale/sqrt(x) against float64."""

from __future__ import annotations

import math

import pytest
import torch

from secureinfer.mpc.approx import ACCURATE, FAST, normalise, reciprocal, rsqrt
from tests.approx.util import held, run


def _log_uniform(lo: float, hi: float, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.exp(torch.rand(n, generator=g, dtype=torch.float64) * (math.log(hi) - math.log(lo)) + math.log(lo))


def test_highest_bit_one_hot(config):
    x = torch.tensor([1, 2, 3, 255, 256, 2**40 + 5, 2**44 - 1, 7, 0, 2**50], dtype=torch.int64)  # raw ring values
    lo_bit, hi_bit = 2, 45
    res = run(config, lambda p, s: normalise.highest_bit(p, s, lo_bit, hi_bit), x, raw=True)
    want = torch.zeros(x.numel(), hi_bit - lo_bit, dtype=torch.int64)
    for i, v in enumerate(x.tolist()):
        top = max(v.bit_length() - 1, lo_bit)  # below the window: the forced lowest bit
        if top < hi_bit:
            want[i, top - lo_bit] = 1
    assert torch.equal(res.value[:-1], want[:-1])
    assert int(res.value[-1].sum()) <= 1  # above the window (outside the domain): at most one bit, no crash


@pytest.mark.parametrize("profile", [ACCURATE, FAST], ids=lambda p: p.name)
def test_reciprocal_softmax_window(config, profile):
    """The softmax denominator window [1, 128): relative error from the Newton steps, 30 output bits."""
    x = torch.cat([torch.tensor([1.0, 1.0 - 2.0**-17, 2.0, 127.99, 64.0, 3.0], dtype=torch.float64),
                   _log_uniform(1.0, 128.0, 2000, 2)])
    res = run(config, lambda p, s: reciprocal.reciprocal(p, s, profile, lo=0, hi=8, out_bits=30), x, out_bits=30)
    want = 1.0 / held(config, x)
    err = (res.value - want).abs()
    bound = 0.0718 ** (2**profile.recip_newton_iters)  # |1 - s y0| <= 0.0718, squared per step
    print(f"reciprocal {profile.name}: max rel error {(err / want).max().item():.2e} (bound {bound:.1e}), "
          f"{res.rounds} rounds, {res.max_bytes / x.numel():.0f} B/el per party")
    assert bool((err <= bound * want + 2.0**-26).all())  # + a few ulps of the 28-bit Newton steps
    # normalise (a2b 7, prefix-OR over 8 bits 3, b2a 1) + scale 2 + e 2 + 2 per step + rescale 2.
    assert res.rounds == 7 + 3 + 1 + 2 + 2 + 2 * profile.recip_newton_iters + 2


def test_reciprocal_wide_window(config):
    """A window spanning 2^-10 .. 2^20: relative error stays small at both ends (default f output bits)."""
    x = torch.cat([torch.tensor([2.0**-10, 2.0**20 - 1, 1.0, 0.75], dtype=torch.float64),
                   _log_uniform(2.0**-10, 2.0**20, 2000, 3)])
    res = run(config, lambda p, s: reciprocal.reciprocal(p, s, ACCURATE, lo=-10, hi=20, out_bits=28), x,
              out_bits=28)
    want = 1.0 / held(config, x)
    err = (res.value - want).abs()
    rel = err / want
    # Relative precision ~2^-18 of x itself near 2^-10 (its fixed-point rounding) and 2^-28 absolute at the top.
    ok = (rel <= 2e-5) | (err <= 2.0**-27)
    assert bool(ok.all()), f"worst rel {rel.max().item():.2e}"


def test_reciprocal_rejects_bad_windows(config):
    from secureinfer.mpc import runtime

    with pytest.raises(ValueError):
        runtime.simulate(lambda p, s: reciprocal.reciprocal(p, s, ACCURATE, lo=-30, hi=8),
                         inputs=[torch.ones(2, dtype=torch.float64)], config=config)


@pytest.mark.parametrize("profile", [ACCURATE, FAST], ids=lambda p: p.name)
def test_rsqrt_wide_window_with_scale(config, profile):
    """scale/sqrt(x) over [2^-14, 2^24), the LayerNorm use (scale = sqrt(C)), 30 output bits."""
    x = torch.cat([torch.tensor([2.0**-14, 0.25, 1.0, 4.0, 2.0**24 - 1, 3.0], dtype=torch.float64),
                   _log_uniform(2.0**-14, 2.0**24, 3000, 4)])
    scale = math.sqrt(384)
    res = run(config, lambda p, s: rsqrt.rsqrt(p, s, profile, lo=-14, hi=24, scale=scale, out_bits=30), x,
              out_bits=30)
    want = scale / held(config, x).sqrt()
    rel = ((res.value - want) / want).abs()
    stated = rsqrt.RSQRT_POLYS[profile.rsqrt_poly_degree][1]
    for _ in range(profile.rsqrt_newton_iters):
        stated = 1.5 * stated**2
    bound = stated + 4e-6  # + fixed point (poly_bits = 20: a few 2^-20 relative)
    print(f"rsqrt {profile.name}: max rel error {rel.max().item():.2e} (bound {bound:.1e}), {res.rounds} rounds")
    assert rel.max().item() <= bound
    poly_layers = math.ceil(math.log2(profile.rsqrt_poly_degree))
    width = 24 + 14
    assert res.rounds == 7 + math.ceil(math.log2(width)) + 1 + 2 + 2 * poly_layers + 4 * profile.rsqrt_newton_iters + 2


def test_rsqrt_default_output_bits(config):
    x = torch.tensor([0.5, 2.0, 100.0, 1e4], dtype=torch.float64)
    res = run(config, lambda p, s: rsqrt.rsqrt(p, s, ACCURATE, lo=-2, hi=14), x)
    assert (res.value - held(config, x).rsqrt()).abs().max().item() <= 4 * 2.0**-18
