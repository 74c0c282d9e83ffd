"""Device-aware pricing: a CPU strategy on a GPU node is priced at the node's CPU speed, both devices are offered on
a GPU node, the predictor's features tell them apart, and the store's CPU rows of a GPU host give its CPU speed."""

from __future__ import annotations

import dataclasses
import math

import pytest

from secureinfer.perfstore import RunRecord, run_key
from secureinfer.selector.cost import option_gflops
from secureinfer.selector.evalcases import cases_from_records
from secureinfer.selector.features import CPU_GFLOPS_PER_CORE, Prediction
from secureinfer.selector.predictor import FEATURES, feature_vector
from secureinfer.selector.records import host_cpu_gflops, node_of, record_of
from secureinfer.selector.space import enumerate_candidates
from secureinfer.strategy import PlaintextStrategy, SecureStrategy, to_json

from .conftest import H200, committee, gpu_node, tiny_gpt2, worker


def test_gpu_node_prices_cpu_work_at_cpu_speed():
    node = gpu_node("g")
    assert node.gflops_for("cuda") == 38000.0
    assert node.gflops_for("cpu") == pytest.approx(CPU_GFLOPS_PER_CORE * 16)  # no CPU speed reported: cpu_count
    measured = dataclasses.replace(node, cpu_gflops=1100.0)
    assert measured.gflops_for("cpu") == 1100.0
    opt = dataclasses.replace(committee("c", ("a", "b", "c"), gpu=True),
                              nodes=tuple(dataclasses.replace(gpu_node(n), cpu_gflops=1100.0) for n in "abc"))
    assert option_gflops(opt, "cuda") == 38000.0 and option_gflops(opt, "cpu") == 1100.0


def test_cost_model_and_predictor_tell_the_devices_apart(cost_model):
    """On a GPU committee the CPU strategy's matmul term is 38000/1100 times the CUDA one's (same counts), and the
    predictor's speed feature differs accordingly."""
    nodes = tuple(dataclasses.replace(gpu_node(n), cpu_gflops=1100.0) for n in "abc")
    opt = dataclasses.replace(committee("c", ("a", "b", "c"), gpu=True), nodes=nodes)
    req = tiny_gpt2()
    cpu, cuda = SecureStrategy(profile="lean", device="cpu"), SecureStrategy(profile="lean", device="cuda")
    f_cpu, f_cuda = cost_model.features(req, opt, cpu), cost_model.features(req, opt, cuda)
    assert f_cpu["macs_s"] / f_cuda["macs_s"] == pytest.approx(38000.0 / 1100.0)
    i = FEATURES.index("log_gflops")
    v_cpu = feature_vector(req, opt, cpu, Prediction(1.0))
    v_cuda = feature_vector(req, opt, cuda, Prediction(1.0))
    assert v_cuda[i] - v_cpu[i] == pytest.approx(math.log(38000.0 / 1100.0))
    wk = dataclasses.replace(worker("w", gpu=True), node=nodes[0])
    p_cpu = cost_model.features(req, wk, PlaintextStrategy(precision="fp32", device="cpu"))
    p_cuda = cost_model.features(req, wk, PlaintextStrategy(precision="fp32", device="cuda"))
    assert p_cpu["flops_s"] / p_cuda["flops_s"] == pytest.approx(38000.0 / 1100.0)


def test_space_offers_both_devices_on_a_gpu_node():
    cands = enumerate_candidates(tiny_gpt2(), [committee("c", ("a", "b", "c"), gpu=True), worker("w", gpu=True)])
    devices = {(c.strategy.mode, c.strategy.device) for c in cands}
    assert devices == {("secure", "cpu"), ("secure", "cuda"), ("plaintext", "cpu"), ("plaintext", "cuda")}
    cpu_only = enumerate_candidates(tiny_gpt2(), [committee("c", ("a", "b", "c"))])
    assert {c.strategy.device for c in cpu_only} == {"cpu"}


def _row(device: str, gflops: float, strategy) -> RunRecord:
    return RunRecord(key=run_key(d=device, s=strategy.name), timestamp=0.0, model="m", arch="gpt2", n_params=10_000,
                     n_layers=2, hidden=16, vocab=32, seq_len=8, batch=1, gen_tokens=2, task="generate",
                     device=device, cpu_count=16, matmul_gflops=gflops, memory_bytes=2**34, host="gpu-host",
                     latency_s=0.0, bandwidth_bytes_per_s=None, mode="secure", strategy_name=strategy.name,
                     strategy_json=to_json(strategy), total_s=1.0, max_abs_err=1e-3, rounds=10,
                     bytes_per_party_max=100)


def test_store_cpu_rows_give_a_gpu_hosts_cpu_speed():
    """A case on a host with CPU and CUDA rows stands on the GPU node, carrying the CPU rows' speed; a served CPU plan
    on a GPU node is recorded as a CPU row at that speed."""
    cpu_s, cuda_s = SecureStrategy(profile="lean", device="cpu"), SecureStrategy(profile="lean", device="cuda")
    rows = [_row("cpu", 1100.0, cpu_s), _row(H200, 38000.0, cuda_s)]
    assert host_cpu_gflops(rows) == {"gpu-host": 1100.0}
    (case,) = cases_from_records(rows)
    assert case.node.device == H200 and case.node.cpu_gflops == 1100.0
    assert {c.strategy.device for c in case.candidates} == {"cpu", "cuda"}
    assert node_of(rows[0]).gflops_for("cpu") == 1100.0
    from secureinfer.selector.features import Outcome, Plan

    plan = Plan(cpu_s, case.options()[0], Prediction(1.0), request=case.features)
    rec = record_of(plan, Outcome(total_s=0.5), case.features)
    assert (rec.device, rec.matmul_gflops) == ("cpu", 1100.0)
