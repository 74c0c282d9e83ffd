"""Per-round cost of the secure engine on one device, eager, for the PRG's paths (host AES + copy, AES on the
device, and the default: large draws on the device), on a few ops of `secureinfer bench ops`; writes JSON to the folder given as the first argument.

    python benchmarks/gpu/rounds.py OUT_DIR [--device cuda] [--repeat 7]

Each op runs on three in-process parties (runtime.simulate) `--repeat` times after a warm-up; the median wall time
over the op's rounds is the per-round cost. Results: OUT_DIR/rounds.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from secureinfer.mpc import runtime
from secureinfer.mpc.approx import reciprocal
from secureinfer.mpc.approx.profile import ACCURATE
from secureinfer.mpc.nn import softmax
from secureinfer.mpc.party import EngineConfig
from secureinfer.mpc.protocols import compare

from prgpath import CHOICES, prg_path, write_rows  # benchmarks/gpu/prgpath.py, beside this script


def _cases() -> dict:
    return {
        "reciprocal-128": ((128,), lambda p, x: reciprocal.reciprocal(p, x, ACCURATE, lo=0, hi=7), (1.0, 100.0)),
        "msb-128": ((128,), lambda p, x: compare.msb(p, x), (-10.0, 10.0)),
        "softmax-12x128x128": ((12, 128, 128), lambda p, x: softmax.softmax(p, x, ACCURATE), (-4.0, 4.0)),
    }


def _time(shape, fn, domain, device: str, repeat: int) -> dict:
    lo, hi = domain
    x = torch.rand(shape, dtype=torch.float64) * (hi - lo) + lo

    def program(party, share):
        fn(party, share)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn(party, share)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return times

    result = runtime.simulate(program, inputs=[x], config=EngineConfig(device=device))
    seconds = statistics.median(result.outputs[0])
    rounds = result.stats[0].rounds // (repeat + 1)
    return {"seconds": seconds, "rounds": rounds, "ms_per_round": 1e3 * seconds / rounds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in CHOICES:
        with prg_path(path):
            for name, (shape, fn, domain) in _cases().items():
                row = {"op": name, "prg": path, "device": args.device,
                       **_time(shape, fn, domain, args.device, args.repeat)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    write_rows(args.out / "rounds.json", rows)

if __name__ == "__main__":
    main()
