"""The op accuracy table: every secure op against float64 torch on realistic input ranges, with its cost.

`accuracy_table(profile)` runs each op once on three simulated parties and returns one `AccuracyRow` per op:
max and mean absolute error (also in ulps of 2^-f), the tolerance it is held to, rounds and bytes sent per party.
Inputs are public test data from a seeded torch generator (they are not secrets; secret randomness in the protocols
comes from the parties' PRGs), which is why this lives outside the engine (secureinfer.mpc). `format_table` prints
the rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from secureinfer.mpc import runtime
from secureinfer.mpc.approx import exp as approx_exp
from secureinfer.mpc.approx.profile import ApproxProfile
from secureinfer.mpc.approx.reciprocal import reciprocal
from secureinfer.mpc.approx.rsqrt import rsqrt
from secureinfer.mpc.nn import activations, attention, linear, norm, softmax
from secureinfer.mpc.party import EngineConfig, Party
from secureinfer.mpc.protocols import reveal
from secureinfer.mpc.shares import AShare


@dataclass(frozen=True)
class AccuracyRow:
    """One op's accuracy and cost on one input set."""

    op: str
    profile: str
    domain: str
    shape: tuple[int, ...]
    metric: str  # "abs" or "rel" (relative to |reference|, for reciprocal and rsqrt)
    max_error: float
    mean_error: float
    max_error_ulp: float
    tolerance: float
    rounds: int
    bytes_per_party: int

    @property
    def ok(self) -> bool:
        return self.max_error <= self.tolerance


@dataclass(frozen=True)
class _Case:
    op: str
    domain: str
    inputs: Callable[[torch.Generator, bool], list[torch.Tensor]]
    secure: Callable[..., AShare]
    reference: Callable[..., torch.Tensor]
    tolerance: dict[str, float]
    relative: bool = False


def _uniform(gen: torch.Generator, shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
    return torch.rand(*shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo


def _with_edges(x: torch.Tensor, edges: list[float]) -> torch.Tensor:
    """x with its first elements replaced by the given edge values (zeros, limits, breakpoints)."""
    flat = x.reshape(-1).clone()
    flat[: len(edges)] = torch.tensor(edges, dtype=torch.float64)
    return flat.reshape(x.shape)


def _ln_input(gen: torch.Generator, rows: int, c: int) -> torch.Tensor:
    """LayerNorm inputs with large variance: per-row offsets and scales, plus a few outlier features."""
    x = torch.randn(rows, c, generator=gen, dtype=torch.float64) * _uniform(gen, (rows, 1), 0.5, 60.0)
    x = x + _uniform(gen, (rows, 1), -20.0, 20.0)
    x[:, :4] *= 5.0
    return x


def _attention_case(big: bool) -> _Case:
    b, t, c, h, hkv = (1, 128, 384, 12, 12) if big else (1, 16, 64, 4, 2)
    d = c // h
    cfg = attention.AttentionConfig(n_heads=h, n_kv_heads=hkv, causal=True)

    def inputs(gen: torch.Generator, _big: bool) -> list[torch.Tensor]:
        x = torch.randn(b, t, c, generator=gen, dtype=torch.float64)
        ws = [torch.randn(c, n, generator=gen, dtype=torch.float64) / math.sqrt(c) for n in (c, hkv * d, hkv * d, c)]
        return [x, *ws]

    def secure(p: Party, x: AShare, wq: AShare, wk: AShare, wv: AShare, wo: AShare, profile: ApproxProfile
               ) -> AShare:
        w = attention.AttentionWeights(wq, wk, wv, wo)
        return attention.multi_head_attention(p, x, w, cfg, profile)[0]

    def reference(x, wq, wk, wv, wo):
        q = (x @ wq).reshape(b, t, h, d).transpose(1, 2)
        k = (x @ wk).reshape(b, t, hkv, d).transpose(1, 2).repeat_interleave(h // hkv, 1)
        v = (x @ wv).reshape(b, t, hkv, d).transpose(1, 2).repeat_interleave(h // hkv, 1)
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return o.transpose(1, 2).reshape(b, t, c) @ wo

    return _Case("attention", f"causal, {h} heads / {hkv} kv heads", inputs, secure, reference,
                 {"accurate": 1e-4, "fast": 6e-3})


def _cases(big: bool) -> list[_Case]:
    n_act = (128, 1536) if big else (16, 256)
    sm = (12, 128, 128) if big else (4, 32, 32)
    ln = (128, 384) if big else (16, 384)

    def scores(gen: torch.Generator, _big: bool) -> list[torch.Tensor]:
        return [_uniform(gen, sm, -50.0, 10.0)]

    ln_ref = lambda x, g, b: torch.nn.functional.layer_norm(x, (x.shape[-1],), g, b, eps=1e-12)  # noqa: E731
    rms_ref = lambda x, g: x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-6) * g  # noqa: E731
    return [
        _Case("exp", "[-50, 0]", lambda g, _: [_with_edges(_uniform(g, n_act, -50.0, 0.0), [0.0, -13.99, -14.01])],
              lambda p, x, prof: approx_exp.exp_neg(p, x, prof), torch.exp,
              {"accurate": 1.1e-5, "fast": 2.3e-4, "lean": 7.5e-4}),  # lean: paired squarings (approx.exp)
        _Case("reciprocal", "[1, 128]", lambda g, _: [_with_edges(_uniform(g, (n_act[0], 8), 1.0, 128.0),
                                                                  [1.0, 127.9, 2.0, 64.0])],
              lambda p, x, prof: reciprocal(p, x, prof, lo=0, hi=8, out_bits=30), torch.reciprocal,
              {"accurate": 1e-6, "fast": 4e-5}, relative=True),
        _Case("rsqrt", "[1e-3, 3e4]", lambda g, _: [torch.exp(_uniform(g, (n_act[0], 8), math.log(1e-3),
                                                                         math.log(3e4)))],
              lambda p, x, prof: rsqrt(p, x, prof, lo=-10, hi=16, out_bits=30), torch.rsqrt,
              {"accurate": 5e-6, "fast": 1.5e-5}, relative=True),
        _Case("gelu", "[-10, 10]", lambda g, _: [_with_edges(_uniform(g, n_act, -10.0, 10.0),
                                                             [0.0, -4.0, 4.0, -3.5, 3.5, 10.0, -10.0])],
              lambda p, x, prof: activations.gelu(p, x, prof), torch.nn.functional.gelu,
              {"accurate": 1.4e-4, "fast": 5e-3, "lean": 4e-4}),
        _Case("silu", "[-12, 12]", lambda g, _: [_with_edges(_uniform(g, n_act, -12.0, 12.0),
                                                             [0.0, -8.0, 8.0, -10.0, 10.0])],
              lambda p, x, prof: activations.silu(p, x, prof), torch.nn.functional.silu,
              {"accurate": 6.2e-4, "fast": 9e-3}),
        _Case("softmax", "scores [-50, 10], causal", scores,
              lambda p, x, prof: softmax.softmax(p, x, prof, causal=True),
              lambda x: torch.softmax(x.masked_fill(~softmax.causal_mask(x.shape[-2], x.shape[-1]), -math.inf), -1),
              {"accurate": 1e-4, "fast": 4e-3}),  # exp errors add up in the row sum: grows with T
        _Case("layernorm", "std 0.5..300, mean +-20", lambda g, _: [_ln_input(g, *ln), torch.randn(ln[1], generator=g,
              dtype=torch.float64), torch.randn(ln[1], generator=g, dtype=torch.float64)],
              lambda p, x, g_, b_, prof: norm.layernorm(p, x, g_, b_, prof), ln_ref,
              {"accurate": 5e-5, "fast": 3e-4}),
        _Case("rmsnorm", "std 0.5..300", lambda g, _: [_ln_input(g, ln[0], 576), torch.randn(576, generator=g,
              dtype=torch.float64)],
              lambda p, x, g_, prof: norm.rmsnorm(p, x, g_, prof), rms_ref, {"accurate": 5e-5, "fast": 3e-4}),
        _Case("linear", "x ~ N(0,1), W ~ N(0, 1/C)", lambda g, _: [torch.randn(ln[0], ln[1], generator=g,
              dtype=torch.float64), torch.randn(ln[1], ln[1], generator=g, dtype=torch.float64) / math.sqrt(ln[1])],
              lambda p, x, w, prof: linear.linear(p, x, w), lambda x, w: x @ w, {"accurate": 2e-5, "fast": 2e-5}),
        _attention_case(big),
    ]


def _run(case: _Case, profile: ApproxProfile, config: EngineConfig, gen: torch.Generator, big: bool) -> AccuracyRow:
    inputs = case.inputs(gen, big)
    fxp = config.fxp

    def program(party: Party, *xs: AShare) -> tuple[torch.Tensor, object]:
        before = party.channel.stats.snapshot()
        out = case.secure(party, *xs, profile)
        stats = party.channel.stats.since(before)
        return reveal.reveal(party, out, tag="accuracy-output"), stats

    sim = runtime.simulate(program, inputs=inputs, config=config)
    got = fxp.decode(sim.outputs[0][0].cpu())
    want = case.reference(*[fxp.decode(fxp.encode(x)) for x in inputs])  # against the encoded inputs
    if case.relative:
        got = got * 2.0 ** (fxp.frac_bits - 30)  # these cases ask for 30 fractional bits
    abs_err = (got - want).abs()
    err = abs_err / want.abs() if case.relative else abs_err
    stats = [o[1] for o in sim.outputs]
    tol = case.tolerance.get(profile.name, max(case.tolerance.values()))
    return AccuracyRow(case.op, profile.name, case.domain, tuple(inputs[0].shape), "rel" if case.relative else "abs",
                       float(err.max()), float(err.mean()), float(abs_err.max()) * fxp.scale, tol,
                       max(s.rounds for s in stats), max(s.bytes_sent for s in stats))


def accuracy_table(profile: ApproxProfile, config: EngineConfig | None = None, *, realistic: bool = False,
                   ops: tuple[str, ...] | None = None, seed: int = 0) -> list[AccuracyRow]:
    """Run every op (or those named in `ops`) under `profile`; `realistic` uses model-sized shapes (slow)."""
    config = config or EngineConfig()
    gen = torch.Generator().manual_seed(seed)
    return [_run(c, profile, config, gen, realistic) for c in _cases(realistic) if ops is None or c.op in ops]


def format_table(rows: list[AccuracyRow]) -> str:
    """The rows as an aligned text table."""
    head = (f"{'op':<11}{'profile':<9}{'shape':<16}{'domain':<30}{'err':>4}{'max err':>10}{'abs ulp':>9}"
            f"{'mean err':>10}{'tol':>9}{'rounds':>7}{'MB/party':>10}  ok")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.op:<11}{r.profile:<9}{str(r.shape):<16}{r.domain:<30}{r.metric:>4}{r.max_error:>10.2e}"
                     f"{r.max_error_ulp:>9.0f}{r.mean_error:>10.2e}{r.tolerance:>9.1e}{r.rounds:>7}"
                     f"{r.bytes_per_party / 1e6:>10.2f}  {'yes' if r.ok else 'NO'}")
    return "\n".join(lines)
