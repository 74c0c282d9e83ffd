"""The ring Z_2^64 on int64 tensors: fixed-point encoding, unsigned shifts, and the exact limb matmul."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from secureinfer.mpc import ring
from secureinfer.mpc.ring import FixedPoint, RingError

I64 = torch.iinfo(torch.int64)
EDGES = [0, 1, -1, 2, -2, I64.max, I64.min, I64.max - 1, I64.min + 1, 1 << 62, -(1 << 62), (1 << 32) - 1, 1 << 32]


def full_range(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Uniform int64 test data over the whole ring, with the edge values planted at the front (test data only)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(I64.min, I64.max, shape, generator=g, dtype=torch.int64)
    flat = x.reshape(-1)
    n = min(len(EDGES), flat.numel())
    flat[:n] = torch.tensor(EDGES[:n], dtype=torch.int64)
    return x


def to_unsigned(v: int) -> int:
    return v % (1 << 64)


# --- fixed point ---------------------------------------------------------------------------------------------------


def test_encode_decode_exact_on_grid():
    fxp = FixedPoint(18)
    # Values on the 2^-18 grid round-trip exactly, negatives, zero and the largest encodable magnitude included.
    top = 2.0**44 - 2.0**-9  # largest float64 below 2^62 / 2^18 (float spacing there is 2^-9)
    x = torch.tensor([0.0, -0.0, 1.0, -1.0, 2.0**-18, -(2.0**-18), 3.25, -7.75, top, -top], dtype=torch.float64)
    enc = fxp.encode(x)
    assert enc.dtype == torch.int64
    assert torch.equal(fxp.decode(enc), x)
    assert enc[2].item() == 1 << 18 and enc[4].item() == 1 and enc[5].item() == -1


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(min_value=-(2.0**40), max_value=2.0**40, allow_nan=False), min_size=1, max_size=20),
    st.integers(min_value=0, max_value=40),
)
def test_encode_round_trip_error_half_ulp(values, frac_bits):
    fxp = FixedPoint(frac_bits)
    x = torch.tensor(values, dtype=torch.float64)
    scaled_ok = (x.abs() * fxp.scale) < 2.0**62
    x = x[scaled_ok]
    err = (fxp.decode(fxp.encode(x)) - x).abs()
    # Rounding to nearest: at most half a unit in the last place (2^-f / 2), plus float64 rounding of x * 2^f.
    bound = 0.5 / fxp.scale + x.abs() * 2.0**-52
    assert bool((err <= bound).all()), f"max error {err.max().item()}"


def test_encode_errors():
    fxp = FixedPoint(18)
    for bad in [float("nan"), float("inf"), float("-inf")]:
        with pytest.raises(RingError):
            fxp.encode(torch.tensor([1.0, bad]))
    with pytest.raises(RingError):
        fxp.encode(2.0**44)  # exactly 2^62 after scaling
    with pytest.raises(RingError):
        fxp.encode(torch.tensor([0.0, -(2.0**44)]))
    with pytest.raises(RingError):
        fxp.decode(torch.tensor([1.0]))
    for bad_bits in [-1, 41]:
        with pytest.raises(RingError):
            FixedPoint(bad_bits)
    assert fxp.encode(torch.empty(0)).shape == (0,)


def test_fixed_point_properties():
    fxp = FixedPoint(18)
    assert fxp.scale == 1 << 18
    assert fxp.max_abs == 2.0**26
    # max_abs bounds a product's value: its encoding times one more scale factor (the untruncated product) < 2^62.
    assert fxp.max_abs * fxp.scale * fxp.scale <= 2.0**62


# --- shifts and bits -----------------------------------------------------------------------------------------------


def test_logical_rshift_and_msb_match_unsigned_python():
    x = full_range((64,), seed=1)
    for bits in [0, 1, 2, 17, 18, 31, 32, 62, 63]:
        got = ring.logical_rshift(x, bits).tolist()
        want = [to_unsigned(v) >> bits for v in x.tolist()]
        want = [w - (1 << 64) if w >= 1 << 63 else w for w in want]  # only bits == 0 can set the top bit
        assert got == want, f"bits={bits}"
    assert ring.msb(x).tolist() == [1 if v < 0 else 0 for v in x.tolist()]
    assert ring.low_bits(x, 18).tolist() == [to_unsigned(v) % (1 << 18) for v in x.tolist()]


def test_int64_arithmetic_wraps_mod_2_64():
    x = torch.tensor([I64.max, I64.min, -1], dtype=torch.int64)
    assert (x + 1).tolist() == [I64.min, I64.min + 1, 0]
    assert (x * 2).tolist() == [-2, 0, -2]


# --- exact matmul --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape_a,shape_b",
    [
        ((5, 7), (7, 4)),
        ((1, 1), (1, 1)),
        ((3, 5, 7), (7, 4)),  # batched left
        ((3, 5, 7), (3, 7, 4)),  # batched both
        ((2, 1, 5, 7), (3, 7, 4)),  # broadcast batch
        ((5, 7), (2, 7, 4)),  # batched right
        ((7,), (7, 4)),  # vector-matrix
        ((5, 7), (7,)),  # matrix-vector
        ((7,), (7,)),  # dot product
        ((4, 300), (300, 6)),
    ],
)
def test_limb_matmul_equals_int64_matmul(shape_a, shape_b):
    a = full_range(shape_a, seed=hash(shape_a) % 1000)
    b = full_range(shape_b, seed=hash(shape_b) % 1000 + 1)
    want = torch.matmul(a, b)
    got = ring.limb_matmul(a, b)
    assert got.dtype == torch.int64 and got.shape == want.shape
    assert torch.equal(got, want)
    assert torch.equal(ring.matmul(a, b), want)


def test_limb_matmul_worst_case_limbs_at_largest_k():
    # All limbs 0xFFFF (x = -1) maximise every partial sum; K = 2^19 - 1 is the largest K the bound allows.
    k = (1 << 19) - 1
    a = torch.full((1, k), -1, dtype=torch.int64)
    b = torch.full((k, 2), -1, dtype=torch.int64)
    b[:, 1] = I64.min + 12345
    assert torch.equal(ring.limb_matmul(a, b), torch.matmul(a, b))


def test_limb_matmul_k_bound_raises():
    k = 1 << 19
    with pytest.raises(RingError):
        ring.limb_matmul(torch.zeros(1, k, dtype=torch.int64), torch.zeros(k, 1, dtype=torch.int64))


def test_matmul_rejects_non_ring_tensors():
    with pytest.raises(RingError):
        ring.matmul(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.int64))
    with pytest.raises(RingError):
        ring.as_ring(torch.zeros(2, dtype=torch.int32))


def test_matmul_on_device(device):
    a, b = full_range((3, 4, 9), seed=5), full_range((9, 2), seed=6)
    got = ring.matmul(a.to(device), b.to(device)).cpu()
    assert torch.equal(got, torch.matmul(a, b))
