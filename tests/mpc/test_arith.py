"""Arithmetic on replicated shares against plaintext: sharing, reveal, linear ops, mul/matmul and fixed point.

Ring-exact ops are compared bit-for-bit with int64 torch (which wraps mod 2^64 like the ring). Fixed-point products
are checked EXACTLY against the truncation guarantee (output = floor(P / 2^f) or that plus one, P the exact ring
product of the encoded inputs) and their error against float64 torch is reported in ulps (1 ulp = 2^-f).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from secureinfer.mpc import runtime
from secureinfer.mpc.protocols import mul, reveal, sharing
from secureinfer.mpc.shares import AShare, BShare

I64 = torch.iinfo(torch.int64)
EDGES = [0, 1, -1, I64.max, I64.min, 1 << 62, -(1 << 62), 12345]
ERRORS: dict[str, float] = {}  # worst error seen per op, in ulps (printed with -s)


def ring_data(shape, seed: int) -> torch.Tensor:
    """Full-range int64 test data with edge values planted (test data, not secret randomness)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(I64.min, I64.max, shape, generator=g, dtype=torch.int64)
    flat = x.reshape(-1)
    n = min(len(EDGES), flat.numel())
    flat[:n] = torch.tensor(EDGES[:n])
    return x


def real_data(shape, limit: float, seed: int) -> torch.Tensor:
    """float64 values in [-limit, limit] with zeros, tiny values and +-limit planted."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * limit
    flat = x.reshape(-1)
    planted = torch.tensor([0.0, limit, -limit, 2.0**-18, -(2.0**-18), -0.5 * limit], dtype=torch.float64)
    n = min(len(planted), flat.numel())
    flat[:n] = planted[:n]
    return x


def measured(p, fn, *args):
    """Run fn(p, *args) and return (result, the party's communication during it)."""
    before = p.channel.stats.snapshot()
    out = fn(p, *args)
    return out, p.channel.stats.since(before)


def note(op: str, err_ulps: float) -> None:
    ERRORS[op] = max(ERRORS.get(op, 0.0), err_ulps)
    print(f"{op}: max error {ERRORS[op]:.3f} ulp")


def check_trunc_exact(out_ring: torch.Tensor, exact_product: torch.Tensor, f: int, op: str) -> None:
    """The truncation guarantee: out - floor(P / 2^f) is 0 or 1 for every element."""
    diff = (out_ring.cpu() - (exact_product >> f)).unique().tolist()
    assert set(diff) <= {0, 1}, f"{op}: out - floor(P/2^f) took values {diff}"


# --- sharing and reveal ------------------------------------------------------------------------------------------


def test_share_and_reveal_ring_exact(config):
    x = ring_data((5, 7), seed=1)

    def program(p, xs):
        return measured(p, reveal.reveal, xs)

    sim = runtime.simulate(program, inputs=[x], config=config)
    for i in range(3):
        out, stats = sim.outputs[i]
        assert torch.equal(out.cpu(), x)
        assert stats.rounds == 1 and stats.bytes_sent == 8 * x.numel()


def test_share_and_reveal_fixed_point(config):
    fxp = config.fxp
    x = real_data((64,), limit=2.0**43, seed=2)
    sim = runtime.simulate(lambda p, xs: reveal.reveal(p, xs), inputs=[x], config=config)
    assert torch.equal(fxp.decode(sim.outputs[1].cpu()), fxp.decode(fxp.encode(x)))
    assert sim.max_rounds == 1


@pytest.mark.parametrize("to", [0, 1, 2])
def test_reveal_to_one_party(config, to):
    x = ring_data((3, 4), seed=3)
    sim = runtime.simulate(lambda p, xs: reveal.reveal_to(p, xs, to), inputs=[x], config=config)
    for i in range(3):
        if i == to:
            assert torch.equal(sim.outputs[i].cpu(), x)
        else:
            assert sim.outputs[i] is None
        expected_bytes = 8 * x.numel() if i == (to - 1) % 3 else 0
        assert sim.stats[i].bytes_sent == expected_bytes
    assert sim.max_rounds == 1


def test_reveal_to_owner_arith_and_bool(config):
    x = ring_data((4, 2), seed=4)

    def program(p, xs):
        reveal.reveal_to_owner(p, xs, runtime.OWNER, tag="out-a")
        xb = BShare(xs.lo, xs.hi, xs.party)  # the boolean sharing with the same components
        reveal.reveal_to_owner(p, xb, runtime.OWNER, tag="out-b")
        return reveal.reveal(p, xb)

    def owner(channel):
        return (reveal.reveal_at_owner(channel, tag="out-a"), reveal.reveal_at_owner(channel, BShare, tag="out-b"))

    sim = runtime.simulate(program, inputs=[x], owner=owner, config=config)
    arith, boolean = sim.owner_output
    assert torch.equal(arith.cpu(), x)
    assert torch.equal(boolean.cpu(), sim.outputs[0].cpu())


def test_public_sharing(config):
    c = ring_data((6,), seed=5)
    sim = runtime.simulate(lambda p: reveal.reveal(p, sharing.public(p, c.to(p.device))), config=config)
    assert torch.equal(sim.outputs[2].cpu(), c)


# --- local (linear) operations ------------------------------------------------------------------------------------


def test_linear_ops_exact_and_free(config):
    x, y = ring_data((4, 6), seed=6), ring_data((4, 6), seed=7)
    c = ring_data((6,), seed=8)
    w = ring_data((6, 3), seed=9)
    w_left = ring_data((5, 4), seed=10)
    dev = config.torch_device

    def program(p, xs, ys):
        before = p.channel.stats.snapshot()
        ops = {
            "add": xs + ys,
            "sub": xs - ys,
            "neg": -xs,
            "add_public": xs.add_public(c.to(dev)),
            "add_public_scalar": xs.add_public(-3),
            "mul_public": xs.mul_public(c.to(dev)),
            "matmul_public": xs.matmul_public(w.to(dev)),
            "matmul_public_left": xs.matmul_public(w_left.to(dev), left=True),
            "sum0": xs.sum(0),
            "sum1_keep": xs.sum(1, keepdim=True),
            "lshift": xs.lshift(5),
            "transpose": xs.transpose(0, 1),
        }
        spent = p.channel.stats.since(before)
        return {k: reveal.reveal(p, v, tag=k) for k, v in ops.items()}, spent

    sim = runtime.simulate(program, inputs=[x, y], config=config)
    want = {
        "add": x + y,
        "sub": x - y,
        "neg": -x,
        "add_public": x + c,
        "add_public_scalar": x - 3,
        "mul_public": x * c,
        "matmul_public": x @ w,
        "matmul_public_left": w_left @ x,
        "sum0": x.sum(0),
        "sum1_keep": x.sum(1, keepdim=True),
        "lshift": x << 5,
        "transpose": x.T,
    }
    for i in range(3):
        opened, spent = sim.outputs[i]
        for k, v in want.items():
            assert torch.equal(opened[k].cpu(), v), f"P{i} {k}"
        assert (spent.rounds, spent.messages_sent, spent.bytes_sent) == (0, 0, 0), "local ops must not communicate"
    # Only the reveals communicated: one ring element per opened element per party, one round per reveal.
    assert all(s.bytes_sent == 8 * sum(v.numel() for v in want.values()) for s in sim.stats)
    assert sim.max_rounds == len(want)


# --- secret x secret products in the ring -------------------------------------------------------------------------


@settings(max_examples=8, deadline=None)
@given(st.lists(st.integers(min_value=I64.min, max_value=I64.max), min_size=1, max_size=12))
def test_mul_ring_exact_hypothesis(values):
    x = torch.tensor(values, dtype=torch.int64)
    y = torch.flip(x, [0]) ^ 0x5555
    sim = runtime.simulate(lambda p, a, b: reveal.reveal(p, mul.mul(p, a, b)), inputs=[x, y])
    assert torch.equal(sim.outputs[0], x * y)


def test_mul_ring_exact_rounds_bytes(config):
    x, y = ring_data((8, 9), seed=11), ring_data((8, 9), seed=12)

    def program(p, a, b):
        z, stats = measured(p, mul.mul, a, b)
        return reveal.reveal(p, z), stats

    sim = runtime.simulate(program, inputs=[x, y], config=config)
    for i in range(3):
        out, stats = sim.outputs[i]
        assert torch.equal(out.cpu(), x * y)
        assert stats.rounds == 1, f"P{i} mul took {stats.rounds} rounds"
        assert stats.bytes_sent == 8 * x.numel(), f"P{i} sent {stats.bytes_sent} bytes"


@pytest.mark.parametrize(
    "shape_x,shape_y",
    [((5, 7), (7, 3)), ((2, 5, 7), (7, 3)), ((2, 5, 7), (2, 7, 3)), ((3, 1, 4, 6), (2, 6, 5)), ((6,), (6, 2))],
)
def test_matmul_ring_exact_batched(config, shape_x, shape_y):
    x, y = ring_data(shape_x, seed=13), ring_data(shape_y, seed=14)
    want = torch.matmul(x, y)

    def program(p, a, b):
        z, stats = measured(p, mul.matmul, a, b)
        return reveal.reveal(p, z), stats

    sim = runtime.simulate(program, inputs=[x, y], config=config)
    for i in range(3):
        out, stats = sim.outputs[i]
        assert torch.equal(out.cpu(), want)
        assert stats.rounds == 1 and stats.bytes_sent == 8 * want.numel()


# --- fixed point ----------------------------------------------------------------------------------------------------


def fixed_product_case(config, x, y, program, exact_ring, exact_real, op):
    """Run a fixed-point product; check the ring guarantee exactly and the float error loosely; return stats."""
    fxp = config.fxp
    sim = runtime.simulate(program, inputs=[x, y], config=config)
    out, stats = sim.outputs[0]
    check_trunc_exact(out, exact_ring, fxp.frac_bits, op)
    ulp = 1.0 / fxp.scale
    err = (fxp.decode(out.cpu()) - exact_real).abs().max().item() / ulp
    note(op, err)
    return sim, err


@settings(max_examples=10, deadline=None)
@given(
    st.lists(st.floats(min_value=-8191.0, max_value=8191.0, allow_nan=False), min_size=1, max_size=16),
    st.floats(min_value=-8191.0, max_value=8191.0, allow_nan=False),
)
def test_mul_fixed_hypothesis(values, scale):
    from secureinfer.mpc.party import EngineConfig

    config = EngineConfig()
    x = torch.tensor(values, dtype=torch.float64)
    y = torch.full_like(x, scale)
    y[0] = 8191.0 if values[0] >= 0 else -8191.0  # a product near the 2^26 limit
    xe, ye = config.fxp.encode(x), config.fxp.encode(y)

    def program(p, a, b):
        return measured(p, lambda q, u, v: reveal.reveal(q, mul.mul_fixed(q, u, v)), a, b)

    op = "mul_fixed vs raw floats (input rounding included)"
    _, err = fixed_product_case(config, x, y, program, xe * ye, x * y, op)
    # Against the raw floats the error also includes input rounding: <= 1 + (|x| + |y|) / 2 ulps.
    bound = 1.0 + (x.abs() + y.abs()).max().item() / 2 + 1e-6
    assert err <= bound


def test_mul_fixed_rounds_and_error(config):
    fxp = config.fxp
    x, y = real_data((32, 16), 8191.0, seed=15), real_data((32, 16), 8191.0, seed=16)
    xe, ye = fxp.encode(x), fxp.encode(y)

    def program(p, a, b):
        z, stats = measured(p, mul.mul_fixed, a, b)
        return reveal.reveal(p, z), stats

    sim, _ = fixed_product_case(config, x, y, program, xe * ye, fxp.decode(xe) * fxp.decode(ye), "mul_fixed")
    assert ERRORS["mul_fixed"] <= 1.0
    rounds = [sim.outputs[i][1].rounds for i in range(3)]
    assert max(rounds) == 2, f"mul_fixed rounds per party {rounds}"


def test_square_fixed(config):
    fxp = config.fxp
    x = real_data((257,), 8191.0, seed=17)
    xe = fxp.encode(x)

    def program(p, a, _):
        z, stats = measured(p, mul.square_fixed, a)
        return reveal.reveal(p, z), stats

    sim, _ = fixed_product_case(config, x, x, program, xe * xe, fxp.decode(xe) ** 2, "square_fixed")
    assert ERRORS["square_fixed"] <= 1.0
    assert max(sim.outputs[i][1].rounds for i in range(3)) == 2


@pytest.mark.parametrize("shape_x,shape_y", [((8, 16), (16, 4)), ((3, 8, 16), (16, 4)), ((3, 8, 16), (3, 16, 4))])
def test_matmul_fixed(config, shape_x, shape_y):
    fxp = config.fxp
    x, y = real_data(shape_x, 64.0, seed=18), real_data(shape_y, 64.0, seed=19)
    # One output near the limit: a row and a column of +-2000 over K = 16 sum to 6.4e7 < 2^26.
    x[..., 0, :] = 2000.0
    y[..., :, 0] = 2000.0
    xe, ye = fxp.encode(x), fxp.encode(y)

    def program(p, a, b):
        z, stats = measured(p, mul.matmul_fixed, a, b)
        return reveal.reveal(p, z), stats

    exact_real = torch.matmul(fxp.decode(xe), fxp.decode(ye))
    sim, _ = fixed_product_case(config, x, y, program, torch.matmul(xe, ye), exact_real, "matmul_fixed")
    assert ERRORS["matmul_fixed"] <= 1.0
    assert max(sim.outputs[i][1].rounds for i in range(3)) == 2


def test_mul_public_fixed_and_matmul_public_fixed(config):
    fxp = config.fxp
    x = real_data((6, 5), 2.0**20, seed=20)
    c = torch.tensor([0.001, -0.5, 3.0, 0.0, -63.9], dtype=torch.float64)  # |x c| < 2^26
    w = real_data((5, 3), 2.0, seed=21)
    xe, ce, we = fxp.encode(x), fxp.encode(c), fxp.encode(w)

    def program(p, a):
        z1, s1 = measured(p, mul.mul_public_fixed, a, c)
        z2 = mul.mul_public_fixed(p, a, 0.25)
        z3 = mul.matmul_public_fixed(p, a, w)
        return reveal.reveal(p, z1), reveal.reveal(p, z2), reveal.reveal(p, z3), s1

    sim = runtime.simulate(program, inputs=[x], config=config)
    z1, z2, z3, s1 = sim.outputs[0]
    f = fxp.frac_bits
    check_trunc_exact(z1, xe * ce, f, "mul_public_fixed")
    check_trunc_exact(z2, xe * fxp.encode(0.25), f, "mul_public_fixed(scalar)")
    check_trunc_exact(z3, xe @ we, f, "matmul_public_fixed")
    ulp = 1.0 / fxp.scale
    note("mul_public_fixed", (fxp.decode(z1.cpu()) - fxp.decode(xe) * fxp.decode(ce)).abs().max().item() / ulp)
    note("matmul_public_fixed", (fxp.decode(z3.cpu()) - fxp.decode(xe) @ fxp.decode(we)).abs().max().item() / ulp)
    assert max(ERRORS["mul_public_fixed"], ERRORS["matmul_public_fixed"]) <= 1.0
    assert max(sim.outputs[i][3].rounds for i in range(3)) == 2


@pytest.mark.parametrize(
    "dim,keepdim,extra_bits", [(0, False, 0), (1, True, 0), (2, False, 0), (-1, True, 3), (2, True, 6)]
)
def test_sum_and_mean(config, dim, keepdim, extra_bits):
    fxp = config.fxp
    x = real_data((4, 8, 6), 1000.0, seed=22)
    xe = fxp.encode(x)

    def program(p, a):
        s = reveal.reveal(p, a.sum(dim, keepdim))
        m, stats = measured(p, mul.mean, a, dim, keepdim, extra_bits)
        return s, reveal.reveal(p, m), stats

    sim = runtime.simulate(program, inputs=[x], config=config)
    s, m, stats = sim.outputs[1]
    sum_e = xe.sum(dim, keepdim=keepdim)
    assert torch.equal(s.cpu(), sum_e)  # the sum is exact in the ring
    n = x.shape[dim]
    bits = fxp.frac_bits + extra_bits
    check_trunc_exact(m, sum_e * round(2**bits / n), bits, "mean")
    exact = fxp.decode(xe).mean(dim, keepdim=keepdim)
    err = (fxp.decode(m.cpu()) - exact).abs()
    ulp = 1.0 / fxp.scale
    bound = ulp + fxp.decode(sum_e).abs() * ulp / 2**(extra_bits + 1)  # the documented bound (1/n rounded)
    if n & (n - 1) == 0:
        bound = torch.full_like(bound, ulp)  # 1/n is exact for powers of two
    assert bool((err <= bound + 1e-12).all())
    note(f"mean(n={n}, extra_bits={extra_bits})", err.max().item() / ulp)
    assert max(sim.outputs[i][2].rounds for i in range(3)) == 2


def test_mean_rejects_negative_extra_bits(config):
    with pytest.raises(ValueError):
        runtime.simulate(lambda p, a: mul.mean(p, a, 0, extra_bits=-1), inputs=[torch.ones(3)], config=config)


def test_shares_stay_consistent_across_chained_products(config):
    """A chain of products keeps all three parties' shares replicated (P_i's hi == P_{i+1}'s lo)."""
    x = real_data((50,), 4.0, seed=23)

    def program(p, a):
        z = mul.mul_fixed(p, a, a)
        z = mul.mul_fixed(p, z, a)
        z = mul.matmul_fixed(p, z.reshape(5, 10), a.reshape(10, 5))
        return z

    sim = runtime.simulate(program, inputs=[x], config=config)
    shares: list[AShare] = sim.outputs
    for i in range(3):
        assert torch.equal(shares[i].hi, shares[(i + 1) % 3].lo), f"P{i}.hi != P{(i + 1) % 3}.lo"
    value = config.fxp.decode((shares[0].lo + shares[1].lo + shares[2].lo).cpu())
    xe = config.fxp.decode(config.fxp.encode(x))
    want = ((xe**3).reshape(5, 10)) @ xe.reshape(10, 5)
    err = (value - want).abs().max().item() * config.fxp.scale
    note("chain x^3 @ x", err)
    assert err < 64 * 3  # a few ulps of propagated truncation error, scaled by |x| <= 4 and K = 10


def test_scalar_empty_and_broadcast_shapes(config):
    fxp = config.fxp
    col = torch.tensor([[1.0], [-2.0], [3.5]], dtype=torch.float64)
    row = torch.tensor([[1.0, 0.0, -4.0, 2.25]], dtype=torch.float64)

    def program(p, s, t, e, c, r):
        return (
            reveal.reveal(p, mul.mul_fixed(p, s, t)),
            reveal.reveal(p, mul.mul_fixed(p, e, e)),
            reveal.reveal(p, mul.mul_fixed(p, c, r)),  # (3, 1) * (1, 4) -> (3, 4)
        )

    inputs = [torch.tensor(1.5), torch.tensor(-2.0), torch.zeros(0, 3), col, row]
    scalar, empty, outer = runtime.simulate(program, inputs=inputs, config=config).outputs[0]
    assert scalar.shape == () and fxp.decode(scalar.cpu()).item() == -3.0
    assert empty.shape == (0, 3)
    assert torch.equal(fxp.decode(outer.cpu()), col * row)
