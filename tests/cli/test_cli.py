"""The `secureinfer` command line: help, version, `bench ops` end to end in a real subprocess, and `bench anchors`
from any folder."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import secureinfer
from secureinfer import cli
from secureinfer.cli import bench
from secureinfer.lab.bench import anchors

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "secureinfer.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def test_help_lists_subcommands_and_examples():
    out = _cli("--help")
    assert out.returncode == 0
    assert "bench" in out.stdout and "examples:" in out.stdout


def test_version():
    out = _cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"secureinfer {secureinfer.__version__}"


def test_bare_bench_shows_its_help_and_fails():
    out = _cli("bench")
    assert out.returncode == 2
    assert "ops" in out.stdout


@pytest.mark.parametrize("group", ["bench", "certs", "node", "network", "selector"])
def test_every_bare_group_shows_its_help_and_fails(group, capsys):
    assert cli.main([group]) == 2
    assert capsys.readouterr().out.startswith(f"usage: secureinfer {group} ")


def test_every_bench_subcommand_runs_through_the_one_table():
    """`secureinfer bench WHAT` imports the module the table names, only when it runs, and calls its main(args)."""
    commands = next(a for a in cli.build_parser()._actions if a.dest == "command").choices
    kinds = next(a for a in commands["bench"]._actions if a.dest == "bench_kind").choices
    assert set(kinds) == set(bench.MODULES)
    for name, module in bench.MODULES.items():
        assert kinds[name].get_default("handler") is bench.run
        assert callable(importlib.import_module(module).main)


def test_bench_ops_unknown_op_is_a_clear_error():
    out = _cli("bench", "ops", "--only", "nope")
    assert out.returncode == 2
    assert "unknown op" in out.stderr and "matmul" in out.stderr


def test_bench_ops_cuda_without_gpu_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        return  # the GPU machine runs the CUDA benchmark for real; nothing to check here
    out = _cli("bench", "ops", "--device", "cuda")
    assert out.returncode == 2
    assert "no CUDA GPU" in out.stderr


def test_bench_ops_reports_json(tmp_path):
    target = tmp_path / "ops.json"
    out = _cli("bench", "ops", "--only", "lt", "--only", "matmul", "--repeat", "1", "--json", str(target))
    assert out.returncode == 0, out.stderr
    doc = json.loads(target.read_text())
    rows = {r["op"]: r for r in doc["results"]}
    assert set(rows) == {"lt", "matmul"}
    assert rows["lt"]["max_error"] == 0  # comparisons are exact
    assert rows["lt"]["rounds"] == 6
    assert rows["matmul"]["rounds"] == 2
    assert rows["matmul"]["max_error"] <= 1.0  # one truncation: below 1 ulp against the encoded inputs
    # secret x secret matmul: each party sends 2 elements per output at most (truncation) -> 3.2 MB at most
    assert all(0 < b <= 2 * 8 * 128 * 768 * 2 for b in rows["matmul"]["bytes_per_party"])
    assert rows["matmul"]["seconds"] > 0 and rows["matmul"]["peak_rss_mb"] > 0


@pytest.mark.parametrize("where", ["docs", "outside"])
def test_bench_anchors_runs_the_checkouts_anchors_from_any_folder(where, tmp_path):
    """Every argument, --help included, reaches the anchors' own command line, named as typed."""
    cwd = REPO / "docs" if where == "docs" else tmp_path
    out = _cli("bench", "anchors", "--help", cwd=cwd)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: secureinfer bench anchors [-h] [--workload {minilm,bert-base,gpt2}]")
    assert "secureinfer bench anchors --workload minilm" in out.stdout  # its examples, as typed here
    out = _cli("bench", "anchors", "--workload", "nope", cwd=cwd)
    assert out.returncode == 2 and "invalid choice: 'nope'" in out.stderr
    assert not (cwd / ".anchors").exists()


def test_bench_anchors_without_a_checkout_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    assert anchors.checkout() == REPO  # this installation is an editable one, from this checkout
    installed = tmp_path / "site-packages" / "secureinfer"
    installed.mkdir(parents=True)
    with pytest.raises(anchors.NoCheckout, match=r"installed from one: clone the repository .*pip install -e \."):
        anchors.checkout(installed)
    monkeypatch.setattr(anchors, "PACKAGE_DIR", installed)
    assert cli.main(["bench", "anchors", "--help"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"secureinfer bench anchors: the anchor benchmarks live in a source checkout "
                          f"(benchmarks/anchors), and secureinfer at {installed} was not") and err.count("\n") == 1
