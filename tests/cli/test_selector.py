"""`secureinfer selector eval` and `secureinfer selector explain`: help that teaches, outputs, clear errors; and the
evaluation on the committed performance store (every baseline's figures computed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.selector.test_evaluate import synthetic

from secureinfer import cli
from secureinfer.cli import selector as cli_selector
from secureinfer.lab.stores import MEASURED_STORES
from secureinfer.perfstore import open_store


@pytest.fixture
def store(tmp_path) -> Path:
    path = tmp_path / "s.sqlite"
    with open_store(path) as st:
        st.insert_many(synthetic())
    return path


def _help(*words: str) -> str:
    parser = cli.build_parser()
    sub = parser
    for w in words:
        sub = next(a for a in sub._actions if a.dest and a.dest.endswith(("command", "action"))).choices[w]
    return sub.format_help()


def test_help_teaches():
    top = _help("selector")
    assert "traded for speed" in top and "secureinfer selector explain" in top
    ev = _help("selector", "eval")
    for word in ("random", "fixed", "cost_model", "predictor", "selector", "oracle", "--passes", "--plot",
                 "secret-open-model", "client-worker"):
        assert word in ev
    ex = _help("selector", "explain")
    assert "REQUEST" in ex and "network" in ex and "latency_ms" in ex and "examples:" in ex


def test_eval_baselines_json_and_plot(store, tmp_path, capsys):
    out_json, out_png = tmp_path / "e.json", tmp_path / "e.png"
    rc = cli.main(["selector", "eval", "--store", str(store), "--policies", "random,fixed", "--passes", "2",
                   "--json", str(out_json), "--plot", str(out_png), "--quiet"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "single best fixed" in out.out and "random" in out.out and "oracle (best measured)" in out.out
    doc = json.loads(out_json.read_text())
    assert set(doc["summary"]) == {"oracle", "random", "fixed"} and len(doc["groups"]) == 4
    assert doc["command"].startswith("secureinfer selector eval --store ") and "--passes 2" in doc["command"]
    assert out_png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, message", [
    (["--kinds", "secret,gossip"], "unknown request kinds"),
    (["--budgets", "none,zero"], "accuracy budget"),
    (["--policies", "fixed,psychic"], "unknown policies"),
    (["--group", "m9/box/local", "--policies", "fixed"], "no requests for held-out groups"),
    (["--passes", "0"], "passes must be >= 1"),
])
def test_eval_errors(store, capsys, args, message):
    assert cli.main(["selector", "eval", "--store", str(store), *args]) == 2
    assert message in capsys.readouterr().err


def test_default_stores_are_the_packaged_ones_wherever_it_runs(tmp_path, capsys, monkeypatch):
    """Without --store the CLI reads the measured stores shipped inside the package, not a path relative to the
    working directory; they are in rollback-journal mode, so a read-only installation can open them."""
    monkeypatch.chdir(tmp_path)
    assert all(p.is_file() and p.is_relative_to(Path(cli.__file__).parents[1]) for p in MEASURED_STORES)
    for path in MEASURED_STORES:
        assert path.read_bytes()[18:20] == b"\x01\x01", f"{path} is in WAL mode"  # file format: legacy journal
    group = "tiny-gpt2/dev-vm-2cpu/metro"
    assert cli.main(["selector", "eval", "--policies", "fixed", "--group", group, "--passes", "1", "--quiet"]) == 0
    assert "single best fixed" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # read-only: nothing written here


def test_missing_store_says_how_to_get_one(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli_selector, "MEASURED_STORES", (tmp_path / "gone.sqlite",))
    assert cli.main(["selector", "eval", "--policies", "fixed"]) == 2
    assert "pass --store FILE" in capsys.readouterr().err
    assert cli.main(["selector", "explain", '{"model": "x"}', "--store", str(tmp_path / "none.sqlite")]) == 2
    assert "no performance store" in capsys.readouterr().err


@pytest.mark.slow
def test_explain_cli_text_and_json(store, capsys):
    """The real selector (cost model tables measured on first use: seconds) explains a request on the store."""
    request = '{"model": "m1", "seq_len": 8, "gen_tokens": 2, "max_error": 0.01, "link": "metro"}'
    assert cli.main(["selector", "explain", request, "--store", str(store)]) == 0
    text = capsys.readouterr().out
    assert "plan      secure-accurate-" in text and "removed by hard constraints" in text
    assert "secure-fast-f18-cpu" in text  # removed: its measured error 0.05 is over the budget
    assert cli.main(["selector", "explain", request, "--store", str(store), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["plan"]["strategy"].startswith("secure-accurate-")
    assert any(r["constraint"] == "accuracy" and r["strategy"] == "secure-fast-f18-cpu" for r in doc["removed"])
    assert all(r["strategy"].startswith("secure-") for r in doc["ranked"])  # a secret prompt: never plaintext
    assert cli.main(["selector", "explain", '{"model": "m1", "seq_len": 8}', "--store", str(store)]) == 0
    assert cli.main(["selector", "explain", '{"model": "m1", "seq_len": 8, "gen_tokens": 2, "max_error": 1e-9}',
                     "--store", str(store)]) == 1  # nothing meets the budget: said so, exit 1
    assert "every candidate was removed" in capsys.readouterr().out


@pytest.mark.slow
def test_eval_on_the_committed_store(tmp_path, capsys):
    """Every baseline is evaluated on a held-out group of the measured stores and its figures are computed (the
    targets are measured by the full run, benchmarks/selector/eval.json, not asserted here)."""
    group = "tiny-gpt2/dev-vm-2cpu/metro"
    args = ["selector", "eval", "--group", group, "--passes", "1", "--json", str(tmp_path / "e.json"), "--quiet"]
    for path in MEASURED_STORES:
        args += ["--store", str(path)]
    assert cli.main(args) == 0
    table = capsys.readouterr().out
    for label in ("oracle (best measured)", "random", "single best fixed", "cost model alone", "offline predictor",
                  "full selector"):
        assert label in table
    doc = json.loads((tmp_path / "e.json").read_text())
    assert doc["groups"] == [group]
    for policy, s in doc["summary"].items():
        assert s["n"] > 0 and s["median_s"] > 0 and s["median_ratio"] >= 1.0 - 1e-12, policy
        assert 0.0 <= s["within_10pct"] <= 1.0 and s["mean_regret"] >= 0.0
    assert doc["targets"]["selector_vs_oracle_median_ratio"] == doc["summary"]["selector"]["median_ratio"]
