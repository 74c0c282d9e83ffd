"""Test helpers shared by the engine tests (append new helpers; keep each one small and documented)."""

from __future__ import annotations

# --- views: what each party receives, and statistical tests that it does not depend on the secret ----------------
#
# A protocol is (semi-honest) private if each party's view can be simulated without the secret. We test a necessary
# condition: the distribution of every received message does not depend on the secret inputs (two-sample chi-square
# between "all zero" and "all large" secrets) and, for protocols whose messages are masked by fresh uniform ring
# elements, that each message is uniform (chi-square against uniform). Both use byte histograms of the message
# elements. A protocol that sends an unmasked (or badly masked) secret fails these tests; see test_security.py.

import contextlib
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

from secureinfer.mpc import runtime
from secureinfer.mpc.comm import memory
from secureinfer.mpc.party import PARTY_NAMES

# Significance per individual chi-square test: 1e-7, so that the few hundred tests a run makes give a false alarm
# probability of about 1e-4 in all. Critical values are fixed (no scipy): exact for 1 and 2 degrees of freedom
# (z^2 with z = 5.327, the two-sided 1e-7 normal quantile; and -2 ln 1e-7), Wilson-Hilferty above, with z = 5.199
# the one-sided 1e-7 normal quantile. Wilson-Hilferty is within ~1% at these dof and slightly conservative.
CHI2_P = 1e-7
_Z_ONE_SIDED = 5.199
_EXACT = {1: 28.37, 2: 32.24}


def chi2_critical(dof: int) -> float:
    """Upper 1e-7 quantile of the chi-square distribution with `dof` degrees of freedom."""
    if dof < 1:
        raise ValueError(f"dof must be >= 1, got {dof}")
    if dof in _EXACT:
        return _EXACT[dof]
    h = 2.0 / (9.0 * dof)
    return dof * (1.0 - h + _Z_ONE_SIDED * math.sqrt(h)) ** 3


def chi2_uniform(counts: torch.Tensor) -> tuple[float, int]:
    """Pearson chi-square statistic of `counts` against the uniform distribution over its buckets, and its dof."""
    counts = counts.double()
    expected = counts.sum() / counts.numel()
    return float(((counts - expected) ** 2 / expected).sum()), counts.numel() - 1


def chi2_two_sample(a: torch.Tensor, b: torch.Tensor) -> tuple[float, int]:
    """Chi-square homogeneity statistic of two histograms over the same buckets (empty buckets dropped), and dof."""
    a, b = a.double(), b.double()
    keep = (a + b) > 0
    a, b = a[keep], b[keep]
    if a.numel() < 2:
        return 0.0, 1  # both samples sit in one bucket: identical distributions
    n_a, n_b = a.sum(), b.sum()
    total = a + b
    e_a, e_b = total * n_a / (n_a + n_b), total * n_b / (n_a + n_b)
    stat = ((a - e_a) ** 2 / e_a).sum() + ((b - e_b) ** 2 / e_b).sum()
    return float(stat), a.numel() - 1


def byte_histograms(values: torch.Tensor, buckets: int = 256) -> torch.Tensor:
    """Histogram of each byte position of the elements of `values`: shape (element_size, buckets).

    With buckets=16 each byte's top four bits are counted (for small samples)."""
    flat = values.detach().cpu().contiguous().reshape(-1)
    raw = flat.view(torch.uint8).reshape(flat.numel(), flat.element_size()).long()  # little-endian bytes
    if buckets == 16:
        raw = raw >> 4
    elif buckets != 256:
        raise ValueError("buckets must be 16 or 256")
    return torch.stack([torch.bincount(raw[:, j], minlength=buckets) for j in range(raw.shape[1])])


def bit_frequency_failures(values: torch.Tensor, z_max: float = 5.33) -> list[int]:
    """Bit positions of int64 `values` whose frequency of ones is off 1/2 by more than z_max sigmas (1e-7 two-sided)."""
    flat = values.detach().cpu().reshape(-1)
    n = flat.numel()
    shifts = torch.arange(64, dtype=torch.int64)
    ones = ((flat.unsqueeze(1) >> shifts) & 1).sum(0).double()
    z = (ones - n / 2).abs() / math.sqrt(n / 4)
    return [int(i) for i in torch.nonzero(z > z_max).flatten()]


@dataclass(frozen=True)
class Received:
    """One message as its receiver saw it."""

    frm: str
    tag: str
    payload: Any


@contextlib.contextmanager
def recording_receives() -> Iterator[dict[str, list[Received]]]:
    """Record every message every party of an in-memory network receives, in order, while the block runs."""
    views: dict[str, list[Received]] = {}
    lock = threading.Lock()
    original = memory.MemoryChannel._receive

    def _receive(self, frm):
        message = original(self, frm)
        with lock:
            views.setdefault(self.name, []).append(Received(frm, message.tag, message.payload))
        return message

    memory.MemoryChannel._receive = _receive
    try:
        yield views
    finally:
        memory.MemoryChannel._receive = original


def record_views(program: Callable[..., Any], inputs: Sequence[torch.Tensor] = (), *, include_setup: bool = False,
                 **simulate_kwargs: Any) -> tuple[runtime.Simulation, list[list[Received]]]:
    """Run `runtime.simulate(program, inputs=...)` and return it with each party's received messages.

    views[i] lists what party i received, in order; set-up keys and the input owner's messages are left out unless
    `include_setup` (the input sharing is tested on its own)."""
    with recording_receives() as raw:
        sim = runtime.simulate(program, inputs=inputs, **simulate_kwargs)
    views = []
    for name in PARTY_NAMES:
        msgs = raw.get(name, [])
        if not include_setup:
            msgs = [m for m in msgs if m.tag != "setup" and m.frm != runtime.OWNER]
        views.append(msgs)
    return sim, views


def _as_tensor(payload: Any) -> torch.Tensor:
    if isinstance(payload, torch.Tensor):
        return payload.detach().cpu()
    return torch.frombuffer(bytearray(payload), dtype=torch.uint8)


def _view_samples(program, inputs, runs: int, simulate_kwargs) -> tuple[list[tuple], dict[tuple, torch.Tensor]]:
    """Concatenate, over `runs` runs, the elements of each party's k-th received message; also its layout."""
    layout, samples = None, {}
    for _ in range(runs):
        _, views = record_views(program, inputs, **simulate_kwargs)
        this = [(i, k, m.frm, m.tag, tuple(_as_tensor(m.payload).shape)) for i, v in enumerate(views)
                for k, m in enumerate(v)]
        if layout is not None and this != layout:
            raise AssertionError("message layout differs between runs")
        layout = this
        for i, v in enumerate(views):
            for k, m in enumerate(v):
                samples.setdefault((i, k), []).append(_as_tensor(m.payload).reshape(-1))
    return layout or [], {key: torch.cat(parts) for key, parts in samples.items()}


def view_independence_failures(program: Callable[..., Any], inputs_a: Sequence[torch.Tensor],
                               inputs_b: Sequence[torch.Tensor], *, runs: int = 2, uniform: bool = True,
                               **simulate_kwargs: Any) -> tuple[list[str], dict[str, float]]:
    """Compare every party's received messages under secrets `inputs_a` and `inputs_b` (chi-square, p = 1e-7 each).

    Returns (failures, report): failures names each (party, message, byte) whose histogram differs between the two
    secrets, or (when `uniform`) is not uniform; report holds the largest statistic / critical value seen per test
    kind. An empty view (a program that receives nothing) is reported as a failure: it would test nothing.
    """
    layout_a, a = _view_samples(program, inputs_a, runs, simulate_kwargs)
    layout_b, b = _view_samples(program, inputs_b, runs, simulate_kwargs)
    failures: list[str] = []
    if layout_a != layout_b:
        failures.append(f"message layout depends on the secret: {layout_a} vs {layout_b}")
        return failures, {}
    if not a:
        return ["no messages were received: nothing to test"], {}
    report = {"two_sample": 0.0, "uniform": 0.0, "messages": float(len(a)), "min_samples": float("inf")}
    for key in sorted(a):
        xa, xb = a[key], b[key]
        report["min_samples"] = min(report["min_samples"], float(min(xa.numel(), xb.numel())))
        buckets = 256 if min(xa.numel(), xb.numel()) >= 2560 else 16
        ha, hb = byte_histograms(xa, buckets), byte_histograms(xb, buckets)
        for byte in range(ha.shape[0]):
            stat, dof = chi2_two_sample(ha[byte], hb[byte])
            ratio = stat / chi2_critical(dof)
            report["two_sample"] = max(report["two_sample"], ratio)
            if ratio > 1:
                failures.append(f"P{key[0]} message {key[1]} byte {byte}: depends on the secret (chi2 {stat:.0f})")
            if uniform:
                for label, h in (("a", ha[byte]), ("b", hb[byte])):
                    stat, dof = chi2_uniform(h)
                    ratio = stat / chi2_critical(dof)
                    report["uniform"] = max(report["uniform"], ratio)
                    if ratio > 1:
                        failures.append(f"P{key[0]} message {key[1]} byte {byte}: not uniform under secret {label} "
                                        f"(chi2 {stat:.0f})")
    return failures, report


# --- boolean / comparison tests: ring data with edge values, and a measured run -----------------------------------

RING_EDGES = [0, 1, -1, 2, -2, (1 << 63) - 1, -(1 << 63), 1 << 62, -(1 << 62), (1 << 62) - 1, -(1 << 62) + 1,
              1 << 40, -(1 << 40), (1 << 63) - (1 << 40), 12345, -12345]


def ring_edge_data(n: int, seed: int) -> torch.Tensor:
    """n full-range int64 values (test data, not secret randomness) with RING_EDGES planted first."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-(1 << 63), (1 << 63) - 1, (n,), generator=g, dtype=torch.int64)
    k = min(len(RING_EDGES), n)
    x[:k] = torch.tensor(RING_EDGES[:k])
    return x


def run_opened(fn: Callable[..., Any], inputs: Sequence[torch.Tensor], config: Any) -> tuple[torch.Tensor, list]:
    """Simulate fn(party, *shares), open its output; returns (opened value, each party's CommStats of fn alone).

    Checks that all three parties opened the same value."""
    from secureinfer.mpc.protocols import reveal

    def program(p, *shares):
        before = p.channel.stats.snapshot()
        out = fn(p, *shares)
        spent = p.channel.stats.since(before)
        return reveal.reveal(p, out).cpu(), spent

    sim = runtime.simulate(program, inputs=inputs, config=config)
    outs = [o[0] for o in sim.outputs]
    if not all(torch.equal(outs[0], o) for o in outs):
        raise AssertionError("parties opened different values")
    return outs[0], [o[1] for o in sim.outputs]


def real_pairs(n: int, limit: float, seed: int, frac_bits: int = 18) -> tuple[torch.Tensor, torch.Tensor]:
    """x, y in [-limit, limit] with ties, zeros, +-limit, one-ulp gaps and sign flips planted."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * limit
    y = (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * limit
    ulp = 2.0**-frac_bits
    px = [0.0, 0.0, limit, -limit, limit, 1.0, 1.0, -1.0, ulp, -ulp, 3.5, -limit]
    py = [0.0, ulp, limit, -limit, -limit, 1.0 + ulp, 1.0 - ulp, -1.0, 0.0, 0.0, 3.5, limit]
    x[: len(px)] = torch.tensor(px, dtype=torch.float64)
    y[: len(py)] = torch.tensor(py, dtype=torch.float64)
    x[20:40] = y[20:40]  # more ties
    return x, y
