"""Where a secure forward spends its time, bytes and rounds: a per-party op tracer.

Each party runs in its own thread, so tracing is thread-local. In a party's thread, `with recording() as rec:` turns
tracing on; inside it, `with op(party, "name"):` adds the wall time, bytes sent and rounds of the enclosed step to
`rec` under the current path of op names (e.g. ("layer", "attn.core", "softmax", "max", "msb")), counted
*exclusively*: a nested op's figures go to its own path, so the paths' figures add up to the traced region.
`instrument()` (process-wide, restored on exit) wraps engine functions (truncation, msb, mul_bit, softmax's max,
exp and reciprocal, LayerNorm's rsqrt, ...) with `op` so a model-level trace also shows the protocols underneath.
Without `recording()` an op costs one thread-local lookup. Wall time of one party includes waiting for the others
(the in-process network is synchronous), so a step's time is its critical-path time as seen by that party. Rounds
are the increase of this party's Lamport clock (comm/channel.py): exact for the whole traced region, approximate per
op (an op whose messages arrive while the party's clock is already ahead shows fewer rounds than it has).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ..party import Party

_local = threading.local()


@dataclass
class OpStats:
    """Accumulated figures of one op path (exclusive of nested ops)."""

    seconds: float = 0.0
    bytes_sent: int = 0
    rounds: int = 0
    calls: int = 0

    def add(self, other: "OpStats") -> None:
        self.seconds += other.seconds
        self.bytes_sent += other.bytes_sent
        self.rounds += other.rounds
        self.calls += other.calls

    def as_dict(self) -> dict[str, float | int]:
        return {"seconds": self.seconds, "bytes_sent": self.bytes_sent, "rounds": self.rounds, "calls": self.calls}


@dataclass
class Recording:
    """Exclusive figures per op path for one party; summarised by `by_top` and `by_leaf`."""

    paths: dict[tuple[str, ...], OpStats] = field(default_factory=dict)
    _stack: list[list] = field(default_factory=list)

    def by_top(self) -> dict[str, OpStats]:
        """Inclusive figures per outermost op name (the model's steps); calls count the outermost op only."""
        out = _group(self.paths, lambda p: p[0])
        for name, s in out.items():
            s.calls = self.paths[(name,)].calls if (name,) in self.paths else 0
        return out

    def by_leaf(self) -> dict[str, OpStats]:
        """Exclusive figures per innermost op name (the protocols where the time actually goes)."""
        return _group(self.paths, lambda p: p[-1])

    def by_name(self, name: str) -> OpStats:
        """Inclusive figures of every path through `name` (calls: those of `name` itself)."""
        total = OpStats()
        for path, s in self.paths.items():
            if name in path:
                total.add(s)
        total.calls = sum(s.calls for path, s in self.paths.items() if path[-1] == name)
        return total


def _group(paths: dict[tuple[str, ...], OpStats], key: Callable[[tuple[str, ...]], str]) -> dict[str, OpStats]:
    out: dict[str, OpStats] = {}
    for path, s in paths.items():
        out.setdefault(key(path), OpStats()).add(s)
    return dict(sorted(out.items(), key=lambda kv: -kv[1].seconds))


@contextlib.contextmanager
def recording() -> Iterator[Recording]:
    """Trace the ops this thread runs inside the block into a fresh Recording."""
    previous = getattr(_local, "rec", None)
    rec = Recording()
    _local.rec = rec
    try:
        yield rec
    finally:
        _local.rec = previous


def _counters(party: Party) -> tuple[float, int, int]:
    s = party.channel.stats
    return time.perf_counter(), s.bytes_sent, s.rounds


@contextlib.contextmanager
def op(party: Party, name: str) -> Iterator[None]:
    """Attribute the enclosed step's time, bytes and rounds to `name` (no-op unless this thread is recording)."""
    rec: Recording | None = getattr(_local, "rec", None)
    if rec is None:
        yield
        return
    frame = [name, _counters(party), OpStats()]  # name, start counters, children's inclusive totals
    rec._stack.append(frame)
    try:
        yield
    finally:
        rec._stack.pop()
        t1, b1, r1 = _counters(party)
        t0, b0, r0 = frame[1]
        inclusive = OpStats(t1 - t0, b1 - b0, r1 - r0, 1)
        children: OpStats = frame[2]
        exclusive = OpStats(inclusive.seconds - children.seconds, inclusive.bytes_sent - children.bytes_sent,
                            inclusive.rounds - children.rounds, 1)
        path = tuple(f[0] for f in rec._stack) + (name,)
        rec.paths.setdefault(path, OpStats()).add(exclusive)
        if rec._stack:
            parent: OpStats = rec._stack[-1][2]
            parent.seconds += inclusive.seconds
            parent.bytes_sent += inclusive.bytes_sent
            parent.rounds += inclusive.rounds


# Engine functions wrapped by `instrument` (module, attribute, op name). Missing ones are skipped: the engine's
# layers evolve, and tracing must never break a run.
INSTRUMENTED: tuple[tuple[str, str, str], ...] = (
    ("secureinfer.mpc.nn.attention", "softmax_parts", "softmax"),
    ("secureinfer.mpc.nn.softmax", "reciprocal", "reciprocal"),
    ("secureinfer.mpc.protocols.select", "max", "max"),
    ("secureinfer.mpc.approx.exp", "exp_neg", "exp"),
    ("secureinfer.mpc.nn.norm", "rsqrt", "rsqrt"),
    ("secureinfer.mpc.approx.segments", "below", "compare"),
    ("secureinfer.mpc.approx.segments", "select_bits", "select"),
    ("secureinfer.mpc.approx.normalise", "highest_bit", "highest_bit"),
    ("secureinfer.mpc.protocols.trunc", "from_additive", "trunc"),
    ("secureinfer.mpc.protocols.trunc", "trunc_replicated", "trunc"),
    ("secureinfer.mpc.protocols.compare", "msb", "msb"),
    ("secureinfer.mpc.protocols.b2a", "mul_bit", "mul_bit"),
    ("secureinfer.mpc.protocols.b2a", "bit_to_arith", "b2a"),
    ("secureinfer.mpc.protocols.boolean", "a2b", "a2b"),
    ("secureinfer.mpc.protocols.boolean", "and_", "and"),
    ("secureinfer.mpc.protocols.mul", "reshare", "reshare"),
)


def _traced(fn: Callable, name: str) -> Callable:
    @functools.wraps(fn)
    def wrapper(party, *args, **kwargs):
        with op(party, name):
            return fn(party, *args, **kwargs)

    wrapper.__wrapped_by_trace__ = True  # type: ignore[attr-defined]
    return wrapper


@contextlib.contextmanager
def instrument() -> Iterator[None]:
    """Wrap the INSTRUMENTED engine functions with `op` for the duration of the block (process-wide)."""
    saved = []
    for module_name, attr, name in INSTRUMENTED:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        fn = getattr(module, attr, None)
        if fn is None or getattr(fn, "__wrapped_by_trace__", False):
            continue
        saved.append((module, attr, fn))
        setattr(module, attr, _traced(fn, name))
    try:
        yield
    finally:
        for module, attr, fn in reversed(saved):
            setattr(module, attr, fn)


def merge(recordings: list[Recording | None]) -> Recording:
    """The sum of several recordings (e.g. every decode step, or every party)."""
    out = Recording()
    for rec in recordings:
        if rec is None:
            continue
        for path, s in rec.paths.items():
            out.paths.setdefault(path, OpStats()).add(s)
    return out
