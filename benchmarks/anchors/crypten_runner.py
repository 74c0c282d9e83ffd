"""CrypTen anchor runner: BERT/GPT-2 forwards and single ops under CrypTen's 3-party arithmetic sharing.

Run it with the CrypTen venv's python (torch + crypten only; secureinfer is not importable there):
    .anchors/crypten/bin/python benchmarks/anchors/crypten_runner.py --workload DIR/minilm.json \
        --out DIR/crypten-minilm.json --output-npy DIR/crypten-minilm.npy --repeats 3
    .anchors/crypten/bin/python benchmarks/anchors/crypten_runner.py --ops --out DIR/crypten-ops.json
The model code is crypten_model.py's, the three party processes crypten_parties.py's; crypten is imported only
inside the party processes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np
import torch


def _sibling(name: str) -> ModuleType:
    """A module of this folder: benchmarks.anchors.NAME when this file is imported as part of the package (the
    harness's tests), NAME when it runs as a file in the CrypTen venv (its folder is then sys.path[0])."""
    return importlib.import_module(f"{__package__}.{name}" if __package__ else name)


model = _sibling("crypten_model")
parties = _sibling("crypten_parties")

WEIGHTS_PARTY = 0  # holds the model weights (and, as CrypTen's trusted first party, deals the Beaver triples)
TOKENS_PARTY = 1  # holds the token ids, shared as a one-hot matrix
ULP_BITS = 16  # CrypTen's default fixed-point precision (encoder.precision_bits)
NOTES_PROVIDER = (
    "Beaver triples from CrypTen's default provider TFP (trusted first party): party 0 generates every triple in the "
    "clear and shares it through PRG seeds (no bytes), so it is a dealer, not an honest-majority 3PC (party 0 could "
    "unmask every opened value); the bytes count online traffic only. "
)
NOTES_BYTES = (
    "bytes_per_party: bytes each party SENDS during one timed run, counted per communicator call in CrypTen's own "
    "model of its collectives (all_reduce, how CrypTen opens a share: each party sends the tensor once; all_gather: "
    "to each other party; broadcast/scatter: by the source; gather/reduce: by the non-destinations); "
    "bytes_per_party_crypten_stats is CrypTen's raw counter (sent + received, as it documents). "
)


@dataclass(frozen=True)
class OpSpec:
    """One benchmarked op: its name, operand shapes and the uniform range its inputs are drawn from."""

    name: str
    shapes: tuple[tuple[int, ...], ...]
    low: float = -4.0
    high: float = 4.0


OPS: tuple[OpSpec, ...] = (
    OpSpec("matmul", ((128, 768), (768, 768))),
    OpSpec("mul", ((128, 3072), (128, 3072))),
    OpSpec("lt", ((128, 3072), (128, 3072))),
    OpSpec("relu", ((128, 3072),)),
    OpSpec("max", ((12, 128, 128),)),
    OpSpec("exp", ((128, 3072),), -14.0, 0.0),
    OpSpec("reciprocal", ((128,),), 1.0, 128.0),
    OpSpec("softmax", ((12, 128, 128),)),
    OpSpec("gelu", ((128, 3072),), -6.0, 6.0),
    OpSpec("layernorm", ((128, 768),)),
)
OPS_LAYERNORM_EPS = 1e-12  # BERT's; the same as secureinfer's `bench ops`


# ---------------------------------------------------------------- float64 references (plain torch)
def reference_op(name: str, xs: list[torch.Tensor]) -> torch.Tensor:
    """The float64 torch value of op `name` on `xs` (GeLU: the exact erf form, which BERT uses)."""
    x = xs[0]
    refs: dict[str, Callable[[], torch.Tensor]] = {
        "matmul": lambda: x @ xs[1],
        "mul": lambda: x * xs[1],
        "lt": lambda: (x < xs[1]).to(torch.float64),
        "relu": lambda: torch.relu(x),
        "max": lambda: x.max(dim=-1).values,
        "exp": lambda: torch.exp(x),
        "reciprocal": lambda: 1.0 / x,
        "softmax": lambda: torch.softmax(x, dim=-1),
        "gelu": lambda: torch.nn.functional.gelu(x),
        "layernorm": lambda: torch.nn.functional.layer_norm(x, x.shape[-1:], eps=OPS_LAYERNORM_EPS),
    }
    if name not in refs:
        raise parties.RunnerError(f"unknown op {name!r}; known: {', '.join(refs)}")
    return refs[name]()


def max_error_ulp(got: np.ndarray, want: torch.Tensor, ulp_bits: int = ULP_BITS) -> float:
    """The largest absolute error in units of 2^-ulp_bits."""
    diff = np.abs(np.asarray(got, dtype=np.float64) - want.to(torch.float64).numpy())
    return float(diff.max() * 2.0**ulp_bits) if diff.size else 0.0


def wrong_answers(got: np.ndarray, want: torch.Tensor) -> int:
    """How many opened comparison bits differ from the reference (rounded to 0/1)."""
    return int((np.rint(np.asarray(got, dtype=np.float64)) != want.numpy()).sum())


def load_workload(path: Path) -> tuple[dict, Path]:
    """The workload's json (validated) and the path of its npz."""
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise parties.RunnerError(f"cannot read workload {path}: {exc}") from exc
    need = ("name", "arch", "vocab_size", "hidden", "n_layers", "n_heads", "norm_eps", "seq_len", "npz")
    missing = [k for k in need if k not in cfg]
    if missing:
        raise parties.RunnerError(f"workload {path} lacks {', '.join(missing)}")
    if cfg["arch"] not in ("bert", "gpt2"):
        raise parties.RunnerError(f"workload {path}: arch {cfg['arch']!r} is not one CrypTen's runner expresses "
                                  "(bert, gpt2)")
    return cfg, Path(path).parent / cfg["npz"]


def crypten_config() -> dict:
    """The CrypTen settings this run used (read from crypten.cfg inside a party)."""
    import crypten

    f = crypten.cfg.functions
    return {
        "protocol": "CrypTen 3-party additive arithmetic sharing (binary sharing for comparisons), Beaver products",
        "provider": str(crypten.cfg.mpc.provider), "active_security": bool(crypten.cfg.mpc.active_security),
        "world_size": parties.WORLD_SIZE, "ring_bits": 64, "fractional_bits": int(crypten.cfg.encoder.precision_bits),
        "exp_iterations": int(f.exp_iterations), "reciprocal": f"{f.reciprocal_method}, {f.reciprocal_nr_iters} iters",
        "inv_sqrt": f"Newton-Raphson, {model.LN_SQRT_ITERS} iters in LayerNorm (CrypTen's default {f.sqrt_nr_iters})",
        "max_method": str(f.max_method), "sigmoid_tanh_method": str(f.sigmoid_tanh_method),
        "gelu": f"tanh formula, CrypTen's tanh on the argument clamped to +-{model.GELU_TANH_CLAMP:g} (hardtanh)",
        "layernorm": "mean, variance, CrypTen inv_sqrt", "transport": "torch.distributed gloo, 3 local processes",
        "torch": torch.__version__, "torch_threads_per_party": torch.get_num_threads(),
    }


def _model_party(workload: Path, repeats: int) -> Callable[[int, list[float]], dict]:
    """The per-party function of a model run: share weights (party 0) and one-hot tokens (party 1), time forwards."""

    def fn(rank: int, counter: list[float]) -> dict:
        import crypten
        import crypten.communicator as comm

        cfg, npz = load_workload(workload)
        vocab, seq = int(cfg["vocab_size"]), int(cfg["seq_len"])
        plain, shapes = None, None
        if rank == WEIGHTS_PARTY:
            with np.load(npz, allow_pickle=False) as z:
                w = {k: z[k] for k in z.files if k not in ("input_ids", "attention_mask")}
            builder = model.bert_plain_params if cfg["arch"] == "bert" else model.gpt2_plain_params
            plain = builder(w, int(cfg["n_layers"]))
            shapes = {k: tuple(v.shape) for k, v in plain.items()}
        shapes = comm.get().broadcast_obj(shapes, WEIGHTS_PARTY)  # public metadata, before the timed runs
        onehot = torch.zeros(seq, vocab, dtype=torch.float64)
        if rank == TOKENS_PARTY:
            with np.load(npz, allow_pickle=False) as z:
                ids = torch.from_numpy(z["input_ids"]).reshape(-1)
            if ids.numel() != seq or int(ids.max()) >= vocab or int(ids.min()) < 0:
                raise parties.RunnerError(f"input_ids {tuple(ids.shape)} do not fit seq_len {seq} and vocab {vocab}")
            onehot = torch.nn.functional.one_hot(ids, vocab).to(torch.float64)
        t0 = time.perf_counter()
        p = {k: crypten.cryptensor(plain[k] if plain is not None else torch.zeros(s), src=WEIGHTS_PARTY)
             for k, s in shapes.items()}
        x = crypten.cryptensor(onehot, src=TOKENS_PARTY)
        input_seconds = time.perf_counter() - t0
        forward = model.bert_forward if cfg["arch"] == "bert" else model.gpt2_forward
        print(f"crypten party {rank}: inputs shared in {input_seconds:.1f} s, running {repeats} forward(s)",
              file=sys.stderr)
        res = parties.timed_runs(lambda: forward(p, x, cfg), counter, repeats)
        out = parties.open_f64(res["value"])
        if cfg["arch"] == "bert":
            out = out.unsqueeze(0)  # (1, T, H)
        return {"runs": res["runs"], "input_seconds": input_seconds, "config": crypten_config(),
                "output": out.numpy() if rank == 0 else None}

    return fn


def secure_op(name: str, xs: list):
    """Op `name` on shared operands with CrypTen (gelu: tanh formula; reciprocal: input known positive)."""
    x = xs[0]
    if name == "reciprocal":
        return model.positive_reciprocal(x)
    ops: dict[str, Callable[[], Any]] = {
        "matmul": lambda: x.matmul(xs[1]), "mul": lambda: x * xs[1], "lt": lambda: x.lt(xs[1]),
        "relu": lambda: x.relu(), "max": lambda: x.max(dim=-1)[0], "exp": lambda: x.exp(),
        "softmax": lambda: x.softmax(-1), "gelu": lambda: model.gelu_tanh(x),
        "layernorm": lambda: model.layer_norm(x, None, None, OPS_LAYERNORM_EPS),
    }
    return ops[name]()


def op_inputs(spec: OpSpec, seed: int) -> list[torch.Tensor]:
    """The op's float64 inputs, uniform in [low, high] on the 2^-16 grid, so encoding them is exact (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    scale = 2.0**ULP_BITS
    draws = [torch.rand(s, generator=gen, dtype=torch.float64) * (spec.high - spec.low) + spec.low for s in spec.shapes]
    return [torch.round(d * scale) / scale for d in draws]


def _ops_party(specs: tuple[OpSpec, ...], repeats: int, seed: int) -> Callable[[int, list[float]], dict]:
    """The per-party function of the ops run: operand i comes from party i, each op is timed `repeats` times."""

    def fn(rank: int, counter: list[float]) -> dict:
        import crypten

        per_op = []
        for spec in specs:
            xs = op_inputs(spec, seed)
            shared = [crypten.cryptensor(v if rank == i else torch.zeros(v.shape), src=i) for i, v in enumerate(xs)]
            res = parties.timed_runs(lambda: secure_op(spec.name, shared), counter, repeats)
            got = parties.open_f64(res["value"])
            per_op.append({"runs": res["runs"], "output": got.numpy() if rank == 0 else None})
            print(f"crypten party {rank}: {spec.name} done", file=sys.stderr)
        return {"ops": per_op, "config": crypten_config()}

    return fn


def anchor_version() -> str:
    """The installed crypten version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("crypten")
    except PackageNotFoundError as exc:
        raise parties.RunnerError("crypten is not installed in this python; run me with the CrypTen venv's "
                                  "python") from exc


ROUNDS_WHAT = ("CrypTen communicator calls (one per collective: all_reduce, all_gather, broadcast, scatter, gather, "
               "...) in one run, max over parties; each is at least one network round")


def run_ops(repeats: int, threads: int, seed: int) -> dict:
    """Time every op in OPS across 3 parties and compare with float64 torch."""
    version = anchor_version()
    results = parties.run_parties(parties.Job(_ops_party(OPS, repeats, seed), threads))
    ops = []
    for k, spec in enumerate(OPS):
        summary = parties.summarize_runs([r["ops"][k]["runs"] for r in results])
        want = reference_op(spec.name, op_inputs(spec, seed))
        got = results[0]["ops"][k]["output"]
        ops.append({"name": spec.name, "shapes": [list(s) for s in spec.shapes], "range": [spec.low, spec.high],
                    "seconds": summary["seconds"], "seconds_all": summary["seconds_all"],
                    "bytes_per_party": summary["bytes_per_party"],
                    "bytes_per_party_crypten_stats": summary["bytes_per_party_crypten_stats"],
                    "rounds": summary["rounds"], "max_error_ulp": max_error_ulp(got, want),
                    "ulp_bits": ULP_BITS, **({"wrong_answers": wrong_answers(got, want)} if spec.name == "lt" else {})})
    notes = (NOTES_PROVIDER + NOTES_BYTES + "Operand i is secret-shared from party i; inputs lie on "
             "the 2^-16 grid (encoding is exact). Seconds: median over the repeats of the slowest party's clock, the "
             "op only (inputs already shared, result left shared). Errors vs float64 torch on the same inputs; lt "
             "also reports wrong_answers; gelu is CrypTen's tanh formula measured against the exact erf GeLU; "
             "reciprocal runs with reciprocal_all_pos (input known positive), as CrypTen's softmax does.")
    return {"anchor": "crypten", "anchor_version": version, "ops": ops, "rounds_what": ROUNDS_WHAT,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results), "config": {**results[0]["config"], "seed": seed,
            "repeats": repeats, "layernorm_eps": OPS_LAYERNORM_EPS}, "notes": notes}


def run_model(workload: Path, output_npy: Path, repeats: int, threads: int) -> dict:
    """Run the workload's secure forward `repeats` times across 3 parties; write the opened output to output_npy."""
    version = anchor_version()
    cfg, _ = load_workload(workload)
    results = parties.run_parties(parties.Job(_model_party(workload, repeats), threads))
    np.save(output_npy, np.asarray(results[0]["output"], dtype=np.float64))
    summary = parties.summarize_runs([r["runs"] for r in results])
    gelu = "tanh formula (BERT's erf GeLU approximated by it)" if cfg["arch"] == "bert" else "tanh formula"
    notes = (NOTES_PROVIDER + NOTES_BYTES + f"Model written with CrypTen tensor ops; GeLU: {gelu} with CrypTen's "
             "tanh (= 2 sigmoid(2x) - 1, sigmoid by exp and Newton-Raphson reciprocal) on its argument clamped to "
             f"+-{model.GELU_TANH_CLAMP:g} (CrypTen's exp overflows past GeLU inputs ~24); LayerNorm with CrypTen's "
             f"inv_sqrt at {model.LN_SQRT_ITERS} Newton steps (its default 3 is far off below variance 0.1; its "
             "initial guess fails above variance ~200); softmax is CrypTen's (max by log-reduction, exp, reciprocal)"
             + ("; causal mask: public 0/1 mask applied before the max and after the exp" if cfg["arch"] == "gpt2"
                else "") + f". Weights secret-shared from party {WEIGHTS_PARTY}, tokens as a one-hot matrix from "
             f"party {TOKENS_PARTY}; embedding = one-hot @ table. peak_rss_mb: max over the 3 party processes.")
    return {"anchor": "crypten", "anchor_version": version, "workload": cfg["name"], **summary,
            "compile_seconds": None, "input_seconds": results[0]["input_seconds"],
            "timed": "one secure forward from shared weights and shared one-hot tokens to the shared output; "
                     "excludes sharing the inputs (input_seconds) and opening the output",
            "rounds_what": ROUNDS_WHAT, "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
            "config": {**results[0]["config"], "repeats": repeats}, "notes": notes}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The runner's command line."""
    ap = argparse.ArgumentParser(
        description="CrypTen anchor: time a BERT/GPT-2 workload (or single ops with --ops) under CrypTen's 3 "
                    "parties and write the spec's result JSON. Run with the CrypTen venv's python.")
    ap.add_argument("--workload", type=Path, help="workload JSON (from benchmarks.anchors.workloads)")
    ap.add_argument("--out", type=Path, required=True, help="result JSON to write")
    ap.add_argument("--output-npy", type=Path, help="where to save the opened output (float64); models only")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported (default 3)")
    ap.add_argument("--ops", action="store_true", help="benchmark the op table instead of a model")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per party process (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the ops' public random inputs (default 0)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    if not args.ops and (args.workload is None or args.output_npy is None):
        ap.error("a model run needs --workload and --output-npy (or pass --ops)")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point: run, write the JSON, return the exit status."""
    args = parse_args(argv)
    try:
        if args.ops:
            result = run_ops(args.repeats, args.threads, args.seed)
        else:
            result = run_model(args.workload, args.output_npy, args.repeats, args.threads)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    except (parties.RunnerError, OSError) as exc:
        print(f"crypten_runner: error: {exc}", file=sys.stderr)
        return 1
    print(f"crypten_runner: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
