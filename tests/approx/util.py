"""Helpers for the approximation and secure-op tests: run an op on three parties, open it, and measure its cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from secureinfer.mpc import runtime
from secureinfer.mpc.party import EngineConfig, Party
from secureinfer.mpc.protocols import reveal


@dataclass
class Result:
    """The opened output (float64, or raw ring when `raw`), and the op's own cost (the final opening excluded)."""

    value: torch.Tensor
    rounds: int
    bytes_per_party: list[int]

    @property
    def max_bytes(self) -> int:
        return max(self.bytes_per_party)


def run(config: EngineConfig, op: Callable[..., object], *inputs: torch.Tensor, raw: bool = False,
        out_bits: int | None = None) -> Result:
    """Run op(party, *shares) on three simulated parties; open and decode its output (with `out_bits` if given)."""

    def program(party: Party, *xs):
        before = party.channel.stats.snapshot()
        out = op(party, *xs)
        stats = party.channel.stats.since(before)
        return reveal.reveal(party, out, tag="test-output"), stats

    sim = runtime.simulate(program, inputs=list(inputs), config=config)
    opened = [o[0].cpu() for o in sim.outputs]
    if not (torch.equal(opened[0], opened[1]) and torch.equal(opened[1], opened[2])):
        raise AssertionError("parties opened different values")
    stats = [o[1] for o in sim.outputs]
    if raw:
        value = opened[0]
    else:
        bits = config.fxp.frac_bits if out_bits is None else out_bits
        value = opened[0].to(torch.float64) / 2.0**bits
    return Result(value, max(s.rounds for s in stats), [s.bytes_sent for s in stats])


def held(config: EngineConfig, x: torch.Tensor) -> torch.Tensor:
    """The real value the parties hold for input x (x rounded to the fixed-point grid)."""
    return config.fxp.decode(config.fxp.encode(x))


def ulp(config: EngineConfig) -> float:
    return 2.0 ** -config.fxp.frac_bits
