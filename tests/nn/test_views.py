"""Privacy of the secure ops: what each party receives does not depend on the secret inputs and looks uniform.

Uses the chi-square view tests of tests/mpc/helpers.py (see there): two very different secrets per op, each
exercising different branches (inside / outside polynomial cutoffs, clipped / unclipped exp, different octaves for
the highest-bit normalisation). An op that opened an unmasked value would fail.
"""

from __future__ import annotations

import pytest
import torch

from secureinfer.mpc.approx import FAST, exp, reciprocal
from secureinfer.mpc.nn import activations, norm, softmax
from tests.mpc.helpers import view_independence_failures

N = 4096


def const(value: float, shape=(N,)) -> torch.Tensor:
    return torch.full(shape, value, dtype=torch.float64)


def ramp(lo: float, hi: float, shape=(N,)) -> torch.Tensor:
    return torch.linspace(lo, hi, int(torch.tensor(shape).prod()), dtype=torch.float64).reshape(shape)


CASES = {
    "gelu": (lambda p, x: activations.gelu(p, x, FAST), [const(0.0)], [const(-7.5)]),
    "silu": (lambda p, x: activations.silu(p, x, FAST), [const(1.0)], [const(100.0)]),
    "exp": (lambda p, x: exp.exp_neg(p, x, FAST), [const(0.0)], [const(-40.0)]),
    "reciprocal": (lambda p, x: reciprocal.reciprocal(p, x, FAST, lo=0, hi=8), [const(1.0)], [const(120.0)]),
    "softmax": (lambda p, x: softmax.softmax(p, x, FAST), [const(0.0, (4, 32, 32))], [ramp(-50, 10, (4, 32, 32))]),
    "layernorm": (lambda p, x: norm.layernorm(p, x, None, None, FAST), [ramp(-1, 1, (64, 64))],
                  [ramp(-300, 500, (64, 64))]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_views_do_not_depend_on_secret(config, case):
    program, inputs_a, inputs_b = CASES[case]
    failures, report = view_independence_failures(program, inputs_a, inputs_b, runs=2, config=config)
    print(f"{case}: {report}")
    assert not failures, failures[:10]
