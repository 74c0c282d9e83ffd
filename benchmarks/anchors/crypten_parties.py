"""Three CrypTen parties in forked processes for the CrypTen anchor: launch, byte accounting, timed runs, opening.

Imported in the CrypTen venv (torch and crypten only), so it imports nothing of secureinfer.
"""

from __future__ import annotations

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
from typing import Any, Callable

import torch

WORLD_SIZE = 3
BYTES_PER_ELEMENT = 8  # CrypTen shares are int64
PARTY_TIMEOUT_S = 3600.0


class RunnerError(Exception):
    """A runner failure with a one-line message for the harness."""


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
