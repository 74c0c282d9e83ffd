"""approx/exp.py: exp(x) for x <= 0 against float64, over [-50, 0], the clip edge and far below it."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from secureinfer.mpc.approx import ACCURATE, FAST, exp, profile
from tests.approx.util import held, run, ulp

# Max absolute error on [clip, 0] (approximation + fixed point), as the module docstring states.
TOLERANCE = {"accurate": 1.1e-5, "fast": 2.3e-4}  # approximation + ~1 ulp of output rounding


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


@pytest.mark.parametrize("profile", [ACCURATE, FAST, replace(FAST, name="fast-64", compare_bits=None)],
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
    assert res.rounds == msb_rounds + 1 + 2 * (base_layers + profile.exp_squarings)


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
