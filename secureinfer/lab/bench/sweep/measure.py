"""Measuring one run: secure (in-process parties over a simulated link), plaintext (the float64 reference forwards of
secureinfer.plaintext.reference in the strategy's precision) or the fast plaintext engine, with peak memory, into a
RunRecord."""

from __future__ import annotations

import json
import re
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from .accuracy import accuracy_figures, reference
from .env import Node, _env, key_for
from .grid import Run, fast_engine, fast_unsupported
from .models import MODELS, load_model


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class _Peak:
    """Peak resident memory of the process during a block (Linux: VmHWM reset through /proc/self/clear_refs;
    elsewhere the process's lifetime peak) and CUDA peak allocation."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.rss_mb: float | None = None
        self.device_mb: float | None = None

    @staticmethod
    def _hwm_kb() -> int | None:
        try:
            m = re.search(r"^VmHWM:\s+(\d+)\s*kB", Path("/proc/self/status").read_text(), re.MULTILINE)
            return int(m.group(1)) if m else None
        except OSError:
            return None

    def __enter__(self) -> "_Peak":
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: Any) -> None:
        kb = self._hwm_kb()
        if kb is None:
            import resource

            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.rss_mb = kb / 1024
        if self.device.startswith("cuda"):
            self.device_mb = torch.cuda.max_memory_allocated() / 2**20


def _measure_secure(run: Run) -> dict[str, Any]:
    from secureinfer.mpc.approx import profile as profiles
    from secureinfer.mpc.models import session
    from secureinfer.mpc.party import EngineConfig
    from secureinfer.mpc.ring import FixedPoint

    s, case = run.strategy, run.case
    cfg, params = load_model(case.model)
    ids = case.inputs()
    config = EngineConfig(fxp=FixedPoint(frac_bits=s.frac_bits), device=s.device)
    kwargs: dict[str, Any] = dict(profile=profiles.get(s.profile), config=config, link=run.link.model())
    if s.public_weights:
        kwargs["public_weights"] = True
    if s.batch_requests:
        raise NotImplementedError("batched secure requests are not measured by the sweep yet")
    if case.task == "embed":
        emb, report = session.secure_encode(cfg, params, ids, torch.ones_like(ids), output="embedding", **kwargs)
        acc = accuracy_figures(case, None, None, emb)
    else:
        gen, report = session.secure_generate(cfg, params, ids, case.gen_tokens, eos_token_ids=(), **kwargs)
        acc = accuracy_figures(case, gen.tokens, gen.logits, None)
    steps = report.steps
    bytes_pp = report.bytes_per_party
    return {"prefill_s": steps[0].seconds,
            "per_token_s": _per_token([x.seconds for x in steps]),
            "total_s": report.seconds, "load_s": report.load_seconds, "rounds": report.rounds,
            "prefill_rounds": steps[0].rounds, "bytes_per_party_max": max(bytes_pp),
            "bytes_per_party_sum": sum(bytes_pp),
            "steps": [{"seconds": x.seconds, "party_seconds": x.party_seconds, "rounds": x.rounds,
                       "bytes_per_party": list(x.bytes_per_party), "tokens": x.tokens} for x in steps],
            "engine": "mpc.models.session", **acc}


_DTYPES = {"fp64": torch.float64, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class _ComputeDtype:
    """secureinfer.plaintext.reference computes in float64 (its module constant F64, looked up at call time); for a
    lower-precision plaintext strategy the same forwards run with that constant swapped for the strategy's dtype."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    def __enter__(self) -> None:
        from secureinfer.plaintext import reference as plaintext

        if not isinstance(getattr(plaintext, "F64", None), torch.dtype):
            raise RuntimeError("secureinfer.plaintext.reference no longer has its F64 compute-dtype constant; "
                               "update the sweep")
        self.saved = plaintext.F64
        plaintext.F64 = self.dtype

    def __exit__(self, *exc: Any) -> None:
        from secureinfer.plaintext import reference as plaintext

        plaintext.F64 = self.saved


def _greedy_steps(step: Callable[[torch.Tensor | None], torch.Tensor], n: int, device: str
                  ) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """`n` greedy steps, each timed: `step(None)` is the prefill, `step(token)` the next step; each returns the
    last-position logits (B, V). Tokens (B, n), logits (n, B, V) and each step's seconds."""
    tokens, logits, times = [], [], []
    token = None
    for _ in range(n):
        t0 = time.perf_counter()
        last = step(token)
        token = last.argmax(-1)
        _sync(device)
        times.append(time.perf_counter() - t0)
        tokens.append(token)
        logits.append(last)
    return torch.stack(tokens, dim=1), torch.stack(logits), times


def _plain_generate(cfg: Any, params: dict, ids: torch.Tensor, n: int, device: str
                    ) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Greedy generation with the reference forwards and a KV cache, each step timed: tokens (B, n), logits
    (n, B, V)."""
    from secureinfer.plaintext import reference as plaintext

    forward = plaintext.causal_lm_forward(cfg)
    cache = plaintext.KVCache.empty(cfg.n_layers)

    def step(token: torch.Tensor | None) -> torch.Tensor:
        return forward(cfg, params, ids if token is None else token[:, None], cache)[:, -1]

    with torch.inference_mode():
        return _greedy_steps(step, n, device)


def _per_token(times: list[float]) -> float | None:
    """The mean of the steps after the first (the prefill), None for a single step."""
    return (sum(times[1:]) / (len(times) - 1)) if len(times) > 1 else None


def _step_rows(times: list[float], ids: torch.Tensor, batch: int) -> list[dict[str, Any]]:
    """steps_json of a plaintext run: each step's seconds and tokens (the prompt's, then one per row)."""
    return [{"seconds": t, "tokens": int(ids.numel()) if i == 0 else batch} for i, t in enumerate(times)]


def _timed_median(once: Callable[[], tuple[Any, list[float]]], quick_s: float = 2.0, repeats: int = 3
                  ) -> tuple[Any, list[float], float]:
    """One untimed warm-up, then 2 * `repeats` - 1 timed runs if the warm-up took under `quick_s` / 4, `repeats`
    under `quick_s`, else one: the last
    run's output, each step's median time over the runs, and the warm-up's wall time."""
    t0 = time.perf_counter()
    once()
    warm = time.perf_counter() - t0
    n = 2 * repeats - 1 if warm < quick_s / 4 else repeats if warm < quick_s else 1
    runs = [once() for _ in range(n)]
    steps = [sorted(r[1][i] for r in runs)[len(runs) // 2] for i in range(len(runs[0][1]))]
    return runs[-1][0], steps, warm


def _measure_plain(run: Run) -> dict[str, Any]:
    s, case = run.strategy, run.case
    fast, why = fast_engine()
    if case.task == "generate" and fast is not None and not fast_unsupported(fast, s):
        return _FastAdapter(fast).measure(run)
    if any((s.quantization != "none", s.static_cache, s.batch_requests, s.cuda_graphs, s.compile,
            s.speculation != "none")):
        raise RuntimeError(why or f"{s.name} needs the fast engine, which runs decoders only")
    from secureinfer.plaintext import reference as plaintext

    cfg, params64 = load_model(case.model)
    dtype = _DTYPES[s.precision]
    ids = case.inputs().to(s.device)
    t0 = time.perf_counter()
    params = {k: v.to(device=s.device, dtype=dtype) for k, v in params64.items()}
    _sync(s.device)
    load_s = time.perf_counter() - t0
    with _ComputeDtype(dtype):
        if case.task == "embed":
            mask = torch.ones_like(ids)

            def once() -> tuple[torch.Tensor, list[float]]:
                with torch.inference_mode():
                    t0 = time.perf_counter()
                    emb = plaintext.sentence_embedding(cfg, params, ids, mask)
                    _sync(s.device)
                    return emb, [time.perf_counter() - t0]
        else:
            def once() -> tuple[tuple[torch.Tensor, torch.Tensor], list[float]]:
                tokens, logits, times = _plain_generate(cfg, params, ids, case.gen_tokens, s.device)
                return (tokens, logits), times

        out, times, warm = _timed_median(once)
    if case.task == "embed":
        if out.dtype != dtype:
            raise RuntimeError(f"plaintext forward computed in {out.dtype}, not {dtype}")
        acc = accuracy_figures(case, None, None, out)
    else:
        if out[1].dtype != dtype:
            raise RuntimeError(f"plaintext forward computed in {out[1].dtype}, not {dtype}")
        acc = accuracy_figures(case, out[0], out[1], None)
    return {"prefill_s": times[0], "per_token_s": _per_token(times), "total_s": sum(times), "load_s": load_s,
            "steps": _step_rows(times, ids, case.batch), "engine": "mpc.models.plaintext",
            "notes": {"warmup_s": warm}, **acc}


class _FastAdapter:
    """Plaintext decoder strategies on the fast engine (`secureinfer.plaintext.fast.FastDecoder`).

    The decoder is built once per run (packing, int8 quantization, CUDA graph capture: `load_s`), one untimed
    generation warms it up (torch.compile compiles there; its time goes to env_json's warmup_s), then:
      step by step  prefill, then decode_step per new token, each timed and its logits kept (accuracy on logits);
      speculation   `generate` (early-exit drafts) timed whole; prefill timed apart on a fresh cache, per_token_s =
                    (total - prefill) / (n - 1); accuracy on tokens only;
      batching      `batch` concurrent requests (one per row) submitted at once to a BatchingWorker, timed from
                    the first submit to the last result; prefill = the same with one new token (time to first
                    token); per-token as for speculation; accuracy on tokens only.
    """

    def __init__(self, module: Any) -> None:
        self.module = module

    def measure(self, run: Run) -> dict[str, Any]:
        s, case = run.strategy, run.case
        if case.task != "generate":
            raise RuntimeError("the fast engine runs decoders only")
        why = fast_unsupported(self.module, s)
        if why:
            raise RuntimeError(why)
        cfg, params = load_model(case.model)
        n, b = case.gen_tokens, case.batch
        ids = case.inputs().to(s.device)
        t0 = time.perf_counter()
        dec = self.module.FastDecoder(cfg, params, s, max_batch=b,
                                      max_len=min(cfg.max_positions, case.seq_len + n))
        _sync(s.device)
        load_s = time.perf_counter() - t0

        def prefill_s() -> float:
            dec.reset(b)
            t0 = time.perf_counter()
            dec.prefill(ids)
            _sync(s.device)
            return time.perf_counter() - t0

        def split(total: float, pre: float) -> list[float]:
            """[prefill, per-token x (n - 1)] summing to the measured total (the split is derived)."""
            return [pre] + [(total - pre) / (n - 1)] * (n - 1) if n > 1 else [total]

        def stepwise() -> tuple[Any, list[float]]:
            dec.reset(b)
            tokens, logits, times = _greedy_steps(
                lambda token: dec.prefill(ids) if token is None else dec.decode_step(token), n, s.device)
            return (tokens, logits), times

        def speculative() -> tuple[Any, list[float]]:
            pre = prefill_s()
            t0 = time.perf_counter()
            tokens = dec.generate(ids, n, eos_token_ids=())
            _sync(s.device)
            return (tokens, None), split(time.perf_counter() - t0, pre)

        def on_worker(k: int) -> tuple[torch.Tensor, float]:
            with self.module.BatchingWorker(dec, max_batch=b, eos_token_ids=()) as worker:
                t0 = time.perf_counter()
                futures = [worker.submit(ids[r].cpu(), k, eos_token_ids=()) for r in range(b)]
                tokens = torch.stack([f.result() for f in futures])
                return tokens, time.perf_counter() - t0

        def batched() -> tuple[Any, list[float]]:
            # The prefill is the worker's time to first token (requests of one new token), timed on the worker's
            # thread like the generation: a prefill timed on this thread right after a worker ran pays for the
            # other thread's idle OpenMP pool (several times slower on 2 cores).
            _, pre = on_worker(1)
            tokens, total = on_worker(n)
            return (tokens, None), split(total, pre)

        once = batched if s.batch_requests else speculative if s.speculation != "none" else stepwise
        with torch.no_grad():  # not inference_mode: the batching worker's thread updates the same cache in place
            (tokens, logits), times, warm = _timed_median(once)
        acc = accuracy_figures(case, tokens, logits, None)
        derived = once is not stepwise
        per_token = _per_token(times)
        if per_token is not None and per_token <= 0:
            per_token = None  # the whole generation was not measurably longer than a prefill alone
        return {"prefill_s": times[0], "per_token_s": per_token, "total_s": sum(times), "load_s": load_s, **acc,
                "steps": _step_rows(times, ids, b),
                "engine": "mpc.models.fast", "notes": {"warmup_s": warm, "derived_per_token": derived}}


def measure(run: Run, node: Node) -> Any:
    """Run one grid point and return its RunRecord (status 'error' with the message if it raised)."""
    from secureinfer.strategy import to_json
    from secureinfer.perfstore import RunRecord

    secure = run.strategy.mode == "secure"
    base: dict[str, Any] = dict(
        key=key_for(run, node), model=run.case.model, arch=MODELS[run.case.model].arch, seq_len=run.case.seq_len,
        batch=run.case.batch, gen_tokens=run.case.gen_tokens, task=run.case.task, device=node.description,
        cpu_count=node.cpu_count, matmul_gflops=node.matmul_gflops, memory_bytes=node.memory_bytes, host=node.host,
        latency_s=run.link.latency_s if secure else 0.0,
        bandwidth_bytes_per_s=run.link.bandwidth_bytes_per_s if secure else None, mode=run.strategy.mode,
        strategy_name=run.strategy.name, strategy_json=to_json(run.strategy), repeat=run.repeat,
        n_params=None, n_layers=None, hidden=None, vocab=None)
    peak = _Peak(node.device)
    try:
        cfg, params = load_model(run.case.model)
        base.update(n_params=sum(v.numel() for v in params.values()), n_layers=cfg.n_layers, hidden=cfg.hidden,
                    vocab=cfg.vocab_size)
        reference(run.case)  # the float64 answer, outside the clock and the memory window
        _collect()  # the previous run's garbage (reference cycles, freed arenas) out of this run's peak
        with peak:
            out = (_measure_secure if secure else _measure_plain)(run)
    except Exception as exc:  # noqa: BLE001 - recorded, the sweep goes on
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        return RunRecord(timestamp=time.time(), status="error", error=f"{type(exc).__name__}: {exc}"[:2000],
                         env_json=json.dumps({**_env(node, None), "traceback": "".join(tb[-6:])[-4000:]}), **base)
    finally:
        if node.device.startswith("cuda"):
            torch.cuda.empty_cache()
    steps, engine, notes = out.pop("steps"), out.pop("engine"), out.pop("notes", {})
    return RunRecord(timestamp=time.time(), status="ok", peak_rss_mb=peak.rss_mb, peak_device_mb=peak.device_mb,
                     steps_json=json.dumps(steps), env_json=json.dumps({**_env(node, engine), **notes}), **base,
                     **out)


def _collect() -> None:
    import gc

    from secureinfer.mpc.models.session import release_memory

    gc.collect()
    release_memory()
