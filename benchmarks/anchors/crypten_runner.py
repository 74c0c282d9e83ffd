"""CrypTen anchor runner: BERT/GPT-2 forwards and single ops under CrypTen's 3-party arithmetic sharing.

Run it with the CrypTen venv's python (torch + crypten only; secureinfer is not importable there):
    .anchors/crypten/bin/python benchmarks/anchors/crypten_runner.py --workload DIR/minilm.json \
        --out DIR/crypten-minilm.json --output-npy DIR/crypten-minilm.npy --repeats 3
    .anchors/crypten/bin/python benchmarks/anchors/crypten_runner.py --ops --out DIR/crypten-ops.json
The model code is written here with CrypTen tensor ops; crypten is imported only inside the party processes.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import queue as queue_mod
import resource
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

WORLD_SIZE = 3
WEIGHTS_PARTY = 0  # holds the model weights (and, as CrypTen's trusted first party, deals the Beaver triples)
TOKENS_PARTY = 1  # holds the token ids, shared as a one-hot matrix
ULP_BITS = 16  # CrypTen's default fixed-point precision (encoder.precision_bits)
BYTES_PER_ELEMENT = 8  # CrypTen shares are int64
PARTY_TIMEOUT_S = 3600.0
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


class RunnerError(Exception):
    """A runner failure with a one-line message for the harness."""


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
GELU_TANH_C = math.sqrt(2.0 / math.pi)
# CrypTen's tanh is 2 sigmoid(2x) - 1 with exp by (1 + x/512)^512, which blows up past |2x| ~ 1000 (GeLU inputs
# beyond ~24, which MiniLM reaches): the tanh argument is clamped to [-10, 10] first (tanh(10) = 1 - 4e-9).
GELU_TANH_CLAMP = 10.0
# CrypTen's default 3 Newton-Raphson steps of inv_sqrt start from a guess that is far off below variance 0.1
# (MiniLM's embedding LayerNorm has 0.004-0.03: 0.45-0.86 of the true value); 10 steps converge on [0.001, 200].
LN_SQRT_ITERS = 10


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
        raise RunnerError(f"unknown op {name!r}; known: {', '.join(refs)}")
    return refs[name]()


def max_error_ulp(got: np.ndarray, want: torch.Tensor, ulp_bits: int = ULP_BITS) -> float:
    """The largest absolute error in units of 2^-ulp_bits."""
    diff = np.abs(np.asarray(got, dtype=np.float64) - want.to(torch.float64).numpy())
    return float(diff.max() * 2.0**ulp_bits) if diff.size else 0.0


def wrong_answers(got: np.ndarray, want: torch.Tensor) -> int:
    """How many opened comparison bits differ from the reference (rounded to 0/1)."""
    return int((np.rint(np.asarray(got, dtype=np.float64)) != want.numpy()).sum())


# ---------------------------------------------------------------- secure building blocks (CrypTen tensor ops)
def gelu_tanh(x):
    """GeLU by the tanh formula 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), tanh on a clamped argument."""
    inner = (x + x.square().mul(x).mul(0.044715)).mul(GELU_TANH_C)
    if isinstance(inner, torch.Tensor):
        clamped = inner.clamp(-GELU_TANH_CLAMP, GELU_TANH_CLAMP)
    else:
        clamped = inner.hardtanh(-GELU_TANH_CLAMP, GELU_TANH_CLAMP)
    return x.mul(clamped.tanh().add(1.0)).mul(0.5)


def inv_sqrt(x):
    """1/sqrt(x): CrypTen's Newton-Raphson with LN_SQRT_ITERS steps; a plain tensor takes torch's rsqrt."""
    if isinstance(x, torch.Tensor):
        return x.rsqrt()
    import crypten

    with crypten.cfg.temp_override({"functions.sqrt_nr_iters": LN_SQRT_ITERS}):
        return x.inv_sqrt()


def layer_norm(x, gamma, beta, eps: float):
    """LayerNorm over the last dim with CrypTen's inv_sqrt (Newton-Raphson); gamma/beta may be None."""
    centered = x - x.mean(dim=-1, keepdim=True)
    var = centered.square().mean(dim=-1, keepdim=True)
    y = centered * inv_sqrt(var + eps)
    if gamma is not None:
        y = y * gamma + beta
    return y


def causal_softmax(scores, mask: torch.Tensor):
    """Softmax over the last dim with a public 0/1 mask: masked scores are zeroed before the max, exp'd and dropped."""
    masked = scores * mask
    shifted = masked - masked.max(dim=-1, keepdim=True)[0]
    numer = shifted.exp() * mask
    return numer * positive_reciprocal(numer.sum(dim=-1, keepdim=True))


def positive_reciprocal(x):
    """1/x for x known positive: CrypTen skips its sign step (as its softmax does); a plain tensor takes torch's."""
    if isinstance(x, torch.Tensor):
        return x.reciprocal()
    import crypten

    with crypten.cfg.temp_override({"functions.reciprocal_all_pos": True}):
        return x.reciprocal()


def attention(x, p: dict, pre: str, n_heads: int, causal_mask: torch.Tensor | None):
    """Multi-head self-attention on (T, H) with fused or separate q/k/v projections already shared as (in, out)."""
    t, h = x.size()
    d = h // n_heads
    if f"{pre}qkv_w" in p:
        qkv = x.matmul(p[f"{pre}qkv_w"]) + p[f"{pre}qkv_b"]  # (T, 3H)
        q, k, v = qkv[:, :h], qkv[:, h : 2 * h], qkv[:, 2 * h :]
    else:
        q = x.matmul(p[f"{pre}q_w"]) + p[f"{pre}q_b"]
        k = x.matmul(p[f"{pre}k_w"]) + p[f"{pre}k_b"]
        v = x.matmul(p[f"{pre}v_w"]) + p[f"{pre}v_b"]
    q, k, v = (a.reshape(t, n_heads, d).transpose(0, 1) for a in (q, k, v))  # (nh, T, d)
    scores = q.matmul(k.transpose(1, 2)).mul(1.0 / math.sqrt(d))  # (nh, T, T)
    probs = scores.softmax(-1) if causal_mask is None else causal_softmax(scores, causal_mask)
    ctx = probs.matmul(v).transpose(0, 1).reshape(t, h)  # (T, H)
    return ctx.matmul(p[f"{pre}o_w"]) + p[f"{pre}o_b"]


def bert_forward(p: dict, onehot, cfg: dict):
    """BERT encoder on a (T, V) one-hot: embeddings, post-LN layers; returns the (T, H) last hidden state."""
    t = onehot.size(0)
    x = onehot.matmul(p["word"]) + p["pos"][:t] + p["type"][0:1]
    x = layer_norm(x, p["emb_ln_g"], p["emb_ln_b"], cfg["norm_eps"])
    for i in range(cfg["n_layers"]):
        pre = f"l{i}."
        eps = cfg["norm_eps"]
        x = layer_norm(x + attention(x, p, pre, cfg["n_heads"], None), p[pre + "ln1_g"], p[pre + "ln1_b"], eps)
        hidden = gelu_tanh(x.matmul(p[pre + "fc_w"]) + p[pre + "fc_b"])
        x = layer_norm(x + hidden.matmul(p[pre + "out_w"]) + p[pre + "out_b"], p[pre + "ln2_g"], p[pre + "ln2_b"], eps)
    return x


def gpt2_forward(p: dict, onehot, cfg: dict):
    """GPT-2 decoder on a (T, V) one-hot: pre-LN causal layers, final LN; returns the (1, V) last-position logits."""
    t = onehot.size(0)
    mask = torch.tril(torch.ones(t, t, dtype=torch.float64)).float()
    x = onehot.matmul(p["word"]) + p["pos"][:t]
    for i in range(cfg["n_layers"]):
        pre = f"l{i}."
        a = layer_norm(x, p[pre + "ln1_g"], p[pre + "ln1_b"], cfg["norm_eps"])
        x = x + attention(a, p, pre, cfg["n_heads"], mask)
        m = layer_norm(x, p[pre + "ln2_g"], p[pre + "ln2_b"], cfg["norm_eps"])
        x = x + gelu_tanh(m.matmul(p[pre + "fc_w"]) + p[pre + "fc_b"]).matmul(p[pre + "out_w"]) + p[pre + "out_b"]
    last = layer_norm(x[t - 1 : t], p["lnf_g"], p["lnf_b"], cfg["norm_eps"])  # (1, H)
    return last.matmul(p["word"].t())  # (1, V), LM head tied to wte


# ---------------------------------------------------------------- plaintext weight layout (weights party only)
def bert_plain_params(w: dict[str, np.ndarray], n_layers: int) -> dict[str, torch.Tensor]:
    """Map HF BERT names to the runner's names, with Linear weights turned to (in, out)."""
    t = lambda k: torch.from_numpy(np.asarray(w[k], dtype=np.float64))  # noqa: E731
    p = {
        "word": t("embeddings.word_embeddings.weight"),
        "pos": t("embeddings.position_embeddings.weight"),
        "type": t("embeddings.token_type_embeddings.weight"),
        "emb_ln_g": t("embeddings.LayerNorm.weight"),
        "emb_ln_b": t("embeddings.LayerNorm.bias"),
    }
    names = {
        "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
        "o": "attention.output.dense", "fc": "intermediate.dense", "out": "output.dense",
    }
    for i in range(n_layers):
        base = f"encoder.layer.{i}."
        for short, hf in names.items():
            p[f"l{i}.{short}_w"] = t(base + hf + ".weight").T.contiguous()
            p[f"l{i}.{short}_b"] = t(base + hf + ".bias")
        for short, hf in (("ln1", "attention.output.LayerNorm"), ("ln2", "output.LayerNorm")):
            p[f"l{i}.{short}_g"] = t(base + hf + ".weight")
            p[f"l{i}.{short}_b"] = t(base + hf + ".bias")
    return p


def gpt2_plain_params(w: dict[str, np.ndarray], n_layers: int) -> dict[str, torch.Tensor]:
    """Map HF GPT-2 names (Conv1D weights already (in, out)) to the runner's names."""
    t = lambda k: torch.from_numpy(np.asarray(w[k], dtype=np.float64))  # noqa: E731
    p = {"word": t("transformer.wte.weight"), "pos": t("transformer.wpe.weight"),
         "lnf_g": t("transformer.ln_f.weight"), "lnf_b": t("transformer.ln_f.bias")}
    names = {"qkv": "attn.c_attn", "o": "attn.c_proj", "fc": "mlp.c_fc", "out": "mlp.c_proj",
             "ln1": "ln_1", "ln2": "ln_2"}
    for i in range(n_layers):
        for short, hf in names.items():
            suffix = ("_g", "_b") if short.startswith("ln") else ("_w", "_b")
            p[f"l{i}.{short}{suffix[0]}"] = t(f"transformer.h.{i}.{hf}.weight")
            p[f"l{i}.{short}{suffix[1]}"] = t(f"transformer.h.{i}.{hf}.bias")
    return p


def load_workload(path: Path) -> tuple[dict, Path]:
    """The workload's json (validated) and the path of its npz."""
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise RunnerError(f"cannot read workload {path}: {exc}") from exc
    need = ("name", "arch", "vocab_size", "hidden", "n_layers", "n_heads", "norm_eps", "seq_len", "npz")
    missing = [k for k in need if k not in cfg]
    if missing:
        raise RunnerError(f"workload {path} lacks {', '.join(missing)}")
    if cfg["arch"] not in ("bert", "gpt2"):
        raise RunnerError(f"workload {path}: arch {cfg['arch']!r} is not one CrypTen's runner expresses (bert, gpt2)")
    return cfg, Path(path).parent / cfg["npz"]


# ---------------------------------------------------------------- 3-party launch and byte accounting
def sent_elements(name: str, args: tuple, kwargs: dict, rank: int, world: int) -> float:
    """Elements this party sends in one communicator call, in CrypTen's own model of that collective."""
    def numel(obj) -> int:
        return sum(x.nelement() for x in obj) if isinstance(obj, (list, tuple)) else obj.nelement()

    root = args[1] if len(args) > 1 else kwargs.get("src", kwargs.get("dst"))
    if name in ("send", "isend", "all_reduce"):
        return numel(args[0])
    if name == "all_gather":
        return (world - 1) * numel(args[0])
    if name == "broadcast":
        return (world - 1) * numel(args[0]) if root == rank else 0
    if name in ("gather", "reduce"):
        return numel(args[0]) if root != rank else 0
    if name == "scatter":
        return sum(x.nelement() for i, x in enumerate(args[0]) if i != rank) if root == rank else 0
    if name == "send_obj":
        return sys.getsizeof(args[0]) / BYTES_PER_ELEMENT
    if name == "broadcast_obj":
        return (world - 1) * sys.getsizeof(args[0]) / BYTES_PER_ELEMENT if root == rank else 0
    return 0


COUNTED_CALLS = ("send", "isend", "all_reduce", "all_gather", "broadcast", "gather", "reduce", "scatter",
                 "send_obj", "broadcast_obj")


def install_sent_counter(counter: list[float]) -> None:
    """Wrap the CrypTen communicator's calls so counter[0] accumulates the elements this party sends."""
    from crypten.communicator.distributed_communicator import DistributedCommunicator as Comm

    for name in COUNTED_CALLS:
        inner = getattr(Comm, name)

        def wrapped(self, *args, _inner=inner, _name=name, **kwargs):
            counter[0] += sent_elements(_name, args, kwargs, self.get_rank(), self.get_world_size())
            return _inner(self, *args, **kwargs)

        setattr(Comm, name, wrapped)


@dataclass(frozen=True)
class Job:
    """What each party runs: a function of (rank, counter) returning a picklable dict, and the torch threads."""

    fn: Callable[[int, list[float]], dict]
    threads: int = 1


def _party(rank: int, job: Job, rendezvous: str, results) -> None:
    """One party's process: init CrypTen over gloo, run the job, report to the parent."""
    os.environ.update(WORLD_SIZE=str(WORLD_SIZE), RANK=str(rank), RENDEZVOUS=f"file://{rendezvous}",
                      DISTRIBUTED_BACKEND="gloo")
    torch.set_num_threads(job.threads)
    try:
        import crypten

        crypten.init()
        crypten.cfg.communicator.verbose = True
        counter = [0.0]
        install_sent_counter(counter)
        out = job.fn(rank, counter)
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        results.put((rank, "ok", out))
        crypten.uninit()
    except BaseException as exc:  # report any failure to the parent, which exits non-zero
        traceback.print_exc(file=sys.stderr)
        results.put((rank, "error", f"{type(exc).__name__}: {exc}"))


def run_parties(job: Job) -> list[dict]:
    """Run `job` in 3 forked CrypTen parties; results by rank, or RunnerError with the first party's failure."""
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="crypten-rdv-") as tmp:
        procs = [ctx.Process(target=_party, args=(r, job, f"{tmp}/rdv", results)) for r in range(WORLD_SIZE)]
        for p in procs:
            p.start()
        got: dict[int, dict] = {}
        try:
            deadline = time.monotonic() + PARTY_TIMEOUT_S
            while len(got) < WORLD_SIZE:
                try:
                    rank, status, payload = results.get(timeout=5.0)
                except queue_mod.Empty:
                    if time.monotonic() > deadline:
                        raise RunnerError(f"parties did not finish within {PARTY_TIMEOUT_S:.0f} s") from None
                    dead = [p for p in procs if p.exitcode not in (None, 0)]
                    if dead:
                        raise RunnerError(f"a CrypTen party died (exit code {dead[0].exitcode})") from None
                    continue
                if status != "ok":
                    raise RunnerError(f"CrypTen party {rank} failed: {payload}")
                got[rank] = payload
        finally:
            for p in procs:
                p.join(timeout=30 if len(got) == WORLD_SIZE else 1)
                if p.is_alive():
                    p.terminate()
                    p.join()
    return [got[r] for r in range(WORLD_SIZE)]


def comm_snapshot(counter: list[float]) -> tuple[float, float, int]:
    """(elements sent by this party, CrypTen's byte counter, CrypTen's round counter) so far."""
    import crypten.communicator as comm

    stats = comm.get().get_communication_stats()
    return counter[0], float(stats["bytes"]), int(stats["rounds"])


def timed_runs(fn: Callable[[], Any], counter: list[float], repeats: int) -> dict:
    """Run fn `repeats` times between barriers; per run: seconds, bytes sent, CrypTen bytes, CrypTen rounds."""
    import crypten.communicator as comm

    runs, last = [], None
    for _ in range(repeats):
        comm.get().barrier()
        sent0, raw0, rounds0 = comm_snapshot(counter)
        t0 = time.perf_counter()
        last = fn()
        seconds = time.perf_counter() - t0
        sent1, raw1, rounds1 = comm_snapshot(counter)
        runs.append({"seconds": seconds, "bytes_sent": (sent1 - sent0) * BYTES_PER_ELEMENT,
                     "bytes_crypten": raw1 - raw0, "rounds": rounds1 - rounds0})
    return {"runs": runs, "value": last}


def open_f64(x) -> torch.Tensor:
    """Open a CrypTen tensor to all parties and decode it in float64 (CrypTen's own decode rounds to float32)."""
    shared = x._tensor
    return shared.reveal().double() / float(shared.encoder.scale)


def crypten_config() -> dict:
    """The CrypTen settings this run used (read from crypten.cfg inside a party)."""
    import crypten

    f = crypten.cfg.functions
    return {
        "protocol": "CrypTen 3-party additive arithmetic sharing (binary sharing for comparisons), Beaver products",
        "provider": str(crypten.cfg.mpc.provider), "active_security": bool(crypten.cfg.mpc.active_security),
        "world_size": WORLD_SIZE, "ring_bits": 64, "fractional_bits": int(crypten.cfg.encoder.precision_bits),
        "exp_iterations": int(f.exp_iterations), "reciprocal": f"{f.reciprocal_method}, {f.reciprocal_nr_iters} iters",
        "inv_sqrt": f"Newton-Raphson, {LN_SQRT_ITERS} iters in LayerNorm (CrypTen's default {f.sqrt_nr_iters})",
        "max_method": str(f.max_method), "sigmoid_tanh_method": str(f.sigmoid_tanh_method),
        "gelu": f"tanh formula, CrypTen's tanh on the argument clamped to +-{GELU_TANH_CLAMP:g} (hardtanh)",
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
            builder = bert_plain_params if cfg["arch"] == "bert" else gpt2_plain_params
            plain = builder(w, int(cfg["n_layers"]))
            shapes = {k: tuple(v.shape) for k, v in plain.items()}
        shapes = comm.get().broadcast_obj(shapes, WEIGHTS_PARTY)  # public metadata, before the timed runs
        onehot = torch.zeros(seq, vocab, dtype=torch.float64)
        if rank == TOKENS_PARTY:
            with np.load(npz, allow_pickle=False) as z:
                ids = torch.from_numpy(z["input_ids"]).reshape(-1)
            if ids.numel() != seq or int(ids.max()) >= vocab or int(ids.min()) < 0:
                raise RunnerError(f"input_ids {tuple(ids.shape)} do not fit seq_len {seq} and vocab {vocab}")
            onehot = torch.nn.functional.one_hot(ids, vocab).to(torch.float64)
        t0 = time.perf_counter()
        p = {k: crypten.cryptensor(plain[k] if plain is not None else torch.zeros(s), src=WEIGHTS_PARTY)
             for k, s in shapes.items()}
        x = crypten.cryptensor(onehot, src=TOKENS_PARTY)
        input_seconds = time.perf_counter() - t0
        forward = bert_forward if cfg["arch"] == "bert" else gpt2_forward
        print(f"crypten party {rank}: inputs shared in {input_seconds:.1f} s, running {repeats} forward(s)",
              file=sys.stderr)
        res = timed_runs(lambda: forward(p, x, cfg), counter, repeats)
        out = open_f64(res["value"])
        if cfg["arch"] == "bert":
            out = out.unsqueeze(0)  # (1, T, H)
        return {"runs": res["runs"], "input_seconds": input_seconds, "config": crypten_config(),
                "output": out.numpy() if rank == 0 else None}

    return fn


def secure_op(name: str, xs: list):
    """Op `name` on shared operands with CrypTen (gelu: tanh formula; reciprocal: input known positive)."""
    x = xs[0]
    if name == "reciprocal":
        return positive_reciprocal(x)
    ops: dict[str, Callable[[], Any]] = {
        "matmul": lambda: x.matmul(xs[1]), "mul": lambda: x * xs[1], "lt": lambda: x.lt(xs[1]),
        "relu": lambda: x.relu(), "max": lambda: x.max(dim=-1)[0], "exp": lambda: x.exp(),
        "softmax": lambda: x.softmax(-1), "gelu": lambda: gelu_tanh(x),
        "layernorm": lambda: layer_norm(x, None, None, OPS_LAYERNORM_EPS),
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
            res = timed_runs(lambda: secure_op(spec.name, shared), counter, repeats)
            got = open_f64(res["value"])
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
        raise RunnerError("crypten is not installed in this python; run me with the CrypTen venv's python") from exc


def summarize_runs(parties: list[list[dict]]) -> dict:
    """Median seconds (per run, the slowest party's), bytes per party and max rounds, from per-run records."""
    seconds = [max(runs[k]["seconds"] for runs in parties) for k in range(len(parties[0]))]
    return {
        "seconds": statistics.median(seconds),
        "seconds_all": seconds,
        "bytes_per_party": [int(runs[-1]["bytes_sent"]) for runs in parties],
        "bytes_per_party_crypten_stats": [int(runs[-1]["bytes_crypten"]) for runs in parties],
        "rounds": max(int(runs[-1]["rounds"]) for runs in parties),
    }


ROUNDS_WHAT = ("CrypTen communicator calls (one per collective: all_reduce, all_gather, broadcast, scatter, gather, "
               "...) in one run, max over parties; each is at least one network round")


def run_ops(repeats: int, threads: int, seed: int) -> dict:
    """Time every op in OPS across 3 parties and compare with float64 torch."""
    version = anchor_version()
    results = run_parties(Job(_ops_party(OPS, repeats, seed), threads))
    ops = []
    for k, spec in enumerate(OPS):
        summary = summarize_runs([r["ops"][k]["runs"] for r in results])
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
    results = run_parties(Job(_model_party(workload, repeats), threads))
    np.save(output_npy, np.asarray(results[0]["output"], dtype=np.float64))
    summary = summarize_runs([r["runs"] for r in results])
    gelu = "tanh formula (BERT's erf GeLU approximated by it)" if cfg["arch"] == "bert" else "tanh formula"
    notes = (NOTES_PROVIDER + NOTES_BYTES + f"Model written with CrypTen tensor ops; GeLU: {gelu} with CrypTen's "
             "tanh (= 2 sigmoid(2x) - 1, sigmoid by exp and Newton-Raphson reciprocal) on its argument clamped to "
             f"+-{GELU_TANH_CLAMP:g} (CrypTen's exp overflows past GeLU inputs ~24); LayerNorm with CrypTen's inv_sqrt "
             f"at {LN_SQRT_ITERS} Newton steps (its default 3 is far off below variance 0.1; its initial guess "
             "fails above variance ~200); softmax is CrypTen's (max by log-reduction, exp, reciprocal)"
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
    except (RunnerError, OSError) as exc:
        print(f"crypten_runner: error: {exc}", file=sys.stderr)
        return 1
    print(f"crypten_runner: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
