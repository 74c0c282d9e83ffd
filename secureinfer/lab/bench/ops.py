"""`secureinfer bench ops`: time the secure primitives on three in-process parties.

For each op and shape it reports the median wall time of the op itself (inputs are shared beforehand and outputs
opened afterwards, outside the timed part), the rounds on the critical path, the bytes each party sent, the
process's peak resident memory, and the largest error against float64 torch in units of 2^-f.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from secureinfer.mpc import runtime
from secureinfer.mpc.approx import exp, reciprocal
from secureinfer.mpc.approx.profile import ACCURATE
from secureinfer.mpc.nn import activations, norm, softmax
from secureinfer.mpc.party import EngineConfig, Party
from secureinfer.mpc.protocols import compare, mul, reveal, select
from secureinfer.mpc.shares import AShare

from . import write_json


@dataclass(frozen=True)
class OpCase:
    """One benchmarked op: a name, input shapes and ranges, the secure op and its float64 reference."""

    name: str
    shapes: tuple[tuple[int, ...], ...]
    secure: Callable[..., AShare]
    reference: Callable[..., torch.Tensor]
    scale: float = 4.0
    output_is_bit: bool = False
    domain: tuple[float, float] | None = None  # inputs uniform on [lo, hi] instead of N(0, scale^2)


def _cases() -> list[OpCase]:
    return [
        OpCase("matmul", ((128, 768), (768, 768)), mul.matmul_fixed, lambda a, b: a @ b, scale=1.0),
        OpCase("mul", ((128, 3072), (128, 3072)), mul.mul_fixed, lambda a, b: a * b),
        OpCase("lt", ((128, 3072), (128, 3072)), compare.lt, lambda a, b: (a < b).double(), output_is_bit=True),
        OpCase("relu", ((128, 3072),), select.relu, torch.relu),
        OpCase("max", ((12, 128, 128),), lambda p, x: select.max(p, x, dim=-1), lambda x: x.amax(dim=-1)),
        OpCase("exp", ((128, 3072),), lambda p, x: exp.exp_neg(p, x, ACCURATE), torch.exp, domain=(-14.0, 0.0)),
        OpCase("reciprocal", ((128,),), lambda p, x: reciprocal.reciprocal(p, x, ACCURATE, lo=0, hi=7),
               torch.reciprocal, domain=(1.0, 128.0)),
        OpCase("softmax", ((12, 128, 128),), lambda p, x: softmax.softmax(p, x, ACCURATE),
               lambda x: torch.softmax(x, dim=-1), domain=(-4.0, 4.0)),
        OpCase("gelu", ((128, 3072),), lambda p, x: activations.gelu(p, x, ACCURATE), torch.nn.functional.gelu,
               domain=(-6.0, 6.0)),
        OpCase("layernorm", ((128, 768),), lambda p, x: norm.layernorm(p, x, None, None, ACCURATE),
               lambda x: torch.nn.functional.layer_norm(x, x.shape[-1:], eps=1e-12), domain=(-4.0, 4.0)),
    ]


@dataclass
class OpResult:
    """The figures for one op, medians over the repeats."""

    op: str
    shapes: list[list[int]]
    device: str
    seconds: float
    rounds: int
    bytes_per_party: list[int]
    max_error: float
    error_unit: str
    peak_rss_mb: float
    repeats: int


def _program(case: OpCase, timings: list[float]) -> Callable[..., torch.Tensor]:
    def program(party: Party, *xs: AShare) -> torch.Tensor:
        start = time.perf_counter()
        out = case.secure(party, *xs)
        if party.device.type == "cuda":
            torch.cuda.synchronize(party.device)
        timings[party.index] = time.perf_counter() - start
        return reveal.reveal(party, out, tag="bench-output")

    return program


def _error(case: OpCase, config: EngineConfig, out: torch.Tensor, inputs: list[torch.Tensor]) -> float:
    fxp = config.fxp
    exact = [fxp.decode(fxp.encode(x)) for x in inputs]  # compare against the encoded inputs
    want = case.reference(*exact)
    if case.output_is_bit:
        return float(((out.cpu() & 1).double() != want).sum())  # count of wrong answers
    return float((fxp.decode(out.cpu()) - want).abs().max()) * fxp.scale


def _sample(case: OpCase, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    if case.domain is None:
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * case.scale
    lo, hi = case.domain
    return lo + (hi - lo) * torch.rand(*shape, generator=gen, dtype=torch.float64)


def run_case(case: OpCase, config: EngineConfig, repeats: int) -> OpResult:
    """Run one case `repeats` times; report medians (time) and the worst error."""
    gen = torch.Generator().manual_seed(0)  # public benchmark inputs, not secret randomness
    seconds, errors, result = [], [], None
    for _ in range(repeats):
        inputs = [_sample(case, s, gen) for s in case.shapes]
        timings = [0.0, 0.0, 0.0]
        result = runtime.simulate(_program(case, timings), inputs=inputs, config=config)
        seconds.append(max(timings))
        errors.append(_error(case, config, result.outputs[0], inputs))
    # The opening is outside the timed op but inside the counters: take its one round and element out.
    out_bytes = result.outputs[0].numel() * 8
    return OpResult(
        op=case.name,
        shapes=[list(s) for s in case.shapes],
        device=config.device,
        seconds=statistics.median(seconds),
        rounds=result.max_rounds - 1,
        bytes_per_party=[s.bytes_sent - out_bytes for s in result.stats],
        max_error=max(errors),
        error_unit="wrong answers" if case.output_is_bit else "ulp (2^-f)",
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        repeats=repeats,
    )


def _print_row(r: OpResult) -> None:
    shapes = "x".join("(" + ",".join(map(str, s)) + ")" for s in r.shapes)
    mb = "/".join(f"{b / 1e6:.2f}" for b in r.bytes_per_party)
    err = f"{r.max_error:.1f} {r.error_unit.split()[0]}"
    print(f"{r.op:<10} {shapes:<26} {r.seconds * 1e3:>9.1f} ms {r.rounds:>4} rounds  {mb:>20} MB  {err:>12}"
          f"  peak {r.peak_rss_mb:,.0f} MB", flush=True)


def main(args: argparse.Namespace) -> int:
    """Entry point of `secureinfer bench ops`."""
    if args.repeat < 1:
        print("secureinfer bench ops: --repeat must be at least 1", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"secureinfer bench ops: device {args.device!r} requested but torch sees no CUDA GPU", file=sys.stderr)
        return 2
    cases = _cases()
    if args.only:
        unknown = set(args.only) - {c.name for c in cases}
        if unknown:
            names = ", ".join(c.name for c in cases)
            print(f"secureinfer bench ops: unknown op(s) {sorted(unknown)}; choose from {names}", file=sys.stderr)
            return 2
        cases = [c for c in cases if c.name in args.only]
    config = EngineConfig(device=args.device)
    print(f"3 in-process parties, device {args.device}, f={config.fxp.frac_bits}, median of {args.repeat} "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)", flush=True)
    print(f"{'op':<10} {'shapes':<26} {'time':>12} {'rounds':>11}  {'sent per party P0/P1/P2':>20}     {'max error':>12}")
    results = []
    for case in cases:
        result = run_case(case, config, args.repeat)
        _print_row(result)
        results.append(result)
    if args.json:
        write_json(args.json, "ops", [asdict(r) for r in results], args.device)
    return 0
