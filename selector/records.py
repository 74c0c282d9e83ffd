"""Store rows as selector inputs: a RunRecord becomes (request, option, strategy, outcome), and back.

A row of the performance store describes one node (secure rows: the three in-process parties ran on it) and one
link. `option_of` turns it into the option the row ran on: a committee of three copies of the row's node over the
row's link (secure), or a worker (plaintext). The store has no head counts or MLP widths; `MODEL_SHAPES` holds those
of the sweep's models (secureinfer/lab/bench/sweep/models.py; tests/selector checks they agree) and other rows fall back
to the cost model's defaults.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterable

from secureinfer.perfstore import RunRecord, Store, run_key
from secureinfer.strategy import Strategy, from_json, to_json

from .features import (CommitteeOption, LinkFeatures, NodeFeatures, Option, Outcome, Plan, RequestFeatures,
                       WorkerOption)

# model -> (n_heads, n_kv_heads, intermediate)
MODEL_SHAPES: dict[str, tuple[int, int, int]] = {
    "tiny-gpt2": (4, 4, 256),
    "tiny-llama": (8, 2, 128),
    "tiny-bert": (4, 4, 128),
    "small-gpt2": (4, 4, 512),
    "small-llama": (8, 2, 256),
    "small-bert": (4, 4, 256),
    "gpt2-base-2L": (12, 12, 3072),
    "gpt2-base": (12, 12, 3072),
    "minilm": (12, 12, 1536),
    "smollm2": (9, 3, 1536),
}


def read_records(path: str | Path, *, status: str = "ok") -> list[RunRecord]:
    """The rows of a store file, opened read-only (a training set is never modified by reading it)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"no performance store at {path}")
    conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True, check_same_thread=False)
    try:
        return Store(Path(path), conn).query(status=status)
    finally:
        conn.close()


def load_per_cpu(r: RunRecord) -> float | None:
    """The 1-minute load average per CPU while the row was measured (env_json.loadavg_1m), if recorded."""
    try:
        load = json.loads(r.env_json or "{}").get("loadavg_1m")
    except (ValueError, AttributeError):
        return None
    return float(load) / max(r.cpu_count, 1) if isinstance(load, (int, float)) else None


def quiet(records: Iterable[RunRecord], max_load_per_cpu: float = 1.75) -> list[RunRecord]:
    """Rows measured while the machine was not overloaded (load per CPU at most `max_load_per_cpu`; rows without a
    recorded load are kept). On a shared 2-core box a load of 8 makes timings meaningless."""
    out = []
    for r in records:
        load = load_per_cpu(r)
        if load is None or load <= max_load_per_cpu:
            out.append(r)
    return out


def request_of(r: RunRecord) -> RequestFeatures:
    """The request a row measured (no hard constraints: the row says nothing about them)."""
    heads, kv, inter = MODEL_SHAPES.get(r.model, (0, 0, 0))
    task = r.task if r.task in ("embed", "generate", "logits") else "generate"
    return RequestFeatures(model=r.model, arch=r.arch, n_params=r.n_params or 0, n_layers=r.n_layers or 1,
                           hidden=r.hidden or 1, vocab=r.vocab or 1, seq_len=r.seq_len, batch=r.batch,
                           gen_tokens=r.gen_tokens, task=task, secret_prompt=r.mode == "secure",
                           open_model=True, n_heads=heads, n_kv_heads=kv, intermediate=inter)


def node_of(r: RunRecord, suffix: str = "", cpu_gflops: float = 0.0) -> NodeFeatures:
    """The node a row ran on; a CPU row's own speed is its CPU speed, a GPU row's CPU speed is `cpu_gflops`
    (host_cpu_gflops: the same host's CPU rows; 0: unknown)."""
    cpu = r.matmul_gflops if not r.device.startswith("cuda") else cpu_gflops
    return NodeFeatures(node_id=f"{r.host}{suffix}", device=r.device, cpu_count=r.cpu_count,
                        matmul_gflops=r.matmul_gflops, memory_bytes=r.memory_bytes, host=r.host, cpu_gflops=cpu)


def host_cpu_gflops(records: Iterable[RunRecord]) -> dict[str, float]:
    """Host label -> median float32 matmul speed of its CPU rows (the CPU speed of a GPU host that also measured
    CPU parties)."""
    speeds: dict[str, list[float]] = {}
    for r in records:
        if not r.device.startswith("cuda") and r.matmul_gflops and r.matmul_gflops > 0:
            speeds.setdefault(r.host, []).append(float(r.matmul_gflops))
    return {h: sorted(v)[len(v) // 2] for h, v in speeds.items()}


def option_of(r: RunRecord) -> Option:
    """The committee (three parties on the row's node, over the row's link) or worker the row ran on."""
    link = LinkFeatures(r.latency_s or 0.0, r.bandwidth_bytes_per_s)
    if r.mode == "secure":
        return CommitteeOption(f"{r.host}-committee", tuple(node_of(r, f"#{i}") for i in range(3)), link)
    return WorkerOption(node_of(r), link)


def strategy_of(r: RunRecord) -> Strategy:
    return from_json(r.strategy_json)


def outcome_of(r: RunRecord) -> Outcome:
    return Outcome(total_s=r.total_s or 0.0, prefill_s=r.prefill_s, per_token_s=r.per_token_s,
                   bytes_per_party=r.bytes_per_party_max, rounds=r.rounds, error=r.max_abs_err,
                   ok=r.status == "ok")


def samples(records: Iterable[RunRecord]) -> list[tuple[RequestFeatures, Option, Strategy, float]]:
    """(request, option, strategy, total_s) of every measured row with a positive total."""
    return [(request_of(r), option_of(r), strategy_of(r), r.total_s) for r in records
            if r.status == "ok" and r.total_s and r.total_s > 0]


def median_samples(data: Iterable[tuple[RequestFeatures, Option, Strategy, float]]
                   ) -> list[tuple[RequestFeatures, Option, Strategy, float]]:
    """One sample per measured configuration (request, host, device, link, strategy), at the median of its repeats:
    noise-robust training targets (a millisecond plaintext row measured under load is one repeat among several, not
    a training point of its own)."""
    groups: dict[tuple, list[tuple[RequestFeatures, Option, Strategy, float]]] = {}
    for item in data:
        request, option, strategy, _ = item
        nodes = option.nodes if isinstance(option, CommitteeOption) else (option.node,)
        key = (request, tuple((n.host or n.node_id, n.device) for n in nodes), option.link, strategy.name)
        groups.setdefault(key, []).append(item)
    out = []
    for items in groups.values():
        totals = sorted(t for *_, t in items)
        mid = len(totals) // 2
        median = totals[mid] if len(totals) % 2 else 0.5 * (totals[mid - 1] + totals[mid])
        out.append((*items[0][:3], median))
    return out


def record_of(plan: Plan, outcome: Outcome, request: RequestFeatures, *, host: str = "") -> RunRecord:
    """A store row for a served request (what `Selector.observe` appends): the plan's slowest node stands for the
    node features, the option's link for the link."""
    option = plan.option
    nodes = option.nodes if isinstance(option, CommitteeOption) else (option.node,)
    node = min(nodes, key=lambda n: n.gflops_for(plan.strategy.device))
    if not plan.strategy.device.startswith("cuda") and node.device.startswith("cuda"):  # CPU parties on a GPU node
        node = replace(node, device="cpu", matmul_gflops=node.gflops_for("cpu"))
    now = time.time()
    key = run_key(kind="served", arm=plan.arm, model=request.model, seq=request.seq_len, batch=request.batch,
                  gen=request.gen_tokens, t=repr(now))
    return RunRecord(
        key=key, timestamp=now, model=request.model, arch=request.arch, n_params=request.n_params,
        n_layers=request.n_layers, hidden=request.hidden, vocab=request.vocab, seq_len=request.seq_len,
        batch=request.batch, gen_tokens=request.gen_tokens, task=request.task, device=node.device,
        cpu_count=node.cpu_count, matmul_gflops=node.matmul_gflops, memory_bytes=node.memory_bytes,
        host=host or node.host or node.node_id, latency_s=option.link.latency_s,
        bandwidth_bytes_per_s=option.link.bandwidth_bytes_per_s, mode=plan.strategy.mode,
        strategy_name=plan.strategy.name, strategy_json=to_json(plan.strategy),
        status="ok" if outcome.ok else "error", error=None if outcome.ok else "served request failed",
        prefill_s=outcome.prefill_s, per_token_s=outcome.per_token_s, total_s=outcome.total_s,
        rounds=outcome.rounds, bytes_per_party_max=None if outcome.bytes_per_party is None
        else int(outcome.bytes_per_party), max_abs_err=outcome.error)
