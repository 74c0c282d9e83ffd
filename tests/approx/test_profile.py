"""approx/profile.py: the profiles validate their knobs, and the stated errors of their polynomials are honest."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from secureinfer.mpc.approx import ACCURATE, FAST, PROFILES, EvenSplit, get
from secureinfer.mpc.approx.profile import RSQRT_POLYS


def _even_split_plain(spec: EvenSplit, x: torch.Tensor) -> torch.Tensor:
    a = spec.cutoff
    v = 2 * x * x / (a * a) - 1
    p = sum(c * v**i for i, c in enumerate(spec.coeffs))
    return torch.where(x < -a, torch.zeros_like(x), torch.where(x > a, x, 0.5 * x + p))


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=lambda p: p.name)
@pytest.mark.parametrize("fn", ["gelu", "silu"])
def test_even_split_stated_error_holds_in_float64(profile, fn):
    spec = getattr(profile, fn)
    ref = torch.nn.functional.gelu if fn == "gelu" else torch.nn.functional.silu
    x = torch.linspace(-80, 80, 1_600_001, dtype=torch.float64)
    err = (_even_split_plain(spec, x) - ref(x)).abs().max().item()
    print(f"{profile.name} {fn}: plaintext max error {err:.3e} (stated {spec.max_error:.2e})")
    assert err <= spec.max_error * 1.01
    assert err >= spec.max_error * 0.9  # the statement is not loose either


@pytest.mark.parametrize("degree", sorted(RSQRT_POLYS))
def test_rsqrt_polynomials_stated_error(degree):
    coeffs, stated = RSQRT_POLYS[degree]
    s = torch.linspace(0.25, 1.0, 200_001, dtype=torch.float64)
    v = (8 * s - 5) / 3
    approx = sum(c * v**i for i, c in enumerate(coeffs))
    rel = ((approx - s.rsqrt()) / s.rsqrt()).abs().max().item()
    assert stated * 0.9 <= rel <= stated * 1.01


def test_profiles_are_frozen_and_named():
    assert get("accurate") is ACCURATE and get("fast") is FAST
    with pytest.raises(ValueError):
        get("nonexistent")
    with pytest.raises(Exception):
        ACCURATE.exp_squarings = 3  # frozen dataclass


@pytest.mark.parametrize("change", [
    dict(exp_base=(1.0, 0.5, 0.1, 0.01)), dict(exp_base=(1.0, 0.1)), dict(exp_squarings=13), dict(exp_clip=1.0),
    dict(recip_newton_iters=0),
    dict(rsqrt_poly_degree=9), dict(rsqrt_newton_iters=-1), dict(poly_bits=30), dict(compare_bits=4),
])
def test_profile_validation_raises(change):
    with pytest.raises(ValueError):
        replace(FAST, **change)


def test_even_split_validation():
    with pytest.raises(ValueError):
        EvenSplit(cutoff=0.0, coeffs=(1.0, 2.0), max_error=0.1)
    with pytest.raises(ValueError):
        EvenSplit(cutoff=1.0, coeffs=(1.0,), max_error=0.1)
