"""The op accuracy table (secureinfer.lab.bench.accuracy): every op vs float64 torch, printed with `pytest -s`."""

from __future__ import annotations

import pytest

from secureinfer.lab.bench.accuracy import accuracy_table, format_table
from secureinfer.mpc.approx import ACCURATE, FAST, LEAN


@pytest.mark.parametrize("profile", [ACCURATE, FAST, LEAN], ids=lambda p: p.name)
def test_accuracy_table(config, profile):
    rows = accuracy_table(profile, config)
    print()
    print(format_table(rows))
    assert {r.op for r in rows} >= {"exp", "reciprocal", "rsqrt", "gelu", "silu", "softmax", "layernorm", "rmsnorm",
                                    "linear", "attention"}
    bad = [f"{r.op}: {r.max_error:.2e} > {r.tolerance:.1e}" for r in rows if not r.ok]
    assert not bad, bad
    assert all(r.rounds > 0 and r.bytes_per_party > 0 for r in rows)


def test_accuracy_table_can_fail(config):
    """A tolerance tighter than the approximation's error is reported as not ok (the table is a real check)."""
    from dataclasses import replace

    row = accuracy_table(FAST, config, ops=("gelu",))[0]
    assert row.ok
    assert not replace(row, tolerance=row.max_error / 2).ok
