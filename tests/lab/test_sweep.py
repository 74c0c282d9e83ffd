"""`secureinfer bench sweep` (secureinfer/lab/bench/sweep/): a tiny grid into a temporary performance store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from secureinfer.lab.bench import sweep
from secureinfer.lab.bench.sweep import LINKS, Case, Link, Node, Run
from secureinfer.perfstore import open_store
from secureinfer.strategy import PlaintextStrategy, SecureStrategy, from_json

NODE = Node(device="cpu", description="cpu", cpu_count=2, matmul_gflops=10.0, memory_bytes=2**34, host="test-host",
            cpu_model="test cpu")
SLOW = Link("slow-test", latency_s=2e-3, bandwidth_bytes_per_s=1e7)


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "secureinfer.cli", "bench", "sweep", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def test_tiny_sweep_rows_resume_and_errors(tmp_path):
    lean = SecureStrategy(profile="lean", frac_bits=18)
    runs = [Run(Case("tiny-gpt2", 4, 1, 2), lean, LINKS["local"]),
            Run(Case("tiny-gpt2", 4, 1, 2), lean, SLOW),
            Run(Case("tiny-bert", 8, 2, 0), PlaintextStrategy(precision="fp32"), LINKS["local"]),
            Run(Case("tiny-gpt2", 300, 1, 1), PlaintextStrategy(precision="fp32"), LINKS["local"])]  # > max_positions
    st = open_store(tmp_path / "s.sqlite")
    result = sweep.run_sweep(runs, st, nodes={"cpu": NODE}, progress=False)
    assert (result.planned, result.measured, result.skipped_existing, result.errors) == (4, 4, 0, 1)
    rows = {(r.model, r.seq_len, r.strategy_name, r.latency_s): r for r in st.query()}
    assert len(rows) == 4

    local = rows[("tiny-gpt2", 4, "secure-lean-f18-cpu", 0.0)]
    slow = rows[("tiny-gpt2", 4, "secure-lean-f18-cpu", 2e-3)]
    for r in (local, slow):
        assert r.status == "ok" and r.error is None and r.mode == "secure" and r.task == "generate"
        assert r.arch == "gpt2" and r.n_layers == 2 and r.hidden == 64 and r.vocab == 256 and r.n_params > 10_000
        assert r.host == "test-host" and r.device == "cpu" and r.cpu_count == 2 and r.matmul_gflops == 10.0
        assert 0 < r.prefill_s <= r.total_s and r.per_token_s > 0 and r.load_s >= 0
        assert r.rounds > r.prefill_rounds > 0
        assert 0 < r.bytes_per_party_max <= r.bytes_per_party_sum <= 3 * r.bytes_per_party_max
        assert r.peak_rss_mb > 50 and r.peak_device_mb is None
        assert r.max_abs_err < 1.0 and r.min_cosine > 0.99 and r.tokens_equal is not None
        assert from_json(r.strategy_json) == SecureStrategy(profile="lean", frac_bits=18)
        steps = json.loads(r.steps_json)
        assert len(steps) == 2 and sum(s["rounds"] for s in steps) == r.rounds
        assert json.loads(r.env_json)["engine"] == "mpc.models.session"
    assert slow.bandwidth_bytes_per_s == 1e7 and local.bandwidth_bytes_per_s is None
    assert slow.rounds == local.rounds and slow.bytes_per_party_max == local.bytes_per_party_max
    assert slow.total_s > 0.5 * slow.rounds * slow.latency_s  # every round waits at least one latency

    bert = rows[("tiny-bert", 8, "plain-fp32-cpu", 0.0)]
    assert bert.status == "ok" and bert.task == "embed" and bert.gen_tokens == 0 and bert.batch == 2
    assert bert.per_token_s is None and bert.rounds is None and bert.tokens_equal is None
    assert 0 < bert.total_s == bert.prefill_s and bert.max_abs_err < 1e-4 and bert.min_cosine > 0.99999

    failed = rows[("tiny-gpt2", 300, "plain-fp32-cpu", 0.0)]
    assert failed.status == "error" and "max_positions" in failed.error and failed.total_s is None
    assert "traceback" in json.loads(failed.env_json)

    again = sweep.run_sweep(runs, st, nodes={"cpu": NODE}, progress=False)  # resumable: nothing left to do
    assert (again.measured, again.skipped_existing) == (0, 4) and len(st) == 4
    st.rename_key(local.key, "stale-recipe")  # a key made by an older recipe is recomputed from the row itself
    assert sweep.rekey(st) == 1 and st.has(local.key) and not st.has("stale-recipe")
    moved = Node(**{**NODE.__dict__, "host": "elsewhere"})  # another machine: its own keys
    assert sweep.key_for(runs[0], moved) != sweep.key_for(runs[0], NODE)
    assert sweep.key_for(runs[0], NODE) == sweep.key_for(Run(Case("tiny-gpt2", 4, 1, 2), lean, LINKS["local"]),
                                                           NODE)


def test_strategy_key_leaves_out_defaults():
    """Only non-default fields enter a key, so adding a defaulted field to a strategy keeps old keys valid."""
    assert sweep.strategy_key(SecureStrategy()) == {"mode": "secure"}
    assert sweep.strategy_key(SecureStrategy(profile="lean", frac_bits=16)) == \
        {"mode": "secure", "profile": "lean", "frac_bits": 16}
    assert sweep.strategy_key(PlaintextStrategy(precision="bf16", static_cache=True)) == \
        {"mode": "plaintext", "precision": "bf16", "static_cache": True}


def test_grid_and_skips():
    runs, skipped = sweep.build_grid("small", devices=["cpu"])
    names = {r.strategy.name for r in runs}
    assert {f"secure-{p}-f{f}-cpu" for p in ("accurate", "fast", "lean") for f in (16, 18)} <= names
    assert {"plain-fp64-cpu", "plain-fp32-cpu", "plain-bf16-cpu"} <= names
    assert {r.case.model for r in runs} == {"tiny-gpt2", "tiny-llama", "tiny-bert", "gpt2-base-2L", "minilm",
                                            "smollm2"}
    assert {r.link.name for r in runs if r.strategy.mode == "plaintext"} == {"local"}
    assert {r.link.name for r in runs if r.case.model == "tiny-gpt2" and r.strategy.mode == "secure"} == \
        {"local", "lan", "metro"}
    assert len({r.label() for r in runs}) == len(runs)
    if sweep.public_weights_support():
        assert "secure-lean-f18-pubw-cpu" in skipped
    if sweep.fast_engine()[0] is None:
        assert "plain-fp32-int8-cpu" in skipped
    for name in skipped:
        assert name not in names
    only, _ = sweep.build_grid("small", models=["tiny-bert"], devices=["cpu"], links=["wan"], repeats=2,
                               strategy_filter=["secure-lean"])
    want = {"secure-lean-f16-cpu", "secure-lean-f18-cpu"} | \
        (set() if sweep.public_weights_support() else {"secure-lean-f18-pubw-cpu"})
    assert {(r.case.model, r.strategy.name, r.link.name) for r in only} == {("tiny-bert", n, "wan") for n in want}
    assert len(only) == 2 * len(want) * 2  # 2 cases x strategies x 2 repeats
    with pytest.raises(ValueError, match="unknown sweep models"):
        sweep.build_grid("small", models=["gpt5"])
    with pytest.raises(ValueError, match="decoder"):
        Case.parse("tiny-gpt2:8:1:0")


def test_selector_grid_links_per_case():
    """The selector grid runs the long-latency links only on its single-forward cases, and plaintext only locally."""
    runs, _ = sweep.build_grid("selector", devices=["cpu"])
    far = {str(r.case) for r in runs if r.link.name in ("wan", "slow")}
    assert far == {"tiny-gpt2:8:1:1", "tiny-llama:8:1:1", "tiny-bert:16:1:0", "tiny-bert:64:2:0"}
    assert {r.link.name for r in runs if str(r.case) == "tiny-gpt2:16:4:2" and r.strategy.mode == "secure"} == \
        {"local", "metro"}
    assert {r.link.name for r in runs if r.strategy.mode == "plaintext"} == {"local"}
    assert {r.case.model for r in runs} >= {"small-gpt2", "small-llama", "small-bert"}
    assert sweep.LINKS["slow"].latency_s == 0.05 and sweep.LINKS["slow"].bandwidth_bytes_per_s == 2.5e6
    assert len({r.label() for r in runs}) == len(runs)


def test_cli_help_lists_the_sweep_catalog():
    """The CLI's help (written out in secureinfer/cli/bench.py, so the parser needs no torch) names every model,
    link and grid."""
    from secureinfer.cli import bench

    for name, spec in sweep.MODELS.items():
        assert f"  {name:<13} {spec.what}\n" in bench.SWEEP_EPILOG
    for name in sweep.LINKS:
        assert f"\n  {name:<13} " in bench.SWEEP_EPILOG
    out = subprocess.run([sys.executable, "-c", "import sys; from secureinfer import cli; cli.build_parser(); "
                          "print('torch' in sys.modules)"], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
    assert set(sweep.GRIDS) == {"small", "medium", "full", "selector"}


def test_cli_dry_run_and_one_run(tmp_path):
    out = _cli("--dry-run", "--models", "tiny-gpt2", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    n = int(next(x for x in lines if x.endswith(" runs")).split()[0])
    assert n == len(sweep.build_grid("small", models=["tiny-gpt2"], devices=["cpu"])[0]) > 20
    assert "tiny-gpt2:8:1:4 secure-accurate-f18-cpu @metro" in out.stdout
    assert "tiny-gpt2:8:1:4 plain-bf16-cpu" in out.stdout

    store, csv = tmp_path / "s.sqlite", tmp_path / "s.csv"
    args = ("--case", "tiny-bert:8:1:0", "--strategy", "plain-fp32", "--device", "cpu", "--store", str(store),
            "--csv", str(csv), "--host", "cli-test")
    out = _cli(*args[:-6], cwd=tmp_path)  # no --store: no default path, a clear error, nothing written
    assert out.returncode == 2 and "--store FILE is required" in out.stderr and list(tmp_path.iterdir()) == []
    out = _cli(*args)
    assert out.returncode == 0, out.stderr
    assert "measured 1 runs (0 errors)" in out.stderr and "1/1" in out.stderr  # progress bar
    assert len(csv.read_text().splitlines()) == 2
    out = _cli(*args, "--quiet")
    assert out.returncode == 0 and "measured 0 runs (0 errors), 1 already in the store" in out.stderr
    out = _cli("--case", "nope:1:1:1")
    assert out.returncode == 2 and "unknown sweep model" in out.stderr


def test_fast_engine_strategies(tmp_path):
    """Plaintext decoder strategies run on the fast engine when it is importable (else they are skipped)."""
    fast, why = sweep.fast_engine()
    if fast is None:
        pytest.skip(why)
    runs = [Run(Case("tiny-llama", 4, 2, 3), PlaintextStrategy(precision="fp32", static_cache=True), LINKS["local"]),
            Run(Case("tiny-llama", 4, 2, 3), PlaintextStrategy(precision="fp32", batch_requests=True),
                LINKS["local"])]
    st = open_store(tmp_path / "s.sqlite")
    assert sweep.run_sweep(runs, st, nodes={"cpu": NODE}, progress=False).errors == 0
    static, batched = (st.query(strategy_name=r.strategy.name)[0] for r in runs)
    for r in (static, batched):
        assert r.status == "ok" and r.tokens_equal is True and r.rounds is None and r.total_s > 0
        assert json.loads(r.env_json)["engine"] == "mpc.models.fast"
    assert static.max_abs_err < 1e-4 and static.min_cosine > 0.9999 and len(json.loads(static.steps_json)) == 3
    assert batched.max_abs_err is None and json.loads(batched.env_json)["derived_per_token"] is True
