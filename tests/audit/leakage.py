"""The leakage audit's analysis: search recorded inbound messages for planted canaries, and test that what each
party receives is uniform and does not depend on the secret inputs.

(a) Canaries: plaintext weights (every distinctive fixed-point encoding of the published parameters), the first
    activation (each prompt position's embedding, exact in fixed point: sums of table rows), the prompt's token-id
    sequence (int64 and int32) and its one-hot rows; searched as ring elements and as raw bytes at every offset.
(b) Distinguishability: two runs that differ only in a secret (prompt or weights), fresh randomness each; the message
    layouts must agree, public messages (control, metadata, names, seed-message shapes) must be identical, and the
    ring elements received per (sender, tag) group and per large message must pass chi-square tests of uniformity
    (byte histograms, per-bit frequency) and of homogeneity between the two runs (p = 1e-7 each, tests/mpc/helpers).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from secureinfer.mpc.comm.audit import Inbound
from secureinfer.mpc.prg import SEED_BYTES
from secureinfer.mpc.ring import FixedPoint
from tests.mpc.helpers import bit_frequency_failures, byte_histograms, chi2_critical, chi2_two_sample, chi2_uniform

MIN_CANARY = 1 << 10  # smaller encodings (|w| < 2^-8) are too common in public data to count as a find
PER_MESSAGE_MIN = 320  # per-message tests need this many elements (16 buckets, 20 expected each)


@dataclass(frozen=True)
class Canaries:
    """What must never be found in a party's inbound traffic: ring values and byte patterns, each with a label."""

    values: torch.Tensor  # (N,) int64 distinctive ring values
    labels: tuple[str, ...]  # label of each value
    patterns: tuple[tuple[str, bytes], ...] = ()  # (label, bytes) searched in every payload's raw bytes


def distinctive(encoded: torch.Tensor, fxp: FixedPoint) -> torch.Tensor:
    """The distinct values of an encoded tensor that are neither tiny nor whole numbers (so public data lacks them)."""
    v = encoded.reshape(-1).to(torch.int64).unique()
    keep = (v.abs() >= MIN_CANARY) & (v % (1 << fxp.frac_bits) != 0)
    return v[keep]


def make_canaries(weights: dict[str, torch.Tensor], activations: torch.Tensor | None, token_ids: torch.Tensor,
                  vocab: int, fxp: FixedPoint = FixedPoint()) -> Canaries:
    """Canaries from the (folded) parameters, an exact activation (ring values, or floats encoded here), and the
    prompt (B, T)."""
    values, labels = [], []
    for name, w in sorted(weights.items()):
        d = distinctive(fxp.encode(w.double()), fxp)
        values.append(d)
        labels += [f"weight {name}"] * d.numel()
        floats = w.double().reshape(-1)  # the same weights as float64 (how open weights travel)
        floats = floats[floats.abs() >= 2.0 ** -8].unique().view(torch.int64)
        values.append(floats)
        labels += [f"weight {name} (float64)"] * floats.numel()
    if activations is not None:
        encoded = activations if activations.dtype == torch.int64 else fxp.encode(activations.double())
        d = distinctive(encoded, fxp)
        values.append(d)
        labels += ["activation (embedding output)"] * d.numel()
    patterns = []
    for row in token_ids.reshape(-1, token_ids.shape[-1]):
        for dtype in (torch.int64, torch.int32):
            patterns.append((f"token ids {row.tolist()} as {dtype}", row.to(dtype).numpy().tobytes()))
        for t in row.tolist():
            onehot = torch.zeros(vocab, dtype=torch.int64)
            onehot[t] = 1
            patterns.append((f"one-hot row of token {t}", onehot.numpy().tobytes()))
            patterns.append((f"fixed-point one-hot row of token {t}", (onehot << fxp.frac_bits).numpy().tobytes()))
    return Canaries(torch.cat(values), tuple(labels), tuple(patterns))


def _int64_views(raw: bytes) -> Iterable[torch.Tensor]:
    """The raw bytes read as int64 at each of the 8 byte offsets (finds values at any alignment)."""
    for offset in range(8):
        n = (len(raw) - offset) // 8
        if n > 0:
            yield torch.frombuffer(bytearray(raw[offset:offset + 8 * n]), dtype=torch.int64)


def _value_bytes(raw: bytes) -> bytes:
    """The bytes searched for ring-value canaries: of a seed message only its seed (its shape header is public, and
    8-byte windows across seed and header mix one random byte with fixed ones: false finds about 1 in 256)."""
    return raw[1:1 + SEED_BYTES] if _is_seed_message(raw) else raw


def _with_values(raws: Sequence[bytes], table: torch.Tensor) -> set[int]:
    """Indices of the raws with an 8-byte window (any alignment) in `table`: one search over all of them at once."""
    buf = b"".join(raws)
    ends = torch.tensor([len(r) for r in raws], dtype=torch.int64).cumsum(0)
    hits = []
    for offset, view in enumerate(_int64_views(buf)):
        at = torch.searchsorted(table, view).clamp(max=max(table.numel() - 1, 0))  # table: sorted (unique())
        hit = (table[at] == view).nonzero().reshape(-1) if table.numel() else view[:0]
        hits.append(offset + 8 * hit)
    position = torch.cat(hits) if hits else torch.empty(0, dtype=torch.int64)
    index = torch.searchsorted(ends, position, right=True)
    inside = position + 8 <= ends[index.clamp(max=max(len(raws) - 1, 0))]  # windows across two messages don't count
    return set(index[inside].tolist())


def canary_finds(messages: Sequence[Inbound], canaries: Canaries, limit: int = 20) -> list[str]:
    """Where canaries occur in the messages (empty: none found); at most `limit` descriptions."""
    finds: list[str] = []
    table = canaries.values.unique()
    raws = [m.raw for m in messages]
    candidates = _with_values([_value_bytes(raw) for raw in raws], table)
    for k, m in enumerate(messages):
        raw = raws[k]
        for view in _int64_views(_value_bytes(raw)) if k in candidates else ():
            hit = torch.isin(view, table)
            if hit.any():
                value = int(view[hit][0])
                label = canaries.labels[int((canaries.values == value).nonzero()[0])]
                finds.append(f"{m.receiver} message {k} from {m.sender} tag {m.tag!r}: {int(hit.sum())} x {label}")
                break
        for label, pattern in canaries.patterns:
            if pattern in raw:
                finds.append(f"{m.receiver} message {k} from {m.sender} tag {m.tag!r}: {label}")
        if len(finds) >= limit:
            break
    return finds


# --- (b) distinguishability --------------------------------------------------------------------------------------


def _is_seed_message(payload: bytes) -> bool:
    return payload[:1] == b"S" and (len(payload) - 2 - SEED_BYTES) % 8 == 0 and len(payload) >= 2 + SEED_BYTES


PUBLIC_TENSOR_TAGS = frozenset({"meta"})  # BERT's padding mask and token types: public by design, sent in the clear
# Fresh random bytes: X25519 public keys of the PRG seed agreement; a party's voucher key from the client and its
# neighbours' vouchers (HMACs, under keys it does not hold, of output components it holds itself).
RANDOM_BYTES_TAGS = frozenset({"setup", "witness.key", "vouch"})


def _public_form(m: Inbound) -> bytes | None:
    """What of a message is public and must not change with the secret (a seed message: its shape; a key share:
    nothing; public metadata: all of it; other bytes: all of it); None for secret-shared tensors."""
    if isinstance(m.payload, torch.Tensor):
        return m.payload.numpy().tobytes() if m.tag in PUBLIC_TENSOR_TAGS else None
    if m.tag in RANDOM_BYTES_TAGS:
        return b""
    return m.payload[1 + SEED_BYTES:] if _is_seed_message(m.payload) else m.payload


def _layout(messages: Sequence[Inbound]) -> list[tuple]:
    return [(m.sender, m.tag, type(m.payload).__name__,
             (str(m.payload.dtype), tuple(m.payload.shape)) if isinstance(m.payload, torch.Tensor) else len(m.payload))
            for m in messages]


@dataclass
class ViewReport:
    """The outcome of comparing views: failures (empty when private) and the largest statistic/critical ratios."""

    failures: list[str] = field(default_factory=list)
    two_sample: float = 0.0
    uniform: float = 0.0
    tests: int = 0
    elements: int = 0
    groups: int = 0


def _ring_samples(runs: Sequence[Sequence[Inbound]]) -> tuple[dict[tuple, torch.Tensor], dict[tuple, torch.Tensor]]:
    """Ring elements pooled per (sender, tag) group, and per message index, over several runs of one input."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    singles: dict[tuple, list[torch.Tensor]] = {}
    for messages in runs:
        for k, m in enumerate(messages):
            if isinstance(m.payload, torch.Tensor) and m.payload.dtype == torch.int64 and m.tag not in PUBLIC_TENSOR_TAGS:
                flat = m.payload.reshape(-1)
                groups.setdefault((m.sender, m.tag), []).append(flat)
                singles.setdefault((k, m.sender, m.tag), []).append(flat)
    return ({k: torch.cat(v) for k, v in groups.items()}, {k: torch.cat(v) for k, v in singles.items()})


def _test(report: ViewReport, where: str, xa: torch.Tensor, xb: torch.Tensor, uniform: bool) -> None:
    buckets = 256 if min(xa.numel(), xb.numel()) >= 2560 else 16
    ha, hb = byte_histograms(xa, buckets), byte_histograms(xb, buckets)
    for byte in range(ha.shape[0]):
        report.tests += 1
        stat, dof = chi2_two_sample(ha[byte], hb[byte])
        report.two_sample = max(report.two_sample, stat / chi2_critical(dof))
        if stat > chi2_critical(dof):
            report.failures.append(f"{where} byte {byte}: depends on the secret (chi2 {stat:.0f})")
        if uniform:
            for label, h in (("a", ha[byte]), ("b", hb[byte])):
                stat, dof = chi2_uniform(h)
                report.uniform = max(report.uniform, stat / chi2_critical(dof))
                if stat > chi2_critical(dof):
                    report.failures.append(f"{where} byte {byte}: not uniform under input {label} (chi2 {stat:.0f})")
    if uniform:
        for label, x in (("a", xa), ("b", xb)):
            bits = bit_frequency_failures(x)
            if bits:
                report.failures.append(f"{where}: bits {bits[:8]} biased under input {label}")


def compare_views(runs_a: Sequence[Sequence[Inbound]], runs_b: Sequence[Sequence[Inbound]], *,
                  uniform: bool = True) -> ViewReport:
    """Compare one party's inbound messages over runs with secret input A and with secret input B."""
    report = ViewReport()
    layouts = {repr(_layout(r)) for r in [*runs_a, *runs_b]}
    if len(layouts) != 1:
        report.failures.append("message layout (senders, tags, shapes) differs between runs or inputs")
        return report
    for k, (ma, mb) in enumerate(zip(runs_a[0], runs_b[0])):
        if _public_form(ma) != _public_form(mb):
            report.failures.append(f"public message {k} from {ma.sender} tag {ma.tag!r} depends on the secret")
    groups_a, singles_a = _ring_samples(runs_a)
    groups_b, singles_b = _ring_samples(runs_b)
    if not groups_a:
        report.failures.append("no ring elements were received: nothing to test")
        return report
    report.groups = len(groups_a)
    for key in sorted(groups_a):
        report.elements += groups_a[key].numel()
        _test(report, f"{runs_a[0][0].receiver} group {key}", groups_a[key], groups_b[key], uniform)
    for key in sorted(singles_a):
        if singles_a[key].numel() >= PER_MESSAGE_MIN:
            _test(report, f"{runs_a[0][0].receiver} message {key}", singles_a[key], singles_b[key], uniform)
    return report
