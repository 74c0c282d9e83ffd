"""The analytic cold-start cost model: latency = compute / device speed + rounds x RTT + bytes / bandwidth.

Secure plans use the engine's own counts: opcosts.py measures every op's rounds and bytes per element once per
(profile, fractional bits, weight mode) on the in-process runtime, and `secure_counts` composes them with the
model's shapes (layers, hidden, heads, MLP width, vocabulary, sequence length, batch, generated tokens) step by step
exactly as mpc/models/{bert,gpt2,llama}.py run them: a decoder's prefill on the prompt (last position only), then
one step per further token against the growing secret KV cache. Latency per step:
    rounds * (one-way latency + per-round overhead) + bytes / bandwidth + bytes * local cost per byte
    + ring multiply-adds / (matmul speed * ring efficiency) + per-step overhead + one client round trip
Plaintext plans: FLOPs / (matmul speed * precision efficiency) + a per-layer launch overhead per forward + the
client hop, times a per-variant factor (int8, static cache, CUDA graphs, batching, speculation).
The constants (overheads, efficiencies) have stated priors and `calibrate(records)` fits them to measured rows by
non-negative least squares per device kind; the round and byte counts themselves are never fitted.

    cm = CostModel()
    cm.predict(request, option, SecureStrategy(profile="lean")).total_s
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Iterable

import numpy as np

from secureinfer.strategy import PlaintextStrategy, SecureStrategy, Strategy

from .features import CommitteeOption, Option, Prediction, RequestFeatures, SelectorError, WorkerOption
from .opcosts import OpCost, OpKey, levels, measure_table

DEFAULT_GFLOPS = 20.0  # a node that reports no matmul speed


@dataclass(frozen=True)
class Shape:
    """The shapes a forward depends on (RequestFeatures with defaults filled in)."""

    arch: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    inter: int
    vocab: int
    n_params: int

    @classmethod
    def of(cls, r: RequestFeatures) -> "Shape":
        heads = r.n_heads or max(1, r.hidden // 64)
        kv = r.n_kv_heads or heads
        inter = r.intermediate or 4 * r.hidden
        return cls(r.arch, r.n_layers, r.hidden, heads, kv, max(1, r.hidden // heads), inter, r.vocab,
                   max(r.n_params, 1))


@dataclass(frozen=True)
class Counts:
    """What a secure request costs the busiest party, summed over its steps."""

    rounds: float
    bytes: float  # per party
    macs: float  # ring multiply-adds per party (local matmuls)
    steps: int


class _Acc:
    """Accumulates rounds, bytes and multiply-adds of one step's ops."""

    def __init__(self, table: dict[str, OpCost]) -> None:
        self.table, self.rounds, self.bytes, self.macs = table, 0.0, 0.0, 0.0

    def op(self, name: str, n: float, rows: float = 0.0, rounds_times: float = 1.0) -> None:
        cost = self.table[name]
        self.rounds += cost.rounds * rounds_times
        self.bytes += cost.bytes(n, rows)

    def dense(self, rows: float, k: int, n: int, public: bool) -> None:
        self.op("trunc_pub" if public else "trunc", rows * n)
        self.macs += rows * k * n * (1 if public else 2)


def _attention(a: _Acc, s: Shape, b: int, t_new: int, t_keys: int, *, causal: bool, rope: bool, last: bool,
               public: bool) -> None:
    """Fused QKV, rotary, scores, exact max, exp, reciprocal, e @ v, 1/sum, output projection (blocks.attention)."""
    h, hkv, d = s.heads, s.kv_heads, s.head_dim
    a.dense(b * t_new, s.hidden, (h + 2 * hkv) * d, public)
    if rope:
        a.op("rope", b * (h + hkv) * t_new * d)
    tq = 1 if last else t_new
    rows = b * h * tq
    a.op("trunc", rows * t_keys)  # scores
    a.macs += 2 * rows * t_keys * d
    a.op("cmp", rows * (t_keys - 1), rounds_times=levels(t_keys))
    past = t_keys - t_new
    if causal:  # query i (absolute position past + i) sees past + i + 1 keys; the last one sees all
        kept = t_keys if last else t_new * past + t_new * (t_new + 1) / 2
    else:
        kept = tq * t_keys
    a.op("exp", b * h * kept)
    a.op("recip", rows)
    a.op("trunc", rows * d)  # e @ v
    a.macs += 2 * rows * t_keys * d
    a.op("prod30", rows * d)
    a.dense(b * tq, h * d, s.hidden, public)


def _norm(a: _Acc, s: Shape, rows: float) -> None:
    a.op("rmsnorm" if s.arch == "llama" else "layernorm", rows * s.hidden, rows)


def _step(a: _Acc, s: Shape, b: int, t_new: int, past: int, *, last_only: bool, public: bool) -> None:
    """One forward of `t_new` positions after `past` cached ones (mpc/models/{bert,gpt2,llama}.py)."""
    if not public:
        a.op("reshare", b * t_new * s.hidden)  # one-hot @ secret table
    decoder = s.arch != "bert"
    if s.arch == "bert":
        _norm(a, s, b * t_new)
    rows = b * t_new
    for n in range(s.layers):
        last = last_only and n == s.layers - 1
        if decoder:
            _norm(a, s, rows)
        _attention(a, s, b, t_new, past + t_new, causal=decoder, rope=s.arch == "llama", last=last, public=public)
        rows = b if last else rows
        _norm(a, s, rows)
        if s.arch == "llama":
            a.dense(rows, s.hidden, 2 * s.inter, public)
            a.op("silu", rows * s.inter)
            a.op("gate_mul", rows * s.inter)
        else:
            a.dense(rows, s.hidden, s.inter, public)
            a.op("gelu", rows * s.inter)
        a.dense(rows, s.inter, s.hidden, public)
        if s.arch == "bert":
            _norm(a, s, rows)
    if s.arch == "bert":
        a.op("trunc", b * s.hidden)  # mean pooling
        a.op("output", b * s.hidden)
        return
    _norm(a, s, rows)
    a.dense(rows, s.hidden, s.vocab, public)  # LM head
    a.op("output", rows * s.vocab)


def decode_steps(r: RequestFeatures) -> list[tuple[int, int, bool]]:
    """(new positions, cached positions, last position only) per forward of the request."""
    if r.arch == "bert" or r.task == "embed":
        return [(r.seq_len, 0, False)]
    if r.task == "logits" or r.gen_tokens == 0:
        return [(r.seq_len, 0, False)]
    return [(r.seq_len, 0, True)] + [(1, r.seq_len + k, True) for k in range(r.gen_tokens - 1)]


@dataclass(frozen=True)
class DeviceConstants:
    """One device kind's cost constants (priors; `CostModel.calibrate` refits them)."""

    round_s: float  # software overhead per communication round (threads, kernel launches, framing)
    byte_s: float  # local work per byte sent (PRG, packing, elementwise ring ops)
    ring_efficiency: float  # ring (int64) matmul speed / float32 matmul speed
    step_s: float  # fixed overhead per secure step
    layer_s: float  # plaintext: launch overhead per layer per forward
    fwd_s: float  # plaintext: fixed overhead per forward


PRIORS: dict[str, DeviceConstants] = {
    # 2-core CPU: ~1 ms per round of 5 Python threads; int64 matmul ~13 GOP/s against ~38 GFLOP/s float32.
    "cpu": DeviceConstants(round_s=1.0e-3, byte_s=5e-8, ring_efficiency=0.35, step_s=5e-3, layer_s=2e-4,
                           fwd_s=1e-3),
    # H200: ring matmuls as float64 limb GEMMs (~0.15 of float32), kernel launches dominate small steps.
    "cuda": DeviceConstants(round_s=3.0e-3, byte_s=2e-9, ring_efficiency=0.15, step_s=1e-2, layer_s=1e-4,
                            fwd_s=5e-4),
}
# Plaintext FLOP efficiency by precision, relative to the node's float32 matmul speed.
PRECISION_EFFICIENCY = {("cpu", "fp64"): 0.5, ("cpu", "fp32"): 1.0, ("cpu", "bf16"): 0.25,
                        ("cuda", "fp64"): 0.05, ("cuda", "fp32"): 1.0, ("cuda", "bf16"): 4.0,
                        ("cuda", "fp16"): 4.0}


def device_kind(device: str) -> str:
    """'cuda' for any CUDA device description or strategy device, else 'cpu'."""
    return "cuda" if device.startswith("cuda") else "cpu"


def option_gflops(option: Option, kind: str = "cuda") -> float:
    """The slowest node's float32 matmul speed on device kind `kind` (a committee runs at the pace of its slowest
    party; a CPU strategy on a GPU node runs at that node's CPU speed)."""
    nodes = option.nodes if isinstance(option, CommitteeOption) else (option.node,)
    speeds = (n.gflops_for(device_kind(kind)) for n in nodes)
    return min((g if g > 0 else DEFAULT_GFLOPS) for g in speeds)


def _link_terms(option: Option) -> tuple[float, float]:
    """(one-way latency, bandwidth in bytes/s; inf when unlimited)."""
    bw = option.link.bandwidth_bytes_per_s
    return option.link.latency_s, (bw if bw and bw > 0 else math.inf)


@dataclass
class CostModel:
    """Rounds, bytes and latency of a plan from the engine's op table and the model's shapes (module docstring).

    Op tables are measured lazily, once per (profile, frac_bits, public_weights), and cached on this object."""

    constants: dict[str, DeviceConstants] = field(default_factory=lambda: dict(PRIORS))
    plain_factors: dict[str, float] = field(default_factory=dict)  # variant name (no device) -> calibrated factor
    _tables: dict[OpKey, dict[str, OpCost]] = field(default_factory=dict, repr=False)

    # --- counts

    def table(self, key: OpKey) -> dict[str, OpCost]:
        if key not in self._tables:
            self._tables[key] = measure_table(key)
        return self._tables[key]

    def secure_counts(self, request: RequestFeatures, strategy: SecureStrategy) -> Counts:
        """Rounds, bytes per party and ring multiply-adds of every step of a secure request."""
        table = self.table(OpKey(strategy.profile, strategy.frac_bits))
        s = Shape.of(request)
        rounds = nbytes = macs = 0.0
        steps = decode_steps(request)
        for t_new, past, last in steps:
            a = _Acc(table)
            _step(a, s, request.batch, t_new, past, last_only=last, public=strategy.public_weights)
            rounds, nbytes, macs = rounds + a.rounds, nbytes + a.bytes, macs + a.macs
        return Counts(rounds, nbytes, macs, len(steps))

    @staticmethod
    def plaintext_flops(request: RequestFeatures) -> tuple[float, int]:
        """(FLOPs of every forward, number of forwards) of a plaintext request."""
        s = Shape.of(request)
        body = max(s.n_params - s.vocab * s.hidden, s.layers * 4 * s.hidden * s.hidden)
        flops = 0.0
        steps = decode_steps(request)
        for t_new, past, last in steps:
            tokens = request.batch * t_new
            flops += 2.0 * body * tokens + 4.0 * s.layers * tokens * (past + t_new) * s.hidden
            if s.arch != "bert":
                flops += 2.0 * request.batch * (1 if last else t_new) * s.hidden * s.vocab
        return flops, len(steps)

    # --- latency

    def features(self, request: RequestFeatures, option: Option, strategy: Strategy) -> dict[str, float]:
        """The analytic terms of a plan's latency (seconds each, before the device constants) for calibration."""
        lat, bw = _link_terms(option)
        speed = option_gflops(option, strategy.device) * 1e9
        if isinstance(strategy, SecureStrategy):
            c = self.secure_counts(request, strategy)
            return {"rounds": c.rounds, "bytes": c.bytes, "macs_s": c.macs / speed, "steps": c.steps,
                    "link_s": c.rounds * lat + c.bytes / bw + c.steps * 2 * lat}
        flops, fwd = self.plaintext_flops(request)
        kind = device_kind(strategy.device)
        eff = PRECISION_EFFICIENCY.get((kind, strategy.precision), 1.0)
        out_bytes = 4.0 * request.batch * (request.hidden if request.arch == "bert" else request.vocab)
        return {"flops_s": flops / (speed * eff), "layer_fwd": request.n_layers * fwd, "fwd": fwd,
                "link_s": fwd * (2 * lat + out_bytes / bw)}

    def predict(self, request: RequestFeatures, option: Option, strategy: Strategy) -> Prediction:
        """Latency, rounds and bytes per party of `strategy` for `request` on `option`."""
        _check_placement(option, strategy)
        f = self.features(request, option, strategy)
        k = self.constants[device_kind(strategy.device)]
        if isinstance(strategy, SecureStrategy):
            total = (f["rounds"] * k.round_s + f["bytes"] * k.byte_s + f["macs_s"] / k.ring_efficiency
                     + f["steps"] * k.step_s + f["link_s"])
            return Prediction(total_s=total, bytes_per_party=f["bytes"], rounds=f["rounds"], source="cost_model")
        factor = self.plain_factors.get(variant(strategy), 1.0)
        total = factor * (f["flops_s"] + f["layer_fwd"] * k.layer_s + f["fwd"] * k.fwd_s) + f["link_s"]
        return Prediction(total_s=total, source="cost_model")

    # --- calibration

    def calibrate(self, samples: Iterable[tuple[RequestFeatures, Option, Strategy, float]]) -> "CostModel":
        """Refit the device constants (non-negative least squares on relative error, per device kind) and the
        plaintext variant factors to measured (request, option, strategy, total_s) samples; returns self."""
        rows: dict[tuple[str, str], list[tuple[dict[str, float], float, Strategy]]] = {}
        for request, option, strategy, total in samples:
            if total is None or not total > 0:
                continue
            kind = device_kind(strategy.device)
            rows.setdefault((kind, strategy.mode), []).append((self.features(request, option, strategy), total,
                                                                strategy))
        for (kind, mode), items in rows.items():
            if mode == "secure" and len(items) >= 6:
                self._fit_secure(kind, items)
        for (kind, mode), items in rows.items():
            if mode == "plaintext" and len(items) >= 4:
                self._fit_plain(kind, items)
        return self

    def _fit_secure(self, kind: str, items: list) -> None:
        """Fit the per-round, per-byte and per-step overheads; the ring efficiency stays at its prior (the small
        sweep rows spend almost nothing in matmuls, so they cannot pin it down)."""
        old = self.constants[kind]
        names = ("rounds", "bytes", "steps")
        x = np.array([[f[n] for n in names] for f, _, _ in items])
        y = np.array([t - f["link_s"] - f["macs_s"] / old.ring_efficiency for f, t, _ in items])
        t = np.array([t for _, t, _ in items])
        coef = robust_nnls(x, y, t)
        self.constants[kind] = replace(old, round_s=float(coef[0]), byte_s=float(coef[1]), step_s=float(coef[2]))

    def _fit_plain(self, kind: str, items: list) -> None:
        x = np.array([[f["layer_fwd"], f["fwd"]] for f, _, _ in items])
        flops = np.array([f["flops_s"] for f, _, _ in items])
        y = np.array([t - f["link_s"] for f, t, _ in items])
        coef = robust_nnls(x, y - flops, np.array([t for _, t, _ in items]))
        old = self.constants[kind]
        self.constants[kind] = replace(old, layer_s=float(max(coef[0], 1e-6)), fwd_s=float(coef[1]))
        by_variant: dict[str, list[float]] = {}
        for f, t, strategy in items:
            base = f["flops_s"] + f["layer_fwd"] * coef[0] + f["fwd"] * coef[1]
            if base > 0 and t - f["link_s"] > 0:
                by_variant.setdefault(variant(strategy), []).append(math.log((t - f["link_s"]) / base))
        for name, logs in by_variant.items():
            self.plain_factors[name] = float(math.exp(np.median(logs)))


def variant(strategy: Strategy) -> str:
    """A strategy's name without its device (the plaintext calibration's key), e.g. 'plain-fp32-int8'."""
    return strategy.name.rsplit("-", 1)[0]


def _check_placement(option: Option, strategy: Strategy) -> None:
    if isinstance(strategy, SecureStrategy) and not isinstance(option, CommitteeOption):
        raise SelectorError(f"{strategy.name} needs a committee of three nodes, not a single worker")
    if isinstance(strategy, PlaintextStrategy) and not isinstance(option, WorkerOption):
        raise SelectorError(f"{strategy.name} runs on one plaintext worker, not a committee")


def robust_nnls(x: np.ndarray, y: np.ndarray, total: np.ndarray, outlier: float = 1.0) -> np.ndarray:
    """Non-negative fit of y ~ x @ coef in relative terms (rows weighted by 1 / total), refitted once without the
    rows the first fit misses by more than a factor e^outlier (the shared 2-core box's timing outliers)."""
    w = 1.0 / total
    coef = nnls(x * w[:, None], y * w)
    pred = total - y + x @ coef  # the model's total
    keep = np.abs(np.log(np.maximum(pred, 1e-12) / total)) <= outlier
    if keep.sum() >= x.shape[1] + 2 and not keep.all():
        coef = nnls(x[keep] * w[keep, None], y[keep] * w[keep])
    return coef


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Non-negative least squares for a few columns: the best unconstrained fit over every subset of columns whose
    solution is non-negative (exact for the handful of constants fitted here)."""
    best, best_err = np.zeros(a.shape[1]), float(np.sum(b * b))
    for k in range(1, a.shape[1] + 1):
        for cols in itertools.combinations(range(a.shape[1]), k):
            sol, *_ = np.linalg.lstsq(a[:, cols], b, rcond=None)
            if np.all(sol >= 0):
                x = np.zeros(a.shape[1])
                x[list(cols)] = sol
                err = float(np.sum((a @ x - b) ** 2))
                if err < best_err:
                    best, best_err = x, err
    return best
