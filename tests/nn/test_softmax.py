"""nn/softmax.py: exact row max, masks (causal, padding, fully masked rows), probabilities against float64."""

from __future__ import annotations

import math

import pytest
import torch

from secureinfer.mpc.approx import ACCURATE, FAST
from secureinfer.mpc.nn import softmax
from tests.approx.util import held, run

TOLERANCE = {"accurate": 5e-5, "fast": 4e-3}  # max abs error on probabilities


def _scores(shape, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(*shape, generator=g, dtype=torch.float64) * 60 - 50  # down to -50
    x[..., 0, :] = 0.0  # a row of ties
    x[..., 1, 1] = 2000.0  # a dominating score
    return x


def _reference(x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    if keep is None:
        return torch.softmax(x, -1)
    out = torch.softmax(x.masked_fill(~keep, -math.inf), -1)
    return torch.nan_to_num(out, nan=0.0)  # fully masked rows: 0 here, NaN in torch


def test_row_max_is_exact(config):
    x = _scores((3, 7, 9), 0)
    res = run(config, lambda p, s: softmax.row_max(p, s, 40), x)
    assert torch.equal(res.value, held(config, x).amax(-1, keepdim=True))
    assert res.rounds == 4 * (6 + 1)  # 9 -> 5 -> 3 -> 2 -> 1: four levels of msb (40 bits) + mul_bit


@pytest.mark.parametrize("profile", [ACCURATE, FAST], ids=lambda p: p.name)
def test_softmax_unmasked(config, profile):
    x = _scores((2, 3, 16, 16), 1)
    res = run(config, lambda p, s: softmax.softmax(p, s, profile), x)
    err = (res.value - _reference(held(config, x), None)).abs()
    print(f"softmax {profile.name}: max error {err.max().item():.2e}, mean {err.mean().item():.2e}, "
          f"{res.rounds} rounds, {res.max_bytes / x.numel():.1f} B/el per party")
    assert err.max().item() <= TOLERANCE[profile.name]
    assert (res.value.sum(-1) - 1).abs().max().item() <= 2 * TOLERANCE[profile.name] * 16


@pytest.mark.parametrize("profile", [ACCURATE, FAST], ids=lambda p: p.name)
def test_softmax_causal_and_padding(config, profile):
    x = _scores((2, 2, 12, 12), 2)
    pad = torch.ones(2, 12, dtype=torch.bool)
    pad[1, 8:] = False  # second sequence: 4 padding keys
    mask = pad[:, None, None, :]
    res = run(config, lambda p, s: softmax.softmax(p, s, profile, mask=mask, causal=True), x)
    keep = softmax.causal_mask(12, 12) & mask
    want = _reference(held(config, x), keep)
    assert (res.value - want).abs().max().item() <= TOLERANCE[profile.name]
    assert torch.all(res.value[~keep.expand(x.shape)] == 0.0), "masked positions must be exactly 0"


def test_fully_masked_rows_are_zero(config):
    x = _scores((1, 4, 6), 3)
    mask = torch.tensor([[True, True, False, False, False, False], [False] * 6, [True] * 6, [False] * 5 + [True]])
    res = run(config, lambda p, s: softmax.softmax(p, s, FAST, mask=mask), x)
    assert torch.all(res.value[0, 1] == 0.0)
    want = _reference(held(config, x), mask)
    assert (res.value - want).abs().max().item() <= TOLERANCE["fast"]


def test_causal_mask_with_offset():
    m = softmax.causal_mask(2, 5)  # two new queries at positions 3 and 4
    assert m.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
