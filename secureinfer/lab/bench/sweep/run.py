"""The sweep driver: measure a list of runs into a store (resumable, with a progress bar), re-key a store, and the
`secureinfer bench sweep` entry point."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .accuracy import reference
from .env import Node, key_for, measure_node
from .grid import Case, Link, Run, build_grid
from .measure import _collect, measure
from .models import _random_params, _text_tokens, _tiny_config, load_model

MISSING_STORE = ("--store FILE is required: the SQLite performance store the runs are written into (created if "
                 "missing, resumed if not), e.g. --store sweep.sqlite")


def release_models() -> None:
    """Drop the loaded models and references (the next run loads its own) and return the memory to the OS."""
    load_model.cache_clear()
    reference.cache_clear()
    _text_tokens.cache_clear()
    _collect()


def warm_up(device: str) -> None:
    """One small untimed secure session on `device` (thread pools, kernels, first-call costs out of the figures)."""
    from secureinfer.mpc.models import session

    cfg = _tiny_config("gpt2")
    ids = torch.zeros(1, 4, dtype=torch.int64)
    from secureinfer.mpc.party import EngineConfig

    session.secure_generate(cfg, _random_params(cfg, 0), ids, 2, eos_token_ids=(), config=EngineConfig(device=device))


class Progress:
    """A one-line stderr progress bar with the ETA from the mean time of the runs done so far."""

    def __init__(self, total: int, enabled: bool = True, stream: Any = None) -> None:
        self.total, self.done, self.errors, self.enabled = total, 0, 0, enabled
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()

    def show(self, label: str) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        eta_text = "--:--" if math.isnan(eta) else f"{int(eta // 60):02d}:{int(eta % 60):02d}"
        text = (f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"{int(elapsed // 60):02d}:{int(elapsed % 60):02d} elapsed, ETA {eta_text}"
                f"{f', {self.errors} errors' if self.errors else ''}  {label[:60]:<60}")
        self.stream.write(text)
        self.stream.flush()

    def step(self, ok: bool) -> None:
        self.done += 1
        self.errors += 0 if ok else 1

    def close(self) -> None:
        if self.enabled:
            self.show("done")
            self.stream.write("\n")
            self.stream.flush()


@dataclass
class SweepResult:
    planned: int
    measured: int
    skipped_existing: int
    errors: int
    skipped_strategies: dict[str, str]


def run_sweep(runs: list[Run], store: Any, *, resume: bool = True, limit: int | None = None,
              host: str | None = None, progress: bool = True, skipped: dict[str, str] | None = None,
              nodes: dict[str, Node] | None = None, log: Callable[[str], None] | None = None) -> SweepResult:
    """Measure `runs` into `store` (selector.store.Store): rows already present are skipped when `resume`; at most
    `limit` new rows are measured. Skipped strategies are noted in the store's meta table."""
    for name, why in (skipped or {}).items():
        store.set_meta(f"skipped:{name}", why)
    nodes = dict(nodes or {})
    for device in sorted({r.strategy.device for r in runs}):
        if device not in nodes:
            nodes[device] = measure_node(device, host)
    todo, existing = [], 0
    have = store.keys() if resume else set()
    for run in runs:
        if key_for(run, nodes[run.strategy.device]) in have:
            existing += 1
        else:
            todo.append(run)
    if limit is not None:
        todo = todo[:max(limit, 0)]
    bar = Progress(len(todo), progress)
    errors = 0
    if todo:
        bar.show("warm-up")
        for device in sorted({r.strategy.device for r in todo if r.strategy.mode == "secure"}):
            warm_up(device)
    model = None
    for run in todo:
        if run.case.model != model:  # free the previous model, so peak memory is this model's
            release_models()
            model = run.case.model
        bar.show(run.label())
        record = measure(run, nodes[run.strategy.device])
        store.insert(record, replace=True)
        if record.status != "ok":
            errors += 1
            if log:
                log(f"\n{run.label()}: {record.error}")
        bar.step(record.status == "ok")
    bar.close()
    return SweepResult(len(runs), len(todo), existing, errors, dict(skipped or {}))


def rekey(store: Any) -> int:
    """Recompute every row's key with this version's `key_for` (after a change to the key's recipe), from the row's
    own case, strategy, link, repeat and environment columns; returns how many keys changed."""
    from secureinfer.strategy import from_json

    changed = 0
    for r in store.query():
        run = Run(Case(r.model, r.seq_len, r.batch, r.gen_tokens), from_json(r.strategy_json),
                  Link("stored", r.latency_s or 0.0, r.bandwidth_bytes_per_s), r.repeat)
        env = json.loads(r.env_json or "{}")
        node = Node(device="", description=r.device, cpu_count=r.cpu_count, matmul_gflops=r.matmul_gflops,
                    memory_bytes=r.memory_bytes, host=r.host, cpu_model=env.get("cpu_model", ""))
        key = key_for(run, node)
        if key != r.key:
            store.rename_key(r.key, key)
            changed += 1
    return changed


def _print_grid(runs: list[Run], skipped: dict[str, str], stream: Any = sys.stdout) -> None:
    for i, run in enumerate(runs):
        print(f"{i + 1:5d}  {run.label()}", file=stream)
    print(f"{len(runs)} runs", file=stream)
    for name, why in sorted(skipped.items()):
        print(f"skipped strategy {name}: {why}", file=stream)


def main(args: argparse.Namespace) -> int:
    """Entry point of `secureinfer bench sweep`."""
    from secureinfer.perfstore import StoreError, open_store

    try:
        cases = [Case.parse(c) for c in args.case] if args.case else None
        models = [m for spec in args.models for m in spec.split(",") if m] if args.models else None
        devices = [d for spec in args.device for d in spec.split(",") if d] if args.device else None
        links = [x for spec in args.link for x in spec.split(",") if x] if args.link else None
        for d in devices or []:
            if d.startswith("cuda") and not torch.cuda.is_available():
                raise ValueError(f"device {d!r} requested but torch sees no CUDA GPU")
        if args.repeat < 1:
            raise ValueError("--repeat must be at least 1")
        runs, skipped = build_grid(args.grid, models=models, devices=devices, cases=cases, links=links,
                                   repeats=args.repeat, strategy_filter=args.strategy)
    except ValueError as exc:
        print(f"secureinfer bench sweep: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        _print_grid(runs, skipped)
        return 0
    if not args.store:
        print(f"secureinfer bench sweep: {MISSING_STORE}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        store = open_store(args.store)
    except StoreError as exc:
        print(f"secureinfer bench sweep: {exc}", file=sys.stderr)
        return 2
    with store:
        print(f"sweep grid {args.grid}: {len(runs)} runs, store {args.store} ({len(store)} rows), "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr, flush=True)
        for name, why in sorted(skipped.items()):
            print(f"  skipped strategy {name}: {why}", file=sys.stderr)
        result = run_sweep(runs, store, resume=args.resume, limit=args.limit, host=args.host,
                           progress=not args.quiet, skipped=skipped,
                           log=lambda m: print(m, file=sys.stderr, flush=True))
        print(f"measured {result.measured} runs ({result.errors} errors), {result.skipped_existing} already in the "
              f"store; the store holds {len(store)} rows", file=sys.stderr)
        if args.csv:
            n = store.export_csv(args.csv)
            print(f"exported {n} rows to {args.csv}", file=sys.stderr)
    return 0
