"""approx/exp.py: exp(x) for x <= 0 against float64, over [-50, 0], the clip edge and far below it."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from secureinfer.mpc.approx import ACCURATE, FAST, LEAN, exp, profile
from tests.approx.util import held, run, ulp

# Max absolute error on [clip, 0] (approximation + fixed point), as the module docstring states.
# lean: fast's base with paired squarings, whose 15-bit intermediate adds up to ~2^-15 * 16 of stochastic rounding.
TOLERANCE = {"accurate": 1.1e-5, "fast": 2.3e-4, "lean": 7.5e-4}  # approximation + ~1 ulp of output rounding


def _inputs(limit: float) -> torch.Tensor:
    """[-50, 0] densely, the clip edges, and far values down to -limit (the comparison width's edge)."""
    g = torch.Generator().manual_seed(1)
    edges = torch.tensor([0.0, -(2.0**-18), -1.0, -2.0, -3.0, -13.99, -14.0, -14.01, -15.99, -16.01, -50.0, -1000.0,
                          -4096.0, -limit], dtype=torch.float64)
    return torch.cat([edges, torch.linspace(-50, 0, 3001, dtype=torch.float64),
                      -torch.rand(1000, generator=g, dtype=torch.float64) * 20])


def _limit(config, profile) -> float:
    bits = profile.compare_bits or 64
    return min(2.0 ** (bits - 1 - config.fxp.frac_bits) - 32, 2.0**40)


def _squaring_rounds(squarings: int, paired: bool, trunc_rounds: int = 2) -> int:
    """Rounds of the squarings: one truncation each, or paired: a resharing (1) + a truncation per pair and one
    truncation for an odd one. A truncation takes 2 rounds (3 with the thrifty variant)."""
    if not paired or squarings < 2:
        return trunc_rounds * squarings
    return (1 + trunc_rounds) * (squarings // 2) + trunc_rounds * (squarings % 2)


@pytest.mark.parametrize("profile", [ACCURATE, FAST, replace(FAST, name="fast-64", compare_bits=None), LEAN],
                         ids=lambda p: p.name)
def test_exp_neg_error_and_clip(config, profile):
    x = _inputs(_limit(config, profile))
    res = run(config, lambda p, s: exp.exp_neg(p, s, profile), x)
    xq = held(config, x)
    err = (res.value - xq.exp()).abs()
    below = xq < profile.exp_clip
    print(f"exp {profile.name}: max error {err.max().item():.2e} ({err.max().item() / ulp(config):.0f} ulp), "
          f"mean {err.mean().item():.2e}, {res.rounds} rounds, {res.max_bytes / x.numel():.1f} B/el per party")
    assert err.max().item() <= TOLERANCE[profile.name.split("-")[0]]
    assert torch.all(res.value[below] == 0.0), "below the clip the result must be exactly 0"
    assert res.value[x == 0.0].sub(1.0).abs().max().item() <= 2 * ulp(config)
    # Rounds: the clip (msb: 5 rounds at 32 bits, 6 at 40) + mul_bit (1) + 2 per truncation layer.
    base_layers = len(profile.exp_base) - 1
    msb_rounds = 1 + math.ceil(math.log2((profile.compare_bits or 64) / 2))
    trunc_rounds = 3 if profile.thrifty_trunc else 2
    squaring_rounds = _squaring_rounds(profile.exp_squarings, profile.exp_paired_squarings, trunc_rounds)
    assert res.rounds == msb_rounds + 1 + trunc_rounds * base_layers + squaring_rounds


RECIPES = [  # (base, n, max error on [-min(14, 2^n), 0])
    (profile.TAYLOR_PUMA, 5, 8.6e-3),
    ((0.9791424579275342,), 5, 4.1e-3),  # degree 1 with a fitted slope: one truncation more than PUMA
    ((1.0, 0.5), 4, 1.03e-3),  # Taylor degree 2
    (profile.EXP_BASE_2_N4, 4, 2.3e-4),
    ((1.0, 0.5, 1 / 6), 5, 1.1e-5),  # Taylor degree 3
    (profile.EXP_BASE_3_N4, 4, 1.1e-5),
    ((1.0, 0.5, 1 / 6), 0, 0.2),  # no squaring: a cubic on [-1, 0]
]


@pytest.mark.parametrize("base,squarings,bound", RECIPES)
def test_exp_core_error_per_recipe(config, base, squarings, bound):
    """Without the clip, each base / squaring count meets its stated error on [-min(14, 2^n), 0]."""
    x = torch.linspace(-min(14.0, 2.0**squarings), 0, 2001, dtype=torch.float64)
    res = run(config, lambda p, s: exp.exp_core(p, s, base=base, squarings=squarings), x)
    err = (res.value - held(config, x).exp()).abs().max().item()
    print(f"exp_core base {base}, n={squarings}: max error {err:.2e}")
    assert err <= bound
    base_layers = {1: 0 if base == (1.0,) else 1, 2: 1, 3: 2}[len(base)]
    assert res.rounds == 2 * (base_layers + squarings) + (2 if squarings == 0 else 0)


PAIRED_RECIPES = [  # (base, n, max error on [-min(14, 2^n), 0]) with paired squarings
    (profile.EXP_BASE_2_N4, 4, 7.5e-4),
    (profile.EXP_BASE_2_N4, 5, 7.5e-4),  # odd n: one plain squaring, then pairs
    (profile.EXP_BASE_3_N4, 4, 6.0e-4),
]


@pytest.mark.parametrize("base,squarings,bound", PAIRED_RECIPES)
def test_exp_core_paired_squarings(config, base, squarings, bound):
    """Paired squarings (15-bit intermediate) stay within the stated bound, unbiased, and save rounds and bytes."""
    x = torch.linspace(-min(14.0, 2.0**squarings), 0, 4001, dtype=torch.float64)
    plain = run(config, lambda p, s: exp.exp_core(p, s, base=base, squarings=squarings), x)
    res = run(config, lambda p, s: exp.exp_core(p, s, base=base, squarings=squarings, paired=True), x)
    err = res.value - held(config, x).exp()
    print(f"exp_core paired base {base}, n={squarings}: max error {err.abs().max().item():.2e}, mean "
          f"{err.mean().item():.1e}, {res.rounds} rounds, {res.max_bytes / x.numel():.1f} B/el "
          f"(plain {plain.max_bytes / x.numel():.1f})")
    assert err.abs().max().item() <= bound
    assert abs((res.value - plain.value).mean().item()) <= 2e-5  # the extra rounding is unbiased
    base_layers = {2: 1, 3: 2}[len(base)]
    assert res.rounds == 2 * base_layers + _squaring_rounds(squarings, True)
    assert res.max_bytes < plain.max_bytes
