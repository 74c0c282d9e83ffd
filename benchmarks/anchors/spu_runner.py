"""SecretFlow SPU anchor: PUMA's recipes for BERT and GPT-2 written in JAX and run by SPU (3 parties, ABY3, FM64).

Run with the SPU venv's python (numpy, jax and spu only; never secureinfer):
  <venv>/bin/python benchmarks/anchors/spu_runner.py --workload DIR/W.json --out DIR/spu-W.json \
      --output-npy DIR/spu-W.npy [--repeats N]
The model owner (party 0) inputs the weights and the client (party 1) the one-hot tokens, both secret; SPU's three
parties run in this process, one thread each, over SPU's in-memory links, every party with SPU's profiler on: each
party's "Link details" line gives its bytes sent (SPU prints no rank with it, so a forward's three parties are
reported busiest first). The median forward time is reported. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import queue
import re
import resource
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

WORLD = 3
WEIGHTS_OWNER = 0    # the model owner's party
TOKENS_OWNER = 1     # the client's party
FRACTION_BITS = 18
EXP_ITERS = 5
EXP_CLIP = -14.0     # PUMA: exp(x) is taken as 0 below this (after the row max is subtracted)
MASKED_SCORE = -1e4  # public filler for masked attention scores: far below EXP_CLIP after the max is subtracted

# PUMA's GeLU pieces: F0 on [-4, -1.95) (coefficients of x^0..x^3), F1 on [-1.95, 3] (x^0..x^6; odd terms above x^1
# are zero), 0 below -4 and x above 3.
GELU_F0 = (-0.5054031199708174, -0.42226581151983866, -0.11807612951181953, -0.011034134030615728)
GELU_F1 = (0.008526321541038084, 0.5, 0.3603292692789629, 0.0, -0.037688200365904236, 0.0, 0.0018067462606141187)

LINK_LINE = re.compile(
    r"Link details: total send bytes (\d+), recv bytes (\d+), send actions (\d+), recv actions (\d+)"
)


class RunnerError(RuntimeError):
    """A clear, one-line reason the SPU runner cannot go on."""


@dataclass(frozen=True)
class LinkStats:
    """What one party's SPU link did during one execution, as its profile log reports it."""

    send_bytes: int
    recv_bytes: int
    send_actions: int
    recv_actions: int


def parse_link_details(log_text: str) -> list[LinkStats]:
    """Every "Link details" line of an SPU profile log, in order."""
    return [LinkStats(*(int(g) for g in m.groups())) for m in LINK_LINE.finditer(log_text)]


def puma_gelu(x: Any, xp: Any) -> Any:
    """PUMA's piecewise GeLU of x, with array module xp (numpy or jax.numpy)."""
    below_m4, below_m195, above_3 = x < -4.0, x < -1.95, x > 3.0
    on_f0 = xp.logical_xor(below_m4, below_m195)                   # -4 <= x < -1.95
    on_f1 = xp.logical_not(xp.logical_xor(below_m195, above_3))     # -1.95 <= x <= 3
    x2 = x * x
    x3 = x2 * x
    x4 = x2 * x2
    x6 = x3 * x3
    f0 = GELU_F0[3] * x3 + GELU_F0[2] * x2 + GELU_F0[1] * x + GELU_F0[0]
    f1 = GELU_F1[6] * x6 + GELU_F1[4] * x4 + GELU_F1[2] * x2 + GELU_F1[1] * x + GELU_F1[0]
    return xp.where(on_f0, f0, 0.0) + xp.where(on_f1, f1, 0.0) + xp.where(above_3, x, 0.0)


# ----------------------------------------------------------------------------------------------- the models (JAX)

def _layer_norm(x: Any, gamma: Any, beta: Any, eps: float) -> Any:
    """LayerNorm over the last axis with SPU's reciprocal square root."""
    import jax
    import jax.numpy as jnp

    mean = jnp.mean(x, axis=-1, keepdims=True)
    centred = x - mean
    var = jnp.mean(centred * centred, axis=-1, keepdims=True)
    return centred * jax.lax.rsqrt(var + eps) * gamma + beta


def _softmax(scores: Any, keep: np.ndarray | None) -> Any:
    """PUMA's softmax over the last axis: exact row max, SPU's exp clipped to 0 below -14, one reciprocal per row."""
    import jax.numpy as jnp

    if keep is not None:
        scores = jnp.where(keep, scores, MASKED_SCORE)              # keep is public (causal or padding mask)
    shifted = scores - jnp.max(scores, axis=-1, keepdims=True)
    e = jnp.exp(shifted) * (shifted > EXP_CLIP)
    return e / jnp.sum(e, axis=-1, keepdims=True)                   # compiled as e * (1 / sum): see compiler options


def _attention(q: Any, k: Any, v: Any, n_heads: int, keep: np.ndarray | None) -> Any:
    """Multi-head attention of (T, H) q, k, v; keep (T, T) public bool or None; returns (T, H)."""
    import jax.numpy as jnp

    t, h = q.shape
    dh = h // n_heads
    qh = (q * (1.0 / np.sqrt(dh))).reshape(t, n_heads, dh).transpose(1, 0, 2)   # (nh, T, dh)
    kh = k.reshape(t, n_heads, dh).transpose(1, 0, 2)
    vh = v.reshape(t, n_heads, dh).transpose(1, 0, 2)
    probs = _softmax(jnp.einsum("htd,hsd->hts", qh, kh), keep)                    # (nh, T, T)
    return jnp.einsum("hts,hsd->htd", probs, vh).transpose(1, 0, 2).reshape(t, h)


def bert_forward(w: dict[str, Any], onehot: Any, cfg: dict[str, Any], keep: np.ndarray | None) -> Any:
    """BERT encoder's last hidden state (1, T, H); linear weights already (in, out); onehot (1, T, V)."""
    import jax.numpy as jnp

    t = onehot.shape[1]
    eps = float(cfg["norm_eps"])
    x = onehot[0] @ w["embeddings.word_embeddings.weight"]
    x = x + w["embeddings.position_embeddings.weight"][:t] + w["embeddings.token_type_embeddings.weight"][0]
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    for i in range(int(cfg["n_layers"])):
        p = f"encoder.layer.{i}."
        lin = lambda name, a: a @ w[p + name + ".weight"] + w[p + name + ".bias"]  # noqa: E731
        q, k, v = (lin(f"attention.self.{n}", x) for n in ("query", "key", "value"))
        ctx = _attention(q, k, v, int(cfg["n_heads"]), keep)
        x = _layer_norm(x + lin("attention.output.dense", ctx), w[p + "attention.output.LayerNorm.weight"],
                        w[p + "attention.output.LayerNorm.bias"], eps)
        hidden = puma_gelu(lin("intermediate.dense", x), jnp)
        x = _layer_norm(x + lin("output.dense", hidden), w[p + "output.LayerNorm.weight"],
                        w[p + "output.LayerNorm.bias"], eps)
    return x[None]


def gpt2_forward(w: dict[str, Any], onehot: Any, cfg: dict[str, Any], keep: np.ndarray | None) -> Any:
    """GPT-2's logits at the last position (1, V), LM head tied to wte; Conv1D weights are (in, out)."""
    import jax.numpy as jnp

    t, h = onehot.shape[1], int(cfg["hidden"])
    eps = float(cfg["norm_eps"])
    x = onehot[0] @ w["transformer.wte.weight"] + w["transformer.wpe.weight"][:t]
    for i in range(int(cfg["n_layers"])):
        p = f"transformer.h.{i}."
        conv = lambda name, a: a @ w[p + name + ".weight"] + w[p + name + ".bias"]  # noqa: E731
        a = _layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        qkv = conv("attn.c_attn", a)
        ctx = _attention(qkv[:, :h], qkv[:, h:2 * h], qkv[:, 2 * h:], int(cfg["n_heads"]), keep)
        x = x + conv("attn.c_proj", ctx)
        m = _layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        x = x + conv("mlp.c_proj", puma_gelu(conv("mlp.c_fc", m), jnp))
    last = _layer_norm(x[-1:], w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], eps)   # (1, H)
    return last @ w["transformer.wte.weight"].T                                                  # (1, V)


# ------------------------------------------------------------------------------------------------ the workload

@dataclass(frozen=True)
class Job:
    """A workload ready for SPU: the weights in a fixed order, the one-hot tokens and the forward to run."""

    name: str
    cfg: dict[str, Any]
    names: tuple[str, ...]
    weights: tuple[np.ndarray, ...]
    onehot: np.ndarray                        # (1, T, V) float64
    forward: Callable[..., Any]               # (onehot, *weights) -> output


def load_job(workload_json: Path) -> Job:
    """Read a workload (json + npz), orient BERT's linear weights as (in, out) and build the forward."""
    cfg = json.loads(workload_json.read_text())
    arch = cfg.get("arch")
    if arch not in ("bert", "gpt2"):
        raise RunnerError(f"{workload_json}: arch must be 'bert' or 'gpt2', not {arch!r}")
    with np.load(workload_json.parent / cfg["npz"], allow_pickle=False) as npz:
        data = {k: np.asarray(npz[k]) for k in npz.files}
    ids, mask = data.pop("input_ids"), data.pop("attention_mask")
    if ids.shape[0] != 1:
        raise RunnerError(f"{workload_json}: input_ids must be (1, T), got {ids.shape}")
    t, vocab = ids.shape[1], int(cfg["vocab_size"])
    onehot = np.zeros((1, t, vocab), dtype=np.float64)
    onehot[0, np.arange(t), ids[0]] = 1.0
    weights: dict[str, np.ndarray] = {}
    for k, v in data.items():
        is_linear = arch == "bert" and v.ndim == 2 and k.startswith("encoder.layer.")
        weights[k] = np.ascontiguousarray(v.T if is_linear else v, dtype=np.float64)  # the owner's own layout
    pad_keep = mask[0].astype(bool)[None, None, :]                      # (1, 1, T): keys that are real tokens
    if arch == "gpt2":
        keep = np.tril(np.ones((t, t), dtype=bool))[None] & pad_keep
        model = gpt2_forward
    else:
        keep = None if pad_keep.all() else np.broadcast_to(pad_keep, (1, t, t))
        model = bert_forward
    names = tuple(sorted(weights))

    def forward(onehot_in: Any, *flat: Any) -> Any:
        return model(dict(zip(names, flat)), onehot_in, cfg, keep)

    return Job(cfg["name"], cfg, names, tuple(weights[n] for n in names), onehot, forward)


# -------------------------------------------------------------------------------------------------- running SPU

def runtime_config(profile: bool) -> Any:
    """SPU's runtime config: ABY3, FM64, 18 fractional bits, exp by (1 + x/2^5)^(2^5); profiling as asked."""
    import spu.libspu as libspu

    config = libspu.RuntimeConfig(protocol=libspu.ProtocolKind.ABY3, field=libspu.FieldType.FM64,
                                  fxp_fraction_bits=FRACTION_BITS)
    config.fxp_exp_mode = libspu.RuntimeConfig.ExpMode.EXP_TAYLOR
    config.fxp_exp_iters = EXP_ITERS
    config.enable_pphlo_profile = profile
    config.enable_hal_profile = False
    return config


@contextlib.contextmanager
def _stdout_to(path: Path):
    """Send this process's file descriptor 1 (where SPU's C++ logger writes) to `path` for the block."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    with open(path, "ab") as sink:
        os.dup2(sink.fileno(), 1)
    try:
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)


@dataclass
class _Run:
    """What the party threads share: the forwards' start/end times, outputs and errors."""

    forwards: int
    starts: list[list[float]]
    ends: list[list[float]]
    outputs: list[Any]
    errors: list[BaseException | None]


def _party(rank: int, desc: Any, executable: Any, inputs: queue.Queue, barrier: threading.Barrier, run: _Run,
           log: Callable[[str], None]) -> None:
    """One SPU party: set its input shares as they arrive, then run the forwards in step with the others."""
    import spu
    import spu.libspu as libspu

    try:
        rt = spu.Runtime(libspu.link.create_mem(desc, rank), runtime_config(profile=True))
        while (item := inputs.get()) is not None:
            rt.set_var(*item)
        for k in range(run.forwards):
            barrier.wait()
            if rank == 0 and k > 0:
                log(f"spu: forward {k}: {max(run.ends[k - 1]) - min(run.starts[k - 1]):.2f} s")
            run.starts[k][rank] = time.perf_counter()
            rt.run(executable)
            run.ends[k][rank] = time.perf_counter()
        run.outputs[rank] = [rt.get_var(n) for n in executable.output_names]
    except BaseException as exc:  # reported by the caller, with the party's rank
        run.errors[rank] = exc
        barrier.abort()


def run_forwards(executable: Any, inputs: list[tuple[np.ndarray, int]], forwards: int, log_path: Path,
                 log: Callable[[str], None]) -> tuple[_Run, list[np.ndarray]]:
    """Share `inputs` (array, owner) into 3 in-process parties, run `forwards` forwards, open the outputs.

    `inputs` is emptied as it is shared, so each plaintext array is freed once its shares are set.
    """
    import spu
    import spu.libspu as libspu

    desc = libspu.link.Desc()
    for rank in range(WORLD):
        desc.add_party(f"party{rank}", f"thread{rank}")
    run = _Run(forwards, [[0.0] * WORLD for _ in range(forwards)], [[0.0] * WORLD for _ in range(forwards)],
               [None] * WORLD, [None] * WORLD)
    queues: list[queue.Queue] = [queue.Queue() for _ in range(WORLD)]
    barrier = threading.Barrier(WORLD)
    io = spu.Io(WORLD, runtime_config(profile=False))
    with _stdout_to(log_path):
        threads = [threading.Thread(target=_party, args=(r, desc, executable, queues[r], barrier, run, log))
                   for r in range(WORLD)]
        for th in threads:
            th.start()
        try:
            for name in executable.input_names:
                array, owner = inputs.pop(0)
                shares = io.make_shares(array, libspu.Visibility.VIS_SECRET, owner)
                for rank in range(WORLD):
                    queues[rank].put((name, shares[rank]))
                del array, shares
        finally:
            for q in queues:
                q.put(None)                 # the parties stop waiting for inputs even when sharing failed
            for th in threads:
                th.join()
    failed = sorted(((isinstance(e, threading.BrokenBarrierError), r, e) for r, e in enumerate(run.errors) if e),
                    key=lambda f: f[:2])   # a party's own error before the others' broken barrier
    if failed:
        _, rank, exc = failed[0]
        raise RunnerError(f"SPU party {rank} failed: {type(exc).__name__}: {exc}")
    log(f"spu: forward {forwards}: {max(run.ends[-1]) - min(run.starts[-1]):.2f} s")
    opened = [np.asarray(io.reconstruct([run.outputs[r][i] for r in range(WORLD)]))
              for i in range(len(executable.output_names))]
    return run, opened


def compile_job(job: Job) -> tuple[Any, float]:
    """Trace the forward with JAX and compile it to SPU bytecode; returns (executable, seconds)."""
    import spu.libspu as libspu
    from spu.utils import frontend

    copts = libspu.CompilerOptions()
    copts.enable_optimize_denominator_with_broadcast = True   # x / broadcast(s) -> x * broadcast(1 / s)
    args = (job.onehot, *job.weights)
    in_names = ["tokens"] + [f"w{i}" for i in range(len(job.weights))]
    start = time.perf_counter()
    executable, _ = frontend.compile(
        frontend.Kind.JAX, job.forward, args, {}, in_names, [libspu.Visibility.VIS_SECRET] * len(args),
        lambda outs: [f"out{i}" for i in range(len(outs))], copts=copts,
    )
    return executable, time.perf_counter() - start


def bytes_by_forward(links: list[LinkStats], forwards: int) -> list[list[LinkStats]]:
    """The profile's link lines grouped by forward (3 per forward, in order), each forward's busiest party first.

    SPU prints a party's "Link details" without its rank and the parties finish together, so their lines come in
    any order within a forward; forwards never mix (each starts after all parties finished the last one).
    """
    if len(links) != WORLD * forwards:
        raise RunnerError(f"expected {WORLD * forwards} 'Link details' lines in SPU's profile log, found {len(links)}")
    groups = [links[WORLD * k:WORLD * (k + 1)] for k in range(forwards)]
    return [sorted(g, key=lambda s: s.send_bytes, reverse=True) for g in groups]


def measure(workload: Path, repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Load, compile, share and run the forward `repeats` times; the result JSON's fields plus the output."""
    job = load_job(workload)
    name = job.name
    log(f"spu: {name}: {len(job.weights)} weight tensors, tokens {job.onehot.shape}")
    executable, compile_s = compile_job(job)
    log(f"spu: compiled {name} in {compile_s:.1f} s")
    inputs = [(job.onehot, TOKENS_OWNER)] + [(w, WEIGHTS_OWNER) for w in job.weights]
    del job                                     # the shares replace the plaintext arrays as they are made
    with tempfile.TemporaryDirectory(prefix="spu-runner-") as tmp:
        log_path = Path(tmp) / "spu.log"
        run, opened = run_forwards(executable, inputs, repeats, log_path, log)
        forwards = bytes_by_forward(parse_link_details(log_path.read_text(errors="replace")), repeats)
    seconds = [max(e) - min(s) for s, e in zip(run.starts, run.ends)]
    sent = [[s.send_bytes for s in f] for f in forwards]
    return {
        "workload": name, "seconds": statistics.median(seconds), "seconds_all": seconds,
        "compile_seconds": compile_s,
        "bytes_per_party": [round(statistics.mean(f[r] for f in sent)) for r in range(WORLD)],
        "bytes_per_party_all": sent,
        "rounds": round(statistics.median(max(s.send_actions for s in f) for f in forwards)),
        "output": opened[0],
    }


# ---------------------------------------------------------------------------------------------------------- CLI

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The runner's command line."""
    parser = argparse.ArgumentParser(
        description="Run one workload through SecretFlow SPU with PUMA's recipes (3 parties in this process, "
                    "ABY3, 64-bit ring, 18 fractional bits) and write its time, bytes per party and output.",
        epilog="Example: .anchors/spu/bin/python benchmarks/anchors/spu_runner.py --workload W/minilm.json "
               "--out W/spu-minilm.json --output-npy W/spu-minilm.npy --repeats 3",
    )
    parser.add_argument("--workload", type=Path, required=True, help="the workload's W.json (its npz beside it)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the result JSON")
    parser.add_argument("--output-npy", type=Path, required=True, help="where to write the opened output (float64)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="secure forwards to time (median reported; default 3)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure one workload and write the JSON and npy the harness reads."""
    args = parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    try:
        import jax

        jax.config.update("jax_enable_x64", True)   # trace in float64: the shares hold fixed point either way
        import spu

        result = measure(args.workload, args.repeats, log)
    except Exception as exc:  # noqa: BLE001 - the runner's contract: one clear line and a non-zero exit
        reason = " ".join(str(exc).split())[:500]
        log(f"spu runner failed: {type(exc).__name__}: {reason}")
        return 1
    np.save(args.output_npy, np.asarray(result.pop("output"), dtype=np.float64))
    report = {
        "anchor": "spu", "anchor_version": spu.__version__, **result,
        "timed": "one secure forward: the 3 parties' SPU Run of the compiled program, weights and tokens already "
                 "secret-shared and set; excludes JAX tracing/SPU compilation, sharing, runtime setup and opening",
        "rounds_what": "link send actions (messages sent) of the party that sent most messages in a forward (median "
                       "over forwards), from SPU's profile; an upper bound on the rounds (SPU does not count rounds)",
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "config": {"protocol": "ABY3", "field_bits": 64, "fraction_bits": FRACTION_BITS,
                   "exp": f"EXP_TAYLOR (1 + x/2^{EXP_ITERS})^(2^{EXP_ITERS}), 0 below {EXP_CLIP}",
                   "exp_iterations": EXP_ITERS, "gelu": "PUMA piecewise (0 | cubic | degree 6 | x)",
                   "softmax": "exact row max, x / broadcast(sum) compiled as x * broadcast(1 / sum)",
                   "layernorm": "SPU rsqrt", "embedding": "secret one-hot (client) @ secret table (owner)",
                   "parties": WORLD, "weights_owner": WEIGHTS_OWNER, "tokens_owner": TOKENS_OWNER},
        "notes": "in-process: 3 parties as 3 threads over SPU's in-memory links (spu.libspu.link.create_mem), like "
                 "secureinfer's in-process figure. Bytes: each party's own 'Link details: total send bytes' from "
                 "SPU's pphlo profile (on for every party). SPU prints that line without the party's rank and the "
                 "parties' lines interleave, so bytes_per_party lists each forward's parties busiest first, "
                 "averaged over the forwards (bytes_per_party_all: per forward); a forward's total is the same every "
                 "time while SPU's ABY3 shifts a few percent between parties from one forward to the next. Shares "
                 "come from spu.Io with the owners' ranks (weights 0, tokens 1), colocation optimisation off",
    }
    args.out.write_text(json.dumps(report, indent=2))
    log(f"spu: {report['workload']}: median {report['seconds']:.2f} s, bytes per party {report['bytes_per_party']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
