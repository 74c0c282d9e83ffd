"""The analytic cost model (selector/opcosts.py, selector/cost.py): op tables linear in the element count, rounds
and bytes composed from them equal to what the engine measures, latency against the sweep rows after calibration."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch

from secureinfer.models.config import ModelConfig, parameter_shapes
from secureinfer.mpc import runtime
from secureinfer.mpc.approx import profile as profiles
from secureinfer.mpc.models import session
from secureinfer.mpc.nn import activations
from secureinfer.mpc.nn import attention as nn_attention
from secureinfer.mpc.party import EngineConfig
from secureinfer.mpc.ring import FixedPoint
from secureinfer.selector.cost import decode_steps, nnls
from secureinfer.selector.features import RequestFeatures, SelectorError
from secureinfer.selector.opcosts import OpKey, levels
from secureinfer.selector.records import quiet, request_of, samples, strategy_of
from secureinfer.strategy import PlaintextStrategy, SecureStrategy

from .conftest import committee, tiny_gpt2, worker


def test_op_table_extrapolates_to_larger_inputs(cost_model):
    """Bytes are linear in the element count and rounds constant: the two-size fit predicts a 5x larger run."""
    key = OpKey("lean", 16)
    table = cost_model.table(key)
    prof = profiles.get("lean")
    x = torch.linspace(-5, 5, 1000, dtype=torch.float64)
    sim = runtime.simulate(lambda p, s: activations.even_split(p, s, prof.gelu, prof), inputs=[x],
                           config=EngineConfig(fxp=FixedPoint(16)))
    measured = sum(s.bytes_sent for s in sim.stats) / 3
    assert table["gelu"].bytes(1000) == pytest.approx(measured, rel=0.01)
    assert table["gelu"].rounds == sim.max_rounds


def test_attention_composition_matches_the_engine(cost_model):
    """Scores, max tree, exp, reciprocal, e @ v and 1/sum composed from the table equal attend() on real shares."""
    table = cost_model.table(OpKey("accurate", 18))
    b, h, tq, tk, d = 1, 2, 5, 9, 4
    q, k, v = (torch.randn(b, h, n, d, dtype=torch.float64) * 0.5 for n in (tq, tk, tk))
    prof = profiles.get("accurate")
    sim = runtime.simulate(lambda p, qs, ks, vs: nn_attention.attend(p, qs, ks, vs, prof, scale=1.0, causal=True),
                           inputs=[q, k, v])
    rows = b * h * tq
    kept = b * h * (tq * (tk - tq) + tq * (tq + 1) / 2)
    composed = (table["trunc"].bytes(rows * tk) + table["cmp"].bytes(rows * (tk - 1)) + table["exp"].bytes(kept)
                + table["recip"].bytes(rows) + table["trunc"].bytes(rows * d) + table["prod30"].bytes(rows * d))
    rounds = (2 * table["trunc"].rounds + levels(tk) * table["cmp"].rounds + table["exp"].rounds
              + table["recip"].rounds + table["prod30"].rounds)
    assert composed == pytest.approx(sum(s.bytes_sent for s in sim.stats) / 3, rel=0.02)
    assert abs(rounds - sim.max_rounds) <= 2


def _random_params(cfg: ModelConfig, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in parameter_shapes(cfg).items():
        t = torch.randn(shape, generator=g, dtype=torch.float64)
        out[name] = t / math.sqrt(shape[-1]) if len(shape) > 1 else 1.0 + 0.1 * t
    return out


def test_counts_equal_a_fresh_secure_generation(cost_model):
    """A LLaMA-shaped decoder (grouped KV heads, rotary, SiLU) at a shape the sweep never ran: prefill + 2 decode
    steps; predicted rounds and bytes per party within 2% of the session's."""
    cfg = ModelConfig(arch="llama", vocab_size=96, hidden=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                      intermediate=48, max_positions=64, norm_eps=1e-5, act="silu", rope_theta=10000.0,
                      attention_bias=False, mlp_bias=False)
    params = _random_params(cfg, 1)
    ids = torch.randint(0, 96, (2, 6), generator=torch.Generator().manual_seed(2))
    _, report = session.secure_generate(cfg, params, ids, 3, profile=profiles.get("lean"),
                                        config=EngineConfig(fxp=FixedPoint(16)))
    request = RequestFeatures.for_model(cfg, model="t", seq_len=6, batch=2, gen_tokens=3)
    counts = cost_model.secure_counts(request, SecureStrategy(profile="lean", frac_bits=16))
    assert counts.steps == len(report.steps) == 3
    print(f"llama: rounds {counts.rounds:.0f} predicted vs {report.rounds} measured; bytes/party "
          f"{counts.bytes:.0f} vs {sum(report.bytes_per_party) / 3:.0f}")
    assert counts.rounds == pytest.approx(report.rounds, rel=0.02)
    assert counts.bytes == pytest.approx(sum(report.bytes_per_party) / 3, rel=0.02)


def test_counts_match_the_sweep_rows(cost_model, sweep_records):
    """Every secure sweep row (CPU and H200): rounds within 2%, bytes per party (mean and busiest) within 3%."""
    worst_rounds = worst_bytes = 0.0
    rows = [r for r in sweep_records if r.mode == "secure" and r.rounds]
    assert len(rows) >= 150
    for r in rows:
        c = cost_model.secure_counts(request_of(r), strategy_of(r))
        worst_rounds = max(worst_rounds, abs(c.rounds / r.rounds - 1))
        worst_bytes = max(worst_bytes, abs(c.bytes / (r.bytes_per_party_sum / 3) - 1),
                          abs(c.bytes / r.bytes_per_party_max - 1) / 1.5)
    print(f"{len(rows)} secure rows: worst rounds error {worst_rounds:.2%}, worst bytes error {worst_bytes:.2%}")
    assert worst_rounds < 0.02 and worst_bytes < 0.03


def test_latency_after_calibration(cost_model, sweep_records):
    """Calibrated on the sweep rows measured at a load of at most 1.75 per CPU, secure latency is within a median
    factor e^0.3 (35%) per device kind; plaintext (millisecond timings on a shared 2-core box, very noisy) within
    e^1.5 on the CPU, e^0.5 on CUDA."""
    data = samples(quiet(sweep_records))
    cost_model.calibrate(data)
    errors: dict[tuple[str, str], list[float]] = {}
    for request, option, strategy, total in data:
        kind = "cuda" if strategy.device.startswith("cuda") else "cpu"
        pred = cost_model.predict(request, option, strategy).total_s
        errors.setdefault((strategy.mode, kind), []).append(abs(math.log(pred / total)))
    medians = {k: statistics.median(v) for k, v in errors.items()}
    print("median |log(predicted / measured)|:", {f"{m}/{k}": round(v, 3) for (m, k), v in medians.items()})
    assert medians[("secure", "cpu")] < 0.3 and medians[("secure", "cuda")] < 0.3
    assert medians[("plaintext", "cpu")] < 1.5 and medians[("plaintext", "cuda")] < 0.5


def test_latency_terms_move_the_right_way(cost_model):
    """More link latency, less bandwidth, more tokens, a slower device: each makes a secure plan slower."""
    s = SecureStrategy(profile="lean")
    base = cost_model.predict(tiny_gpt2(), committee("c", ("a", "b", "c")), s).total_s
    assert cost_model.predict(tiny_gpt2(), committee("c", ("a", "b", "c"), latency_s=0.02), s).total_s > base * 5
    assert cost_model.predict(tiny_gpt2(), committee("c", ("a", "b", "c"), bandwidth=1e6), s).total_s > base
    assert cost_model.predict(tiny_gpt2(gen_tokens=8), committee("c", ("a", "b", "c")), s).total_s > base
    big = tiny_gpt2(hidden=768, n_heads=12, intermediate=3072, vocab=50257, n_params=124_000_000, n_layers=12)
    assert (cost_model.predict(big, committee("c", ("a", "b", "c"), gflops=5), s).total_s
            > cost_model.predict(big, committee("c", ("a", "b", "c"), gflops=50), s).total_s)
    fast, slow = PlaintextStrategy(precision="fp32"), PlaintextStrategy(precision="fp64")
    assert cost_model.predict(big, worker("w"), slow).total_s > cost_model.predict(big, worker("w"), fast).total_s


def test_decode_steps_and_placement_errors(cost_model):
    assert decode_steps(tiny_gpt2(seq_len=5, gen_tokens=3)) == [(5, 0, True), (1, 5, True), (1, 6, True)]
    bert = RequestFeatures(model="b", arch="bert", n_params=1, n_layers=2, hidden=64, vocab=256, seq_len=16)
    assert decode_steps(bert) == [(16, 0, False)]
    with pytest.raises(SelectorError, match="committee"):
        cost_model.predict(tiny_gpt2(), worker("w"), SecureStrategy())
    with pytest.raises(SelectorError, match="one plaintext worker"):
        cost_model.predict(tiny_gpt2(), committee("c", ("a", "b", "c")), PlaintextStrategy())


def test_nnls_respects_the_sign_constraint():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (40, 3))
    b = a @ np.array([2.0, 0.0, 0.5]) - 0.3 * a[:, 1]  # the best unconstrained second coefficient is negative
    x = nnls(a, b)
    assert np.all(x >= 0) and x[1] == 0.0
    assert x[0] == pytest.approx(2.0, abs=0.3)


def test_model_shapes_cover_the_sweep_models():
    """records.MODEL_SHAPES has every sweep model, with the heads and MLP width of its config."""
    from secureinfer.lab.bench.sweep.models import MODELS, load_model
    from secureinfer.selector.records import MODEL_SHAPES

    assert set(MODELS) <= set(MODEL_SHAPES)
    for name in MODELS:
        if name.startswith(("tiny-", "small-")):
            cfg, _ = load_model(name)
            assert MODEL_SHAPES[name] == (cfg.n_heads, cfg.n_kv_heads, cfg.intermediate), name
