"""The fast plaintext decoder against the float64 reference (plaintext.py): every strategy knob, tiny and real models.

Tolerances (tiny random checkpoints, logit scale ~8; figures seen on this machine in the comments):
  fp64 logits      max |diff| < 1e-10                        (seen ~2e-14)
  fp32 logits      max |diff| < 1e-4                         (seen ~1e-5)
  bf16 logits      relative Frobenius error < 6%, top-1 >= 90%  (seen 1.1% / 3.4%; transformers' own bf16: 1.2% / 3.3%)
  int8 (fp32)      relative Frobenius error < 8%, top-1 >= 85%  (seen 1.6% / 4.2%)
Greedy tokens must be identical (fp64, fp32) for static and dynamic caches, ragged prompts, the batching worker,
early-exit and draft-model speculation, and the graph code path (buckets, parked rows, fixed key length; driven on
the CPU by a replay stand-in). The CUDA tests (graphs, bf16/fp32, batching with graphs) skip without a GPU.
"""

from __future__ import annotations

import threading

import pytest
import torch

from secureinfer.models.checkpoint import load_checkpoint, packaged_checkpoint
from secureinfer.plaintext import reference as plaintext
from secureinfer.plaintext.fast import BatchingWorker, FastDecoder, quantize_int8
from secureinfer.strategy import PlaintextStrategy, StrategyError

from tests.tinymodels import VOCAB, save, tiny_gpt2, tiny_llama

ARCHS = ("gpt2", "llama")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """Tiny GPT-2 and GQA LLaMA checkpoints: arch -> (config, float64 params)."""
    root = tmp_path_factory.mktemp("fast")
    out = {}
    for arch, model in (("gpt2", tiny_gpt2(seed=1)), ("llama", tiny_llama(seed=3))):
        out[arch] = load_checkpoint(save(model, root / arch), torch.float64)
    return out


def _ids(batch: int, length: int, seed: int) -> torch.Tensor:
    """Random token ids (B, T), fixed by seed (test data, not secret randomness)."""
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def _ref_logits(cfg, params, ids: torch.Tensor) -> torch.Tensor:
    return plaintext.causal_lm_forward(cfg)(cfg, params, ids)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b).norm() / b.norm()).item()


# ---------------------------------------------------------------------------------------------- logits


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("precision,tol", [("fp64", 1e-10), ("fp32", 1e-4)])
def test_logits_match_plaintext(models, arch, precision, tol):
    cfg, params = models[arch]
    ids = _ids(3, 11, seed=0)
    dec = FastDecoder(cfg, params, PlaintextStrategy(precision=precision))
    ours, ref = dec.logits(ids), _ref_logits(cfg, params, ids)
    err = (ours.double() - ref).abs().max().item()
    print(f"{arch} {precision}: max |logit diff| = {err:.2e} (scale {ref.abs().max():.2f})")
    assert ours.dtype == dec.dtype and ours.shape == (3, 11, VOCAB)
    assert err < tol


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("static", [False, True])
def test_prefill_then_decode_steps_equal_full_logits(models, arch, static):
    cfg, params = models[arch]
    ids = _ids(2, 9, seed=1)
    dec = FastDecoder(cfg, params, PlaintextStrategy(precision="fp64", static_cache=static), max_len=16)
    ref = _ref_logits(cfg, params, ids)
    dec.reset(2)
    steps = [dec.prefill(ids[:, :5])] + [dec.decode_step(ids[:, i]) for i in range(5, 9)]
    assert (torch.stack(steps, dim=1) - ref[:, 4:]).abs().max().item() < 1e-10
    assert dec.cache.lengths[:2] == [9, 9]


@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_within_tolerance(models, arch):
    cfg, params = models[arch]
    ids = _ids(8, 16, seed=2)
    ours, ref = FastDecoder(cfg, params, PlaintextStrategy(precision="bf16")).logits(ids), _ref_logits(cfg, params, ids)
    rel, top1 = _rel(ours, ref), (ours.argmax(-1) == ref.argmax(-1)).float().mean().item()
    print(f"{arch} bf16: relative error {rel:.4f}, top-1 agreement {top1:.3f}, max |diff| "
          f"{(ours.double() - ref).abs().max():.3f}")
    assert rel < 0.06 and top1 >= 0.9


@pytest.mark.parametrize("arch", ARCHS)
def test_int8_weight_only_within_tolerance(models, arch):
    cfg, params = models[arch]
    ids = _ids(8, 16, seed=3)
    dec = FastDecoder(cfg, params, PlaintextStrategy(precision="fp32", quantization="int8"))
    assert dec.weights.blocks[0].attn.qkv.weight.dtype == torch.int8
    ours, ref = dec.logits(ids), _ref_logits(cfg, params, ids)
    rel, top1 = _rel(ours, ref), (ours.argmax(-1) == ref.argmax(-1)).float().mean().item()
    print(f"{arch} int8: relative error {rel:.4f}, top-1 agreement {top1:.3f}, max |diff| "
          f"{(ours.double() - ref).abs().max():.3f} (scale {ref.abs().max():.2f})")
    assert rel < 0.08 and top1 >= 0.85


def test_quantize_int8_per_channel():
    w = torch.randn(16, 40, generator=torch.Generator().manual_seed(4)) * torch.linspace(0.01, 3, 16)[:, None]
    q, scale = quantize_int8(w)
    assert q.dtype == torch.int8 and scale.shape == (16,) and int(q.abs().max()) == 127
    assert ((q.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-6).all()  # half a step per channel


# ---------------------------------------------------------------------------------------------- greedy


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("precision", ["fp64", "fp32"])
@pytest.mark.parametrize("static", [False, True])
def test_greedy_equals_plaintext(models, arch, precision, static):
    cfg, params = models[arch]
    ids = _ids(3, 6, seed=5)
    dec = FastDecoder(cfg, params, PlaintextStrategy(precision=precision, static_cache=static), max_len=20)
    want = plaintext.greedy_generate(cfg, params, ids, 12, eos_token_ids=())
    assert torch.equal(dec.generate(ids, 12, eos_token_ids=()), want)
    assert torch.equal(dec.generate(ids, 12, eos_token_ids=()), want)  # the reused (static) cache starts clean


@pytest.mark.parametrize("arch", ARCHS)
def test_eos_semantics_equal_plaintext(models, arch):
    cfg, params = models[arch]
    ids = _ids(3, 4, seed=6)
    free = plaintext.greedy_generate(cfg, params, ids, 8, eos_token_ids=())
    for eos in [(int(free[0, 2]),), (int(free[0, 1]), int(free[1, 3]), int(free[2, 0])), (VOCAB - 1,)]:
        want = plaintext.greedy_generate(cfg, params, ids, 8, eos_token_ids=eos)
        for static in (False, True):
            dec = FastDecoder(cfg, params, PlaintextStrategy(static_cache=static), max_len=16, check_every=3)
            assert torch.equal(dec.generate(ids, 8, eos_token_ids=eos), want), (eos, static)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("static", [False, True])
def test_ragged_prompts_equal_each_alone(models, arch, static):
    cfg, params = models[arch]
    ids = _ids(4, 9, seed=7)
    prompts = [ids[0, :2], ids[1], ids[2, :5], ids[3, :1]]
    dec = FastDecoder(cfg, params, PlaintextStrategy(precision="fp64", static_cache=static), max_len=20)
    out = dec.generate(prompts, 7, eos_token_ids=())
    for row, p in zip(out, prompts):
        assert torch.equal(row[None], plaintext.greedy_generate(cfg, params, p[None], 7, eos_token_ids=()))


# ---------------------------------------------------------------------------------------------- batching


def _submit_from_threads(worker: BatchingWorker, jobs: list[tuple[torch.Tensor, int]]) -> list[torch.Tensor]:
    """Submit every job from its own thread at once; return the results in job order."""
    futures: list = [None] * len(jobs)
    start = threading.Barrier(len(jobs))

    def client(i: int) -> None:
        start.wait()
        futures[i] = worker.submit(*jobs[i])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [f.result(timeout=120) for f in futures]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("static", [False, True])
def test_batching_worker_equals_single_requests(models, arch, static):
    cfg, params = models[arch]
    ids = _ids(7, 8, seed=8)
    jobs = [(ids[i, :1 + i], 3 + 2 * i) for i in range(7)]  # prompt lengths 1..7, 3..15 new tokens
    eos = (int(plaintext.greedy_generate(cfg, params, ids[2:3, :3], 3, eos_token_ids=())[0, 1]),)  # job 2 stops early
    dec = FastDecoder(cfg, params, PlaintextStrategy(static_cache=static, batch_requests=True), max_batch=3,
                      max_len=24)
    with BatchingWorker(dec, eos_token_ids=eos) as worker:
        results = _submit_from_threads(worker, jobs)
        late = worker.submit(ids[0, :4], 5).result(timeout=60)  # a request after the first wave
    assert worker.max_active == 3  # more requests than slots: some joined when others left
    for (prompt, n), got in zip(jobs + [(ids[0, :4], 5)], results + [late]):
        want = plaintext.greedy_generate(cfg, params, prompt[None], n, eos_token_ids=eos)[0]
        assert torch.equal(got, want)
        alone = FastDecoder(cfg, params, PlaintextStrategy(static_cache=static), max_len=24)
        assert torch.equal(got, alone.generate(prompt[None], n, eos_token_ids=eos)[0])
    assert len(results[2]) < jobs[2][1]


def test_batching_worker_rejects_bad_requests(models):
    cfg, params = models["gpt2"]
    with BatchingWorker(FastDecoder(cfg, params, max_batch=2, max_len=10)) as worker:
        with pytest.raises(ValueError, match="max_len"):
            worker.submit([1, 2, 3], 9).result(timeout=10)
        with pytest.raises(ValueError, match="vocabulary"):
            worker.submit([VOCAB], 2).result(timeout=10)
        assert worker.submit([1, 2], 2).result(timeout=30).shape == (2,)
    with pytest.raises(RuntimeError, match="closed"):
        worker.submit([1], 1).result(timeout=1)


# ---------------------------------------------------------------------------------------------- speculation


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("draft_layers", [1, 2])
def test_early_exit_speculation_equals_greedy(models, arch, k, draft_layers):
    cfg, params = models[arch]
    ids = _ids(3, 8, seed=9)
    prompts = [ids[0, :3], ids[1], ids[2, :6]]
    dec = FastDecoder(cfg, params, PlaintextStrategy(precision="fp64", static_cache=True, speculation="early_exit",
                                                     speculation_tokens=k), max_len=24, draft_layers=draft_layers)
    out = dec.generate(prompts, 13, eos_token_ids=())
    stats = dec.last_speculation
    print(f"{arch} k={k} draft_layers={draft_layers}: {stats}")
    for row, p in zip(out, prompts):
        assert torch.equal(row[None], plaintext.greedy_generate(cfg, params, p[None], 13, eos_token_ids=()))
    assert stats["drafted"] > 0
    if draft_layers == cfg.n_layers:
        assert stats["accepted"] == stats["drafted"]


@pytest.mark.parametrize("arch", ARCHS)
def test_early_exit_full_depth_draft_accepts_all_and_keeps_eos(models, arch):
    cfg, params = models[arch]
    ids = _ids(2, 5, seed=10)
    free = plaintext.greedy_generate(cfg, params, ids, 10, eos_token_ids=())
    eos = (int(free[0, 4]),)
    want = plaintext.greedy_generate(cfg, params, ids, 10, eos_token_ids=eos)
    dec = FastDecoder(cfg, params, PlaintextStrategy(precision="fp64", speculation="early_exit", speculation_tokens=4),
                      max_len=20, draft_layers=cfg.n_layers)  # the draft is the model: every draft is accepted
    assert torch.equal(dec.generate(ids, 10, eos_token_ids=eos), want)
    assert dec.last_speculation["accepted"] == dec.last_speculation["drafted"] > 0


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("drafter", ["other", "noisy", "same"])
def test_draft_model_speculation_equals_greedy(models, arch, drafter):
    cfg, params = models[arch]
    dcfg, dparams = models["gpt2" if arch == "llama" else "llama"] if drafter == "other" else (cfg, params)
    if drafter == "noisy":  # the same model with perturbed weights: drafts partly right
        gen = torch.Generator().manual_seed(17)
        dparams = {k: v + 0.1 * v.abs().mean() * torch.randn(v.shape, generator=gen, dtype=v.dtype)
                   for k, v in params.items()}
    ids = _ids(3, 7, seed=16)
    prompts = [ids[0, :2], ids[1], ids[2, :4]]
    draft = FastDecoder(dcfg, dparams, PlaintextStrategy(precision="fp64"), max_len=24)
    for k in (1, 4):
        dec = FastDecoder(cfg, params, PlaintextStrategy(precision="fp64", static_cache=True, speculation="draft",
                                                         speculation_tokens=k), max_len=24, draft=draft)
        out = dec.generate(prompts, 12, eos_token_ids=())
        stats = dec.last_speculation
        print(f"{arch} draft={drafter} k={k}: {stats}")
        for row, p in zip(out, prompts):
            assert torch.equal(row[None], plaintext.greedy_generate(cfg, params, p[None], 12, eos_token_ids=()))
        if drafter == "same":
            assert stats["accepted"] == stats["drafted"] > 0


# ---------------------------------------------------------------------------------------------- refusals


def test_refusals(models):
    cfg, params = models["llama"]
    with pytest.raises(StrategyError, match="needs the draft model"):
        FastDecoder(cfg, params, PlaintextStrategy(speculation="draft"))
    with pytest.raises(StrategyError, match="max_len"):
        FastDecoder(cfg, params, PlaintextStrategy(speculation="draft"), max_len=30,
                    draft=FastDecoder(cfg, params, max_len=20))
    with pytest.raises(StrategyError, match="static_cache"):
        FastDecoder(cfg, params, PlaintextStrategy(compile=True))
    if not torch.cuda.is_available():
        with pytest.raises(StrategyError, match="CUDA"):
            FastDecoder(cfg, params, PlaintextStrategy(device="cuda"))
    dec = FastDecoder(cfg, params, max_len=8)
    with pytest.raises(ValueError, match="max_len"):
        dec.generate(_ids(1, 5, seed=0), 5)
    with pytest.raises(ValueError, match="vocabulary"):
        dec.generate(torch.tensor([[VOCAB]]), 1)
    with pytest.raises(ValueError, match="max_positions"):
        FastDecoder(cfg, params, max_len=cfg.max_positions + 1)


# ---------------------------------------------------------------------------------------------- slow: compile, SmolLM2


@pytest.mark.slow
def test_compiled_decode_step_equals_eager(models):
    cfg, params = models["llama"]
    ids = _ids(2, 5, seed=11)
    dec = FastDecoder(cfg, params, PlaintextStrategy(static_cache=True, compile=True), max_len=16)
    want = plaintext.greedy_generate(cfg, params, ids, 8, eos_token_ids=())
    assert torch.equal(dec.generate(ids, 8, eos_token_ids=()), want)


@pytest.mark.slow
def test_smollm2_fp32_static_greedy_equals_plaintext():
    from secureinfer.models.checkpoint import load_tokenizer

    path = packaged_checkpoint("SmolLM2-135M-Instruct")
    cfg, params = load_checkpoint(path)  # float32 storage; the reference computes in float64
    tok = load_tokenizer(path)
    prompts = [tok(p)["input_ids"] for p in ("The capital of France is", "Write a haiku about the sea.")]
    dec = FastDecoder(cfg, params, PlaintextStrategy(precision="fp32", static_cache=True), max_len=64)
    got = dec.generate(prompts, 16, eos_token_ids=())
    for row, p in zip(got, prompts):
        want = plaintext.greedy_generate(cfg, params, torch.tensor([p]), 16, eos_token_ids=())
        print(f"SmolLM2 fast fp32: {tok.decode(row)!r}")
        assert torch.equal(row[None], want)


# ---------------------------------------------------------------------------------------------- benchmark


def test_bench_plaintext_on_a_tiny_model(models, monkeypatch, tmp_path, capsys):
    import json

    from secureinfer.lab.bench import plaintext as bench
    from secureinfer.cli import build_parser

    cfg, params = models["llama"]
    monkeypatch.setattr(bench, "load_model", lambda weights, checkpoint: (cfg, params, None))
    out = tmp_path / "plain.json"
    args = build_parser().parse_args(["bench", "plaintext", "--quick", "--concurrency", "3", "--prompt-len", "4", "--new-tokens", "5",
                              "--variant", "spec", "--json", str(out)])
    assert bench.main(args) == 0
    rows = json.loads(out.read_text())["results"]
    assert [(r["case"], r["engine"]) for r in rows] == [("batch1", "hf"), ("batch3", "hf"), ("batch1", "fast"),
                                                       ("batch3", "fast"), ("batch3", "worker"),
                                                       ("batch1", "fast-spec")]
    assert all(r["agree_vs_hf"] == 1.0 for r in rows if r["engine"] != "hf")  # fp32 on the CPU: same greedy tokens
    assert "speedup_decode" in rows[-1] and "x decode" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- graph path on the CPU


class ReplayLike:
    """A CPU stand-in for StepGraphs: the same buckets, fixed key length and overwritten output buffers, no capture."""

    def __init__(self, fn, sizes: list[int], key_len: int) -> None:
        self.fn, self.sizes, self.key_len, self.outputs = fn, sorted(sizes), key_len, {}
        self.replays: list[int] = []

    def bucket(self, n: int) -> int:
        return next(g for g in self.sizes if g >= n)

    def run(self, g: int):
        out = self.fn(g, self.key_len)
        if g not in self.outputs:
            self.outputs[g] = tuple(o.clone() for o in out)
        for static, new in zip(self.outputs[g], out):
            static.copy_(new)  # like a replay: the same tensors, overwritten
        self.replays.append(g)
        return self.outputs[g]


def _graph_like(cfg, params, max_batch: int, max_len: int) -> FastDecoder:
    """A static-cache decoder driven through the graph code path (buckets 1, 2, 4, .., parked rows, full key length)."""
    dec = FastDecoder(cfg, params, PlaintextStrategy(precision="fp64", static_cache=True), max_batch=max_batch,
                      max_len=max_len)
    dec.reset(max_batch)
    dec.graphs = ReplayLike(dec._decode, [1, 2, 4][:max_batch.bit_length()], max_len)
    return dec


@pytest.mark.parametrize("arch", ARCHS)
def test_graph_code_path_generate_and_batching(models, arch):
    cfg, params = models[arch]
    ids = _ids(6, 7, seed=15)
    dec = _graph_like(cfg, params, 4, 24)
    for batch in (3, 1):  # bucket 4 with a parked row, then bucket 1 on the reused cache
        want = plaintext.greedy_generate(cfg, params, ids[:batch], 9, eos_token_ids=())
        assert torch.equal(dec.generate(ids[:batch], 9, eos_token_ids=()), want)
    assert set(dec.graphs.replays) == {4, 1}
    jobs = [(ids[i, :2 + i % 5], 3 + 2 * i) for i in range(6)]
    with BatchingWorker(dec, eos_token_ids=()) as worker:
        results = _submit_from_threads(worker, jobs)
    for (prompt, n), got in zip(jobs, results):
        assert torch.equal(got, plaintext.greedy_generate(cfg, params, prompt[None], n, eos_token_ids=())[0])


# ---------------------------------------------------------------------------------------------- CUDA


def _cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here; the CUDA-graph tests run on the GPU machine")


@pytest.mark.cuda
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_graphs_greedy_equals_eager_on_gpu(models, arch, precision):
    _cuda()
    cfg, params = models[arch]
    ids = _ids(3, 6, seed=12)
    eager = FastDecoder(cfg, params, PlaintextStrategy(precision=precision, static_cache=True, device="cuda"),
                        max_len=24)
    graphs = FastDecoder(cfg, params, PlaintextStrategy(precision=precision, static_cache=True, cuda_graphs=True,
                                                        device="cuda"), max_len=24, max_batch=4)
    want = eager.generate(ids, 15, eos_token_ids=())
    assert graphs.graphs is not None and graphs.graphs.sizes == [1, 2, 4]
    assert torch.equal(graphs.generate(ids, 15, eos_token_ids=()), want)
    assert torch.equal(graphs.generate(ids[:1], 15, eos_token_ids=()), want[:1])  # another bucket, reused cache
    if precision == "fp32":
        assert torch.equal(want, plaintext.greedy_generate(cfg, params, ids, 15, eos_token_ids=()))


@pytest.mark.cuda
@pytest.mark.parametrize("arch", ARCHS)
def test_cuda_batching_with_graphs_equals_single_requests(models, arch):
    _cuda()
    cfg, params = models[arch]
    ids = _ids(9, 8, seed=13)
    jobs = [(ids[i, :1 + i % 8], 4 + i) for i in range(9)]
    strategy = PlaintextStrategy(precision="fp32", static_cache=True, cuda_graphs=True, batch_requests=True,
                                 device="cuda")
    dec = FastDecoder(cfg, params, strategy, max_batch=4, max_len=24)
    with BatchingWorker(dec, eos_token_ids=()) as worker:
        results = _submit_from_threads(worker, jobs)
    single = FastDecoder(cfg, params, PlaintextStrategy(precision="fp32", static_cache=True, device="cuda"),
                         max_len=24)
    for (prompt, n), got in zip(jobs, results):
        assert torch.equal(got, single.generate(prompt[None], n, eos_token_ids=())[0])
        assert torch.equal(got, plaintext.greedy_generate(cfg, params, prompt[None], n, eos_token_ids=())[0])


@pytest.mark.cuda
@pytest.mark.parametrize("arch", ARCHS)
def test_cuda_speculation_and_int8(models, arch):
    _cuda()
    cfg, params = models[arch]
    ids = _ids(2, 6, seed=14)
    want = plaintext.greedy_generate(cfg, params, ids, 10, eos_token_ids=())
    spec = FastDecoder(cfg, params, PlaintextStrategy(precision="fp32", static_cache=True, speculation="early_exit",
                                                      device="cuda"), max_len=24, draft_layers=1)
    assert torch.equal(spec.generate(ids, 10, eos_token_ids=()), want)
    q = FastDecoder(cfg, params, PlaintextStrategy(precision="bf16", quantization="int8", device="cuda"))
    ours, ref = q.logits(ids).cpu(), _ref_logits(cfg, params, ids)
    assert _rel(ours, ref) < 0.08
