"""`secureinfer bench model` plumbing and the op tracer behind its breakdown (the real benchmark runs are long)."""

from __future__ import annotations

import subprocess
import sys

import torch

from secureinfer.lab.bench import model as bench_model
from secureinfer.models.checkpoint import load_checkpoint
from secureinfer.mpc.models import session, trace

from tests.tinymodels import VOCAB


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "secureinfer.cli", *args], capture_output=True, text=True,
                          timeout=120)


def test_bench_model_cli_help_and_bad_profile():
    out = _cli("bench", "model", "--help")
    assert out.returncode == 0 and "minilm" in out.stdout and "smollm2" in out.stdout
    out = _cli("bench", "model", "--model", "minilm", "--profile", "nope")
    assert out.returncode == 2 and "unknown approximation profile" in out.stderr
    out = _cli("bench", "model", "--model", "bert-large")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_trace_adds_up_to_the_step(gpt2_dir):
    """The exclusive figures of every traced path sum to the step's own bytes, rounds-free ops included."""
    cfg, params = load_checkpoint(gpt2_dir[0], torch.float64)
    ids = torch.randint(0, VOCAB, (1, 6), generator=torch.Generator().manual_seed(0))
    _, report = session.secure_logits(cfg, params, ids, chunks=(5, 1), traced=True)
    for step in report.steps:
        for index, rec in enumerate(step.recordings):
            assert sum(s.bytes_sent for s in rec.paths.values()) == step.bytes_per_party[index]
            top = rec.by_top()
            assert {"embed", "attn.qkv", "attn.core", "attn.out", "layernorm", "mlp.fc1", "mlp.gelu", "mlp.fc2",
                    "lm_head", "output"} <= set(top)
            assert top["layernorm"].calls == 2 * cfg.n_layers + 1 and top["attn.core"].calls == cfg.n_layers
            leaf = rec.by_leaf()
            assert leaf["trunc"].bytes_sent > 0 and "msb" in leaf  # the protocols underneath are visible
        bd = bench_model.op_breakdown(list(step.recordings[:1]))
        assert set(bd) == {"by_model_op", "by_protocol", "inside_ops"} and "softmax" in bd["inside_ops"]
    print({k: round(v["seconds"], 3) for k, v in bench_model.op_breakdown([report.steps[0].recordings[0]])
           ["by_model_op"].items()})


def test_trace_is_off_outside_recording(gpt2_dir):
    cfg, params = load_checkpoint(gpt2_dir[0], torch.float64)
    ids = torch.randint(0, VOCAB, (1, 3), generator=torch.Generator().manual_seed(1))
    _, report = session.secure_logits(cfg, params, ids)
    assert report.steps[0].recordings == (None, None, None)
    with trace.instrument():
        from secureinfer.mpc.protocols import trunc
        assert getattr(trunc.from_additive, "__wrapped_by_trace__", False)
    assert not getattr(trunc.from_additive, "__wrapped_by_trace__", False)
