"""Membership at scale, simulated: signed records spread through the nodes' gossip code in one process, forged ones
never do, and `secureinfer bench membership` prints and saves the figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secureinfer import cli
from secureinfer.lab.bench.membership import SimSpec, simulate


def test_fifty_nodes_converge_and_no_forged_record_spreads(tmp_path: Path) -> None:
    result = simulate(SimSpec(nodes=50, seeds=2, forgers=3, max_rounds=20), tmp_path)
    assert result.converged_round is not None and result.converged_round <= 10
    assert result.rounds[-1].complete == 50
    assert result.forged_accepted == 0  # no unsigned, tampered, impostor or foreign record in any table
    assert result.rejected >= 3 * 4  # every forger's forgeries were refused where they arrived
    first = result.rounds[0]
    assert first.calls >= 49 and first.sent_mean > 0 and first.received_mean > 0
    assert result.rounds[-1].sent_mean >= 50 * result.record_bytes * 0.9  # a full table travels in every call
    assert result.choose_committees_ms >= 0 and result.pick_secure_nodes_ms >= 0
    assert result.update_round is not None and result.update_round <= 12  # a heartbeat reaches every table
    assert result.update_rounds[-1].complete == 50


def test_spec_is_checked() -> None:
    for bad in ({"nodes": 2}, {"seeds": 0}, {"nodes": 5, "seeds": 5, "forgers": 0}, {"forgers": 3, "nodes": 5},
                {"forgers": -1}, {"max_rounds": 0}):
        with pytest.raises(ValueError):
            SimSpec(**bad)


def test_bench_membership_command_prints_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "m.json"
    assert cli.main(["bench", "membership", "--nodes", "12", "--forgers", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "every table holds all 12 records" in printed and "0 accepted anywhere" in printed
    saved = json.loads(out.read_text())
    assert saved["benchmark"] == "membership" and saved["spec"]["nodes"] == 12
    assert saved["results"][0]["converged_round"] == len(saved["results"][0]["rounds"])
    assert saved["command"].startswith("secureinfer bench membership --nodes=12")
