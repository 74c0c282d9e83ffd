"""secureinfer's side of the anchor benchmark: the workload's secure forward on three in-process parties.

Same command line and output as the anchors' runners (see benchmarks/anchors/__init__.py):
  python -m benchmarks.anchors.secureinfer_runner --workload DIR/W.json --out R.json --output-npy R.npy
Timed: the forward step as the client sees it (its secret-shared one-hot tokens sent -> output reconstructed), the
weights already published as shares (reported apart as load_seconds). Bytes: sent by each party during that step.
Rounds: critical-path rounds of the step. --breakdown adds one traced run's per-op figures (party 0).
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchmarks.anchors import runner_cli


def load_files(path: Path) -> tuple[Any, dict[str, torch.Tensor], torch.Tensor, dict[str, Any]]:
    """The workload's ModelConfig, float64 weights, (1, T) token ids and its JSON description."""
    from secureinfer.models.config import ModelConfig
    from secureinfer.models.checkpoint import check_parameters

    spec = json.loads(path.read_text())
    with np.load(path.parent / spec["npz"], allow_pickle=False) as npz:
        arrays = {k: torch.from_numpy(npz[k]) for k in npz.files}
    ids = arrays.pop("input_ids")
    arrays.pop("attention_mask")
    cfg = ModelConfig(arch=spec["arch"], vocab_size=spec["vocab_size"], hidden=spec["hidden"],
                      n_layers=spec["n_layers"], n_heads=spec["n_heads"], n_kv_heads=spec["n_heads"],
                      head_dim=spec["hidden"] // spec["n_heads"], intermediate=spec["intermediate"],
                      max_positions=spec["max_positions"], norm_eps=spec["norm_eps"], act=spec["act"],
                      type_vocab_size=spec["type_vocab_size"], tie_word_embeddings=spec["arch"] == "gpt2")
    return cfg, check_parameters(cfg, arrays, torch.float64), ids, spec


def forward(cfg, params, ids: torch.Tensor, profile: str, traced: bool = False) -> tuple[torch.Tensor, Any]:
    """One secure session of one forward: (opened output, the session's first step report)."""
    from secureinfer.mpc.approx import profile as profiles
    from secureinfer.mpc.models import session

    prof = profiles.get(profile)
    if cfg.arch == "bert":
        out, report = session.secure_encode(cfg, params, ids, torch.ones_like(ids), output="hidden", profile=prof,
                                            traced=traced)
    else:
        gen, report = session.secure_generate(cfg, params, ids, 1, eos_token_ids=(), profile=prof, traced=traced)
        out = gen.logits[0]                                                   # (1, V): the prefill's last position
    return out, report


def run(workload: Path, repeats: int, profile: str, breakdown: bool) -> tuple[dict[str, Any], np.ndarray]:
    """`repeats` untraced sessions (median time) and, optionally, one traced for the per-op breakdown."""
    from secureinfer.lab.bench.model import op_breakdown
    import secureinfer

    cfg, params, ids, spec = load_files(workload)
    steps, loads = [], []
    for i in range(repeats):
        out, report = forward(cfg, params, ids, profile)
        steps.append(report.steps[0])
        loads.append(report.load_seconds)
        print(f"secureinfer {spec['name']}: run {i + 1}/{repeats} {steps[-1].seconds:.2f} s", file=sys.stderr,
              flush=True)
    result: dict[str, Any] = {
        "anchor": "secureinfer", "anchor_version": getattr(secureinfer, "__version__", "dev"),
        "workload": spec["name"], "seconds": statistics.median(s.seconds for s in steps),
        "seconds_all": [s.seconds for s in steps], "compile_seconds": None,
        "timed": "one forward: client's one-hot shares sent -> output reconstructed (weights already shared)",
        "load_seconds": statistics.median(loads),
        "bytes_per_party": [max(s.bytes_per_party[p] for s in steps) for p in range(3)],
        "rounds": max(s.rounds for s in steps), "rounds_what": "critical-path communication rounds",
        "config": {"protocol": "3-party replicated secret sharing (ABY3-style), semi-honest", "field_bits": 64,
                   "fractional_bits": 18, "profile": profile, "threads": torch.get_num_threads()},
        "notes": "three party threads in one process; secret weights (model owner) and secret one-hot tokens "
                 "(client); PUMA-grade GeLU/softmax/LayerNorm",
    }
    if breakdown:
        _, traced = forward(cfg, params, ids, profile, traced=True)
        result["breakdown"] = op_breakdown(list(traced.steps[0].recordings[:1]))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result, out.double().numpy()


def main(argv: list[str] | None = None) -> int:
    """Run the workload and write the result JSON and the opened output."""
    parser = runner_cli.parser("python -m benchmarks.anchors.secureinfer_runner",
                               "secureinfer's secure forward of an anchor-benchmark workload.", 1)
    parser.add_argument("--profile", default="accurate", help="approximation profile (default accurate)")
    parser.add_argument("--breakdown", action="store_true", help="add one traced run's per-op figures (party 0)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per process (default 1: the three party threads already share the cores)")
    args = runner_cli.parse(parser, argv)
    torch.set_num_threads(max(args.threads, 1))
    runner_cli.write(args, *run(args.workload, args.repeats, args.profile, args.breakdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
