"""The anchor harness: projections, accuracy figures, ratios, a failed install skipped with its reason, and a real
run of secureinfer and transformers on a tiny BERT workload through the runners' subprocess protocol."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from benchmarks.anchors import __main__ as anchors_main, accuracy, harness, projection, report, workloads

from secureinfer.lab.bench.model import init_like_hf
from secureinfer.models.config import ModelConfig


# ------------------------------------------------------------------------------------------------ projection


def test_projection_adds_latency_per_round_and_busiest_party_bytes():
    link = projection.Link("test", 1e9, 1e-3)
    got = projection.project(2.0, 100, [10**9, 2 * 10**9, 5 * 10**8], link)
    assert got == pytest.approx(2.0 + 100 * 1e-3 + 2e9 * 8 / 1e9)


def test_projection_without_rounds_is_none_and_negative_input_is_refused():
    assert projection.project(1.0, None, [1, 2, 3], projection.LINKS[0]) is None
    assert projection.project_all(1.0, 5, None) == {link.name: None for link in projection.LINKS}
    with pytest.raises(ValueError):
        projection.project(1.0, -1, [1, 2, 3], projection.LINKS[0])


def test_slower_links_project_slower():
    figures = list(projection.project_all(10.0, 1000, [5 * 10**8] * 3).values())
    assert figures == sorted(figures) and figures[0] > 10.0


# ------------------------------------------------------------------------------------------------ accuracy


def test_accuracy_figures_for_hidden_states_and_logits():
    ref = np.arange(24, dtype=np.float64).reshape(1, 4, 6) + 1.0
    out = ref.copy()
    out[0, 2, 3] += 0.5
    a = accuracy.compare(out, ref, "last_hidden_state")
    assert a["max_abs_diff"] == pytest.approx(0.5) and a["mean_abs_diff"] == pytest.approx(0.5 / 24)
    assert 0.99 < a["min_row_cosine"] < 1.0 and a["embedding_cosine"] > a["min_row_cosine"]
    logits = np.array([[0.1, 3.0, 0.2]])
    assert accuracy.compare(logits[:, ::-1], logits, "last_logits")["top1_agreement"] == 1.0
    assert accuracy.compare(np.array([[3.0, 0.1, 0.2]]), logits, "last_logits")["top1_agreement"] == 0.0


def test_accuracy_rejects_a_wrong_shape_and_flags_non_finite_output():
    with pytest.raises(ValueError, match="shape"):
        accuracy.compare(np.zeros((1, 3)), np.zeros((1, 4)), "last_logits")
    bad = accuracy.compare(np.array([[np.nan, 1.0]]), np.ones((1, 2)), "last_logits")
    assert bad == {"finite": False}
    good = accuracy.compare(np.ones((1, 2)), np.ones((1, 2)), "last_logits")
    assert accuracy.at_least_as_accurate(good, bad) and not accuracy.at_least_as_accurate(bad, good)


def test_at_least_as_accurate_needs_both_figures():
    base = {"finite": True, "max_abs_diff": 1e-3, "min_row_cosine": 0.9999}
    assert accuracy.at_least_as_accurate(base, {**base, "max_abs_diff": 2e-3})
    assert not accuracy.at_least_as_accurate(base, {**base, "max_abs_diff": 5e-4})
    assert not accuracy.at_least_as_accurate(base, {**base, "min_row_cosine": 0.99999})


# ------------------------------------------------------------------------------------------------ ratios


def test_ratios_are_anchor_over_ours_and_skip_systems_without_figures():
    fine = {"finite": True, "max_abs_diff": 1e-3, "min_row_cosine": 0.9999}
    results = {"secureinfer": {"seconds": 10.0, "bytes_per_party": [5e8, 4e8, 4e8], "accuracy": fine},
               "spu": {"seconds": 45.0, "bytes_per_party": [1.3e9, 1.37e9, 1.2e9],
                       "accuracy": {**fine, "max_abs_diff": 3e-3}},
               "transformers": {"seconds": 0.05, "bytes_per_party": None, "accuracy": fine},
               "crypten": {"skipped": "install failed: no wheel"}}
    got = harness.ratios(results)
    assert got["spu"]["time"] == pytest.approx(4.5) and got["spu"]["bytes"] == pytest.approx(1.37e9 / 5e8)
    assert got["spu"]["at_least_as_accurate"] is True
    assert "bytes" not in got["transformers"] and "crypten" not in got
    assert harness.ratios({"spu": results["spu"]}) == {}


# ------------------------------------------------------------------------------------------------ environments


def test_a_failed_install_is_skipped_with_its_reason(tmp_path):
    """A real failing build (a venv without pip asked to pip-install) becomes a skip with the reason, not a crash."""
    system = harness.System("broken", "nothing.py", "tests.benchmarks.broken_env")
    cfg = harness.HarnessConfig(env_dir=tmp_path / "envs", work_dir=tmp_path / "work")
    logged: list[str] = []
    env = harness.prepare_environment(system, cfg, logged.append)
    assert env.python is None and env.skipped is not None and "install failed" in env.skipped
    assert "pip" in env.skipped
    assert any("skipping broken" in line for line in logged)
    result = harness.run_system(system, env, tmp_path / "w.json", np.zeros(1), "last_logits", cfg, logged.append)
    assert result == {"skipped": env.skipped}


# ------------------------------------------------------------------------------------------------ what a result records

REPO = Path(__file__).resolve().parents[2]


def test_the_recorded_command_reruns_from_the_repository_root_and_names_no_folder_of_this_machine(tmp_path,
                                                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--work-dir", "/elsewhere/anc1", "--json", "/elsewhere/anc1/a.json", f"--markdown={tmp_path}/out/a.md",
            "--workload", "minilm"]
    cfg = harness.HarnessConfig(work_dir=Path("/elsewhere/anc1"), env_dir=Path(".anchors"))
    command, config = anchors_main.recorded(cfg, argv)
    assert command == ("python -m benchmarks.anchors --work-dir OUT/anc1 --json OUT/anc1/a.json "
                       "--markdown=out/a.md --workload minilm")
    assert config["work_dir"] == "OUT/anc1" and config["env_dir"] == ".anchors" and config["repeats"] == "1"


def test_a_run_through_the_cli_records_the_cli_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prog = ("secureinfer", "bench", "anchors")
    command, _config = anchors_main.recorded(harness.HarnessConfig(), ["--workload", "minilm"], prog)
    assert command == "secureinfer bench anchors --workload minilm"


def test_folders_default_to_the_checkouts_root_and_are_absolute_wherever_the_harness_starts(tmp_path, monkeypatch):
    """The runners run from the checkout's root, so a folder given relative to another working directory is made
    absolute first, and the default venvs are the checkout's own (.anchors, ignored by git), not a new copy here."""
    monkeypatch.chdir(tmp_path)
    args = anchors_main.parse([])
    assert args.env_dir == REPO / ".anchors" and args.work_dir == REPO / ".anchors" / "work"
    cfg = harness.HarnessConfig(env_dir=Path("envs"), work_dir=Path("out/work"))
    assert cfg.env_dir == tmp_path / "envs" and cfg.work_dir == tmp_path / "out" / "work"
    system = harness.SYSTEMS["transformers"]
    env = harness.Environment(Path(sys.executable))
    cmd = harness.runner_command(system, env, cfg.work_dir / "w.json", cfg.work_dir / "r.json",
                                 cfg.work_dir / "r.npy", cfg)
    assert [cmd[i + 1] for i, arg in enumerate(cmd) if arg in ("--workload", "--out", "--output-npy")] == [
        str(tmp_path / "out" / "work" / name) for name in ("w.json", "r.json", "r.npy")]


def test_committed_results_name_no_absolute_path():
    found = [f"{path.relative_to(REPO)}: {m.group(0)}" for path in sorted((REPO / "benchmarks").rglob("*.json"))
             for m in re.finditer(r'"/[a-z][^"]*"', path.read_text())]
    assert found == []


# ------------------------------------------------------------------------------------------------ a real run


def _tiny_bert() -> workloads.Workload:
    cfg = ModelConfig(arch="bert", vocab_size=100, hidden=32, n_layers=1, n_heads=2, n_kv_heads=2, head_dim=16,
                      intermediate=64, max_positions=16, norm_eps=1e-12, act="gelu", type_vocab_size=2)
    params = {k: v.double() for k, v in init_like_hf(cfg, 0.02, 0, scaled_proj=False).items()}
    ids = torch.arange(3, 11).reshape(1, 8)
    return workloads.Workload("tiny", cfg, params, ids, torch.ones_like(ids))


@pytest.mark.slow
def test_secureinfer_two_profiles_and_transformers_run_side_by_side_on_a_tiny_bert(tmp_path):
    cfg = harness.HarnessConfig(anchors=("transformers",), env_dir=tmp_path / "envs", work_dir=tmp_path / "work",
                                breakdown=True, timeout_s=600, profiles=("accurate", "lean"))
    cfg.work_dir.mkdir()
    outcome = harness.Outcome()
    envs = harness.prepare_all(cfg, outcome, lambda _: None)
    result = harness.run_workload(_tiny_bert(), envs, cfg, lambda _: None)
    ours, plain = result["systems"]["secureinfer"], result["systems"]["transformers"]
    print({k: ours["accuracy"][k] for k in ("max_abs_diff", "min_row_cosine")}, ours["seconds"], ours["rounds"])
    # Tolerances: f=18 fixed point through one layer: hidden states within 5e-3 (LayerNorm'd, scale ~3); fp32 1e-4.
    assert ours["accuracy"]["max_abs_diff"] < 5e-3 and ours["accuracy"]["min_row_cosine"] > 0.9999
    assert plain["accuracy"]["max_abs_diff"] < 1e-4
    assert ours["rounds"] > 10 and min(ours["bytes_per_party"]) > 0 and ours["breakdown"]["by_model_op"]
    assert set(ours["projection"]) == {link.name for link in projection.LINKS}
    assert plain["bytes_per_party"] is None and "projection" not in plain
    assert result["ratios"]["transformers"]["time"] > 0
    lean = result["systems"]["secureinfer-lean"]
    assert lean["config"]["profile"] == "lean" and "breakdown" not in lean and lean["accuracy"]["max_abs_diff"] < 5e-2
    assert set(result["ratios_by_profile"]) == {"secureinfer", "secureinfer-lean"}
    assert result["ratios_by_profile"]["secureinfer-lean"]["transformers"]["time"] > 0
    outcome.results["tiny"] = result
    text = report.markdown(outcome) + report.breakdown_markdown(outcome)
    assert "| secureinfer |" in text and "| transformers |" in text and "per model op" in text
    assert "Against secureinfer-lean: transformers time" in text
    json.dumps(dataclasses.asdict(outcome))  # everything the harness keeps is JSON-serialisable
    assert math.isfinite(ours["seconds"])
