"""approx/poly.py: layered polynomial evaluation with one truncation per layer, checked against float64.

Cost model asserted exactly: a truncation call by `bits` sends trunc.bytes_per_element(bits) bytes per truncated
element summed over the three parties (the two openers 2 ring elements each, the helper 3 and ceil(bits/8) bytes),
and takes 2 rounds.
"""

from __future__ import annotations

import math

import pytest
import torch

from secureinfer.mpc.approx import poly
from secureinfer.mpc.protocols import trunc
from tests.approx.util import held, run, ulp



def _trunc_bytes(elements: int, bits: int) -> int:
    """Bytes (all parties) of one truncation call by `bits` on `elements` elements."""
    return trunc.bytes_per_element(bits) * elements


@pytest.mark.parametrize("degree", range(1, 17))
def test_power_plan_covers_every_degree(degree):
    layers = poly.power_plan(degree)
    have = {1} | {p for layer in layers for p in layer}
    top = (degree + 1) // 2
    assert have == set(range(1, top + 1))
    for i in range(2, degree + 1):
        assert (i + 1) // 2 in have and i // 2 in have
    # Each layer only uses powers made before it.
    made = {1}
    for layer in layers:
        for p in layer:
            half = 1 << ((max(layer) - 1).bit_length() - 1)
            assert half in made and p - half in made
        made |= set(layer)
    assert len(layers) == (math.ceil(math.log2(top)) if top > 1 else 0)


def _grid(n: int) -> torch.Tensor:
    t = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    return torch.cat([t, torch.tensor([0.0, 1.0, -1.0, 2.0**-18, -(2.0**-18)], dtype=torch.float64)])


@pytest.mark.parametrize("degree", [1, 2, 3, 4, 6, 8, 12])
def test_evaluate_matches_float64(config, degree):
    gen = torch.Generator().manual_seed(degree)
    coeffs = (torch.rand(degree + 1, generator=gen, dtype=torch.float64) * 2 - 1).tolist()
    t = _grid(2001)
    res = run(config, lambda p, x: poly.evaluate_one(p, x, coeffs, in_bits=config.fxp.frac_bits,
                                                     out_bits=config.fxp.frac_bits, bound=degree + 1), t)
    tq = held(config, t)
    want = sum(c * tq**i for i, c in enumerate(coeffs))
    err = (res.value - want).abs().max().item() / ulp(config)
    layers = math.ceil(math.log2(degree)) if degree > 1 else 1
    print(f"degree {degree}: max error {err:.2f} ulp, {res.rounds} rounds, {res.max_bytes / t.numel():.1f} B/el")
    # Powers carry at most their degree in ulps; coefficients (|c| <= 1) add 2^-(coef_bits+1) each.
    assert err <= 1.0 + 0.5 * degree * sum(abs(c) for c in coeffs) + 1e-9
    assert res.rounds == 2 * layers
    f = config.fxp.frac_bits
    power_elements = t.numel() * len(sum(poly.power_plan(degree), []))
    final_shift = f + poly.coef_bits_for(f, degree + 1)  # 2 in_bits + coef_bits - out_bits
    assert sum(res.bytes_per_party) == _trunc_bytes(power_elements, f) + _trunc_bytes(t.numel(), final_shift)


def test_several_polynomials_share_powers_and_rounds(config):
    t = _grid(1000)
    polys = [[0.1, 0.2, 0.3, -0.4, 0.5, 0.05], [-0.3, 0.0, 0.7, 0.0, -0.2], [0.5, -0.5]]
    f = config.fxp.frac_bits

    def op(p, x):
        outs = poly.evaluate(p, x, polys, in_bits=f, out_bits=f, bound=4)
        from secureinfer.mpc.shares import stack
        return stack(outs)

    res = run(config, op, t)
    tq = held(config, t)
    for k, c in enumerate(polys):
        want = sum(ci * tq**i for i, ci in enumerate(c))
        assert (res.value[k] - want).abs().max().item() <= 6 * ulp(config)
    # Degree 5: powers t^2, t^3 (two layers), one final layer for all three polynomials: 3 layers, 6 rounds.
    assert res.rounds == 6
    final_shift = f + poly.coef_bits_for(f, 4)
    assert sum(res.bytes_per_party) == _trunc_bytes(2 * t.numel(), f) + _trunc_bytes(len(polys) * t.numel(),
                                                                                      final_shift)


def test_independent_products_take_one_truncation_call(config):
    x = torch.linspace(-3, 3, 500, dtype=torch.float64)
    y = torch.linspace(2, -2, 500, dtype=torch.float64)

    def op(p, a, b):
        from secureinfer.mpc.shares import stack
        return stack(poly.products(p, [(a, b), (a, a), (b, b)], p.fxp.frac_bits))

    res = run(config, op, x, y)
    xq, yq = held(config, x), held(config, y)
    want = torch.stack([xq * yq, xq * xq, yq * yq])
    assert (res.value - want).abs().max().item() <= ulp(config)
    assert res.rounds == 2
    assert sum(res.bytes_per_party) == _trunc_bytes(3 * x.numel(), config.fxp.frac_bits)


def test_encode_is_exact_and_checked():
    assert poly.encode(0.5, 10) == 512
    assert poly.encode(-1.0 / 3.0, 30) == round(-(2**30) / 3)
    assert poly.encode(3.0, -1) == 2  # round(1.5) -> 2 (banker's rounding on exact halves)
    with pytest.raises(ValueError):
        poly.encode(4.0, 61)
    with pytest.raises(ValueError):
        poly.coef_bits_for(28, 2**10)


def test_out_of_domain_values_do_not_break_other_elements(config):
    """Garbage far outside |t| <= 1 stays confined to its own elements (truncation has no failure mode)."""
    t = torch.tensor([0.5, 3000.0, -0.25, -5000.0], dtype=torch.float64)
    f = config.fxp.frac_bits
    coeffs = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    res = run(config, lambda p, x: poly.evaluate_one(p, x, coeffs, in_bits=f, out_bits=f, bound=2), t)
    tq = held(config, t)
    want = tq + tq**6
    assert (res.value[[0, 2]] - want[[0, 2]]).abs().max().item() <= 8 * ulp(config)
