"""nn/activations.py: GeLU and SiLU (even-split recipe) against float64 torch, their cost, and ReLU."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from secureinfer.mpc.approx import ACCURATE, FAST, LEAN, poly
from secureinfer.mpc.nn import activations
from tests.approx.util import held, run, ulp

FNS = {"gelu": (activations.gelu, torch.nn.functional.gelu), "silu": (activations.silu, torch.nn.functional.silu)}


def _inputs(cutoff: float, limit: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    edges = [0.0, 2.0**-18, -(2.0**-18), cutoff, -cutoff, cutoff - 2.0**-18, -cutoff + 2.0**-18, 10.0, -10.0,
             limit, -limit, 1000.0, -1000.0]
    return torch.cat([torch.tensor(edges, dtype=torch.float64), torch.linspace(-10, 10, 4001, dtype=torch.float64),
                      torch.randn(2000, generator=g, dtype=torch.float64) * 3])


def _expected_rounds(profile, spec) -> int:
    msb = 1 + math.ceil(math.log2((profile.compare_bits or 64) / 2))
    power_layers = len(poly.power_plan(spec.degree))
    t = 3 if profile.thrifty_trunc else 2  # rounds per truncation
    return msb + t + t * power_layers + t + 1  # compare, v, powers, final, selection


@pytest.mark.parametrize("profile", [ACCURATE, FAST, LEAN], ids=lambda p: p.name)
@pytest.mark.parametrize("name", sorted(FNS))
def test_activation_error_and_cost(config, profile, name):
    secure, ref = FNS[name]
    spec = getattr(profile, name)
    limit = 2.0 ** ((profile.compare_bits or 64) - 1 - config.fxp.frac_bits) - 2 * spec.cutoff
    x = _inputs(spec.cutoff, limit)
    res = run(config, lambda p, s: secure(p, s, profile), x)
    xq = held(config, x)
    err = (res.value - ref(xq)).abs()
    tol = spec.max_error + 8 * ulp(config)
    print(f"{name} {profile.name}: max error {err.max().item():.2e} (stated {spec.max_error:.2e}), mean "
          f"{err.mean().item():.2e}, {res.rounds} rounds, {res.max_bytes / x.numel():.1f} B/el per party")
    assert err.max().item() <= tol
    # Far outside the cutoff the output is exact: x above, 0 below.
    far = xq.abs() > 2 * spec.cutoff
    far_ref = torch.where(xq > 0, xq, torch.zeros_like(xq))
    assert torch.equal(res.value[far], far_ref[far])
    assert res.rounds == _expected_rounds(profile, spec)


def test_gelu_full_width_comparisons(config):
    """compare_bits=None: the comparisons cover the whole ring, so inputs up to 2^40 are still right."""
    profile = replace(FAST, compare_bits=None)
    x = torch.tensor([2.0**40, -(2.0**40), 1.5, -1.5, 2.0**30], dtype=torch.float64)
    res = run(config, lambda p, s: activations.gelu(p, s, profile), x)
    assert (res.value - torch.nn.functional.gelu(held(config, x))).abs().max().item() <= FAST.gelu.max_error


def test_relu(config):
    x = torch.tensor([-3.0, 0.0, 2.0**-18, 5.5, -(2.0**-18)], dtype=torch.float64)
    res = run(config, activations.relu, x)
    assert torch.equal(res.value, torch.relu(held(config, x)))
