"""The engine's own round and byte counts per secure op, measured once by running the op on small inputs.

Every op of a secure forward sends a number of bytes linear in the elements it works on and takes a number of
rounds that does not depend on the element count (the protocols batch elements into the same messages). So two
small runs per op on `runtime.simulate` (three in-process parties, no link) give its exact cost:
  bytes per party = per_element * n + per_row * rows + fixed      rounds = constant
These tables are what cost.py composes with a model's shapes. Nothing here opens a secret value: the inputs are
public test data shared by the simulation's owner, and only the communication counters are read.

    table = measure_table(OpKey("accurate", 18))
    table["gelu"].bytes(n=1024)        # bytes per party for a GeLU on 1024 elements
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from secureinfer.mpc import runtime
from secureinfer.mpc.approx import exp as approx_exp
from secureinfer.mpc.approx import poly
from secureinfer.mpc.approx import profile as profiles
from secureinfer.mpc.approx.reciprocal import reciprocal
from secureinfer.mpc.models import blocks
from secureinfer.mpc.models.llama import NORM_SHIFT_BITS
from secureinfer.mpc.nn import activations, softmax
from secureinfer.mpc.nn import attention as nn_attention
from secureinfer.mpc.party import EngineConfig, Party
from secureinfer.mpc.protocols import mul, reveal, trunc
from secureinfer.mpc.ring import DEFAULT_FRAC_BITS, RING_BITS, FixedPoint
from secureinfer.mpc.shares import AShare

# Per-op: (name, what it counts). Element counts are "n", row counts "rows".
OPS: dict[str, str] = {
    "trunc": "one truncation by f bits of a 3-out-of-3 product term, per element (secret-weight matmul outputs, "
             "attention scores, e @ v, secret LM head, pooling)",
    "trunc_pub": "truncation of a replicated product (public-weight matmul outputs), per element",
    "prod30": "fixed-point product truncated by 30 bits (attention's e @ v times 1/sum), per element",
    "gate_mul": "fixed-point product truncated by f bits (LLaMA's silu(g) * u), per element",
    "reshare": "one resharing (secret-table embedding lookup), per element",
    "rope": "rotary position embedding of q and k (one truncation), per element",
    "gelu": "GeLU (profile's even-split fit), per element",
    "silu": "SiLU, per element",
    "exp": "exp of a non-positive score (softmax), per kept element",
    "cmp": "one comparison and selection of a max tree (msb + mul_bit), per comparison; rounds per tree level",
    "recip": "softmax's per-row reciprocal, per row",
    "layernorm": "LayerNorm (centred), per element and per row",
    "rmsnorm": "RMSNorm with LLaMA's widened domain (shift_bits 7), per element and per row",
    "output": "output shares sent to the client, per element",
}
_RECIP_HI = 7  # softmax reciprocal window [1, 2^7) (rows of up to 127 keys); the bytes barely depend on it


@dataclass(frozen=True)
class OpKey:
    """What an op's cost depends on: the approximation profile and the fixed-point bits. (Public weights change
    which ops a forward runs, trunc_pub instead of trunc, no reshare, not what an op costs: measured equal for
    the norms with public and secret gains.)"""

    profile: str = "accurate"
    frac_bits: int = DEFAULT_FRAC_BITS


@dataclass(frozen=True)
class OpCost:
    """Rounds and bytes per party of one op call: bytes = per_element * n + per_row * rows + fixed."""

    rounds: float
    per_element: float
    per_row: float = 0.0
    fixed: float = 0.0

    def bytes(self, n: float, rows: float = 0.0) -> float:
        return self.per_element * n + self.per_row * rows + self.fixed


_SIZES = (96, 192)  # elements per op in the two measuring runs
_NORM_COLS = 16  # run 1: (6, 16); run 2: (6, 32) and, as "<norm>_rows", (12, 16)


def _sync(p: Party) -> None:
    """Two all-neighbour exchanges: afterwards every party's round clock is equal (so op rounds start level)."""
    for _ in range(2):
        p.send(p.next, b"s", "sync")
        p.send(p.prev, b"s", "sync")
        p.recv(p.prev, "sync")
        p.recv(p.next, "sync")


def _ops(key: OpKey, config: EngineConfig, n: int) -> dict[str, Callable[[Party, AShare], object]]:
    """Each op on a flat share of n elements (reshaped as the op needs); run 2 adds the norms' row variants."""
    prof = profiles.get(key.profile)
    f = key.frac_bits
    cmp_bits = prof.compare_bits or RING_BITS
    m, d = n // 16, 8  # rope: q and k (1, 1, m, 8) each
    cos, sin = torch.ones(m, d, dtype=torch.float64), torch.zeros(m, d, dtype=torch.float64)

    def norm(center: bool, rows: int, cols: int) -> Callable[[Party, AShare], object]:
        gamma = config.fxp.encode(torch.ones(cols, dtype=torch.float64))  # public gains: the same cost as secret
        beta = config.fxp.encode(torch.zeros(cols, dtype=torch.float64)) if center else None
        shift = 0 if center else NORM_SHIFT_BITS
        return lambda p, x: blocks.normalize(p, x[: rows * cols].reshape(rows, cols), gamma, beta, prof,
                                             eps=1e-5, center=center, shift_bits=shift)

    cols = _NORM_COLS * n // _SIZES[0]
    ops: dict[str, Callable[[Party, AShare], object]] = {
        "trunc": lambda p, x: poly.products(p, [(x, x)], f),
        "trunc_pub": lambda p, x: trunc.trunc_replicated(p, x, f),
        "prod30": lambda p, x: poly.products(p, [(x, x)], 30),
        "reshare": lambda p, x: mul.reshare(p, x.lo + p.zero_share(x.shape)),
        "rope": lambda p, x: nn_attention.rotary(p, [x[: m * d].reshape(1, 1, m, d),
                                                     x[m * d: 2 * m * d].reshape(1, 1, m, d)], cos, sin),
        "gelu": lambda p, x: activations.even_split(p, x, prof.gelu, prof),
        "silu": lambda p, x: activations.even_split(p, x, prof.silu, prof),
        "exp": lambda p, x: approx_exp.exp_neg(p, x.add_public(-p.fxp.encode(2.0).item()), prof),
        "cmp": lambda p, x: softmax.row_max(p, x.reshape(n // 2, 2), cmp_bits),
        "recip": lambda p, x: reciprocal(p, x.add_public(p.fxp.encode(3.0).item()).reshape(-1, 1), prof, lo=0,
                                         hi=_RECIP_HI, out_bits=softmax.RECIP_OUT_BITS),
        "layernorm": norm(True, 6, cols),
        "rmsnorm": norm(False, 6, cols),
    }
    if n != _SIZES[0]:
        ops["layernorm_rows"] = norm(True, 12, _NORM_COLS)
        ops["rmsnorm_rows"] = norm(False, 12, _NORM_COLS)
    ops["output"] = lambda p, x: reveal.reveal_to_owner(p, x, runtime.CLIENT)
    return ops


def _run(key: OpKey, config: EngineConfig, n: int) -> dict[str, tuple[float, float]]:
    """One simulation running every op on n elements: op -> (rounds, mean bytes sent per party)."""
    ops = _ops(key, config, n)

    def program(p: Party, x: AShare) -> dict[str, tuple[int, int]]:
        out = {}
        for name, fn in ops.items():
            _sync(p)
            before = p.channel.stats.snapshot()
            fn(p, x)
            after = p.channel.stats.since(before)
            out[name] = (after.rounds, after.bytes_sent)
        return out

    g = torch.Generator().manual_seed(n)
    x = (torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * 6
    sim = runtime.simulate(program, inputs=[x], config=config, client=lambda ch: reveal.reveal_at_owner(ch))
    return {name: (float(max(o[name][0] for o in sim.outputs)), sum(o[name][1] for o in sim.outputs) / 3.0)
            for name in ops}


def measure_table(key: OpKey, device: str = "cpu") -> dict[str, OpCost]:
    """Every op's cost under `key`, from two runs on the in-process runtime."""
    config = EngineConfig(fxp=FixedPoint(key.frac_bits), device=device)
    n1, n2 = _SIZES
    small, large = _run(key, config, n1), _run(key, config, n2)
    units = {"cmp": 0.5, "rope": 2 * (n1 // 16) * 8 / n1, "recip": 1.0}  # counted things per input element
    table: dict[str, OpCost] = {}
    for name in OPS:
        if name in ("layernorm", "rmsnorm", "gate_mul"):
            continue
        u = units.get(name, 1.0)
        (_, b1), (r2, b2) = small[name], large[name]
        per = (b2 - b1) / ((n2 - n1) * u)
        table[name] = OpCost(rounds=r2, per_element=per, fixed=max(0.0, b1 - per * n1 * u))
    table["gate_mul"] = table["trunc"]
    for name in ("layernorm", "rmsnorm"):
        rows, c1 = 6, _NORM_COLS
        b11, (r, b12), (_, b21) = small[name][1], large[name], large[f"{name}_rows"]
        per_element = (b12 - b11) / (rows * c1)  # (6, 32) - (6, 16)
        per_row = (b21 - b11) / rows - per_element * c1  # (12, 16) - (6, 16)
        table[name] = OpCost(rounds=r, per_element=per_element, per_row=per_row,
                             fixed=max(0.0, b11 - per_element * rows * c1 - per_row * rows))
    return table


def levels(t: int) -> int:
    """Depth of a max tree over t elements (rounds of `cmp` per row max)."""
    return max(0, math.ceil(math.log2(t))) if t > 1 else 0
