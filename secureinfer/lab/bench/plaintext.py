"""`secureinfer bench plaintext`: fast plaintext decoding of SmolLM2-135M against transformers' `generate`, one run.

Both engines run the same weights (the packaged GGUF, dequantized; or random weights of the same shape with
--weights random), at the same precision on the same device, greedy, with no EOS (every row makes exactly
--new-tokens tokens, so token counts are equal). transformers' model is `LlamaForCausalLM(config)` with our
parameters loaded (offline), run by plain `generate`.
Cases: batch 1 (one prompt), and --concurrency rows (different prompts of --prompt-len tokens each, windows of one
tokenized text, or fixed random ids where the tokenizer cannot load) as one batched `generate` for both engines and
as that many concurrent requests to the fast decoder's BatchingWorker (one thread per request).
Engines: "hf" (transformers), "fast" (the best strategy: bf16 + static cache + CUDA graphs on cuda, fp32 + static
cache on cpu), "worker" (fast + continuous batching), and --variant extras (eager: no graphs; compile: graphs of a
torch.compile'd step; int8: weight-only int8; spec: early-exit speculation).
Figures: prefill time (a generate of one token), total time, decode latency per step ((total - prefill) / (n - 1)),
decode tokens/s (rows / step latency), end-to-end tokens/s (rows * n / total), the speedup over hf in the same case
and run, and the fraction of generated tokens identical to hf's (bf16 rounding differs slightly between the two
engines, so it may be below 1 there; fp32 should be 1). Timings are medians over --repeat runs after a warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any, Callable

import torch

from . import write_json

TEXT = ("Secure multi-party computation lets several servers evaluate a neural network on a private prompt without "
        "any of them learning the prompt, the weights or the intermediate activations; only the client reconstructs "
        "the answer. Write a short story about a lighthouse keeper who discovers that the light has been guiding "
        "ships that are not from this world. The story should be calm, strange and kind, with an ending that "
        "surprises the reader. Then explain, step by step, why the sky is blue, what Rayleigh scattering is, and "
        "how the colour of sunsets follows from it. Finally, list five prime numbers larger than one hundred and "
        "say how you would check that each of them is prime without a computer. ")
VARIANTS = ("eager", "compile", "int8", "spec")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any], device: str, repeat: int) -> tuple[Any, float]:
    """(last result, median seconds) of `repeat` runs, each between device syncs."""
    times, out = [], None
    for _ in range(repeat):
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def smollm2_like_config():
    """SmolLM2-135M's shape (30 layers, hidden 576, 9 heads, 3 KV heads, vocab 49152) for random weights."""
    from secureinfer.models.config import ModelConfig

    return ModelConfig(arch="llama", vocab_size=49152, hidden=576, n_layers=30, n_heads=9, n_kv_heads=3, head_dim=64,
                       intermediate=1536, max_positions=8192, norm_eps=1e-5, act="silu", rope_theta=100000.0,
                       tie_word_embeddings=True, attention_bias=False, mlp_bias=False)


def load_model(weights: str, checkpoint: str | None):
    """(config, float32 params, tokenizer or None) of SmolLM2-135M: the packaged GGUF, a given checkpoint, or random."""
    from secureinfer.models.config import CheckpointError, parameter_shapes
    from secureinfer.models.checkpoint import load_checkpoint, load_tokenizer, packaged_checkpoint

    if weights == "random":
        cfg = smollm2_like_config()
        gen = torch.Generator().manual_seed(0)
        params = {k: (torch.randn(s, generator=gen) * 0.02 if len(s) > 1 else torch.ones(s))
                  for k, s in parameter_shapes(cfg).items()}
        return cfg, params, None
    path = checkpoint or packaged_checkpoint("SmolLM2-135M-Instruct")
    cfg, params = load_checkpoint(path)
    try:
        tok = load_tokenizer(path)
    except (CheckpointError, ImportError) as exc:
        print(f"(no tokenizer: {exc}; prompts are fixed random ids)")
        tok = None
    return cfg, params, tok


def make_prompts(cfg, tok, count: int, length: int) -> torch.Tensor:
    """(count, length) prompts: different windows of one tokenized text, or fixed random ids without a tokenizer."""
    if tok is not None:
        ids = tok(TEXT * (1 + count * 5 * length // 400))["input_ids"]
        if len(ids) >= (count - 1) * 5 + length:
            return torch.tensor([ids[5 * i:5 * i + length] for i in range(count)], dtype=torch.int64)
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, cfg.vocab_size, (count, length), generator=gen)


def hf_model(cfg, params: dict[str, torch.Tensor], dtype: torch.dtype, device: str):
    """transformers' LlamaForCausalLM with our parameters (offline); no EOS, so generate makes every token."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hc = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
                     num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                     num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.head_dim,
                     max_position_embeddings=cfg.max_positions, rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
                     tie_word_embeddings=cfg.tie_word_embeddings, attention_bias=cfg.attention_bias,
                     mlp_bias=cfg.mlp_bias, hidden_act="silu", bos_token_id=None, eos_token_id=None, pad_token_id=0)
    model = LlamaForCausalLM(hc)
    missing, unexpected = model.load_state_dict(params, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"parameters do not fit transformers' model: missing {missing}, unexpected {unexpected}")
    return model.to(device=device, dtype=dtype).eval()


def _row(case: str, engine: str, strategy: str, batch: int, n: int, prefill: float, total: float,
         tokens: torch.Tensor, hf_tokens: torch.Tensor | None, **extra: Any) -> dict[str, Any]:
    """One result row."""
    step = (total - prefill) / max(n - 1, 1)
    row = {"case": case, "engine": engine, "strategy": strategy, "batch": batch, "new_tokens": n,
           "prefill_s": prefill, "total_s": total, "decode_step_ms": 1e3 * step,
           "decode_tokens_per_s": batch / step if step > 0 else float("inf"),
           "tokens_per_s": batch * n / total, **extra}
    if hf_tokens is not None:
        same = tokens.cpu() == hf_tokens.cpu()  # (B, n)
        row["agree_vs_hf"] = same.float().mean().item()  # identical tokens, position by position
        row["common_prefix_vs_hf"] = same.int().cumprod(dim=1).sum(dim=1).float().mean().item() / n  # before divergence
    return row


def _worker_run(dec, prompts: torch.Tensor, n: int) -> tuple[torch.Tensor, float, Any]:
    """All prompts as concurrent requests (one thread each) to a fresh BatchingWorker: (tokens, seconds, worker)."""
    from secureinfer.plaintext.fast import BatchingWorker

    futures: list = [None] * prompts.shape[0]
    gate = threading.Barrier(prompts.shape[0] + 1)

    def client(i: int) -> None:
        gate.wait()
        futures[i] = worker.submit(prompts[i], n, eos_token_ids=())

    with BatchingWorker(dec, max_batch=prompts.shape[0], eos_token_ids=()) as worker:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(prompts.shape[0])]
        for t in threads:
            t.start()
        start = time.perf_counter()
        gate.wait()
        for t in threads:
            t.join()
        out = torch.stack([f.result() for f in futures])
        seconds = time.perf_counter() - start
    return out, seconds, worker


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every case and engine; returns the result rows."""
    from secureinfer.plaintext.fast import FastDecoder
    from secureinfer.strategy import PlaintextStrategy

    device, cuda = args.device, args.device.startswith("cuda")
    precision = args.precision or ("bf16" if cuda else "fp32")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    cfg, params, tok = load_model(args.weights, args.checkpoint)
    conc, n, plen = args.concurrency, args.new_tokens, args.prompt_len
    prompts = make_prompts(cfg, tok, conc, plen)
    max_len = -(-(plen + n + 16) // 64) * 64
    best = PlaintextStrategy(precision=precision, static_cache=True, cuda_graphs=cuda, batch_requests=True,
                             device=device)
    variants = {"fast": best}
    for v in args.variant or []:
        variants[f"fast-{v}"] = {
            "eager": PlaintextStrategy(precision=precision, static_cache=True, device=device),
            "compile": PlaintextStrategy(precision=precision, static_cache=True, cuda_graphs=cuda, compile=True,
                                         device=device),
            "int8": PlaintextStrategy(precision=precision, quantization="int8", static_cache=True, cuda_graphs=cuda,
                                      device=device),
            "spec": PlaintextStrategy(precision=precision, static_cache=True, speculation="early_exit",
                                      speculation_tokens=args.speculation_tokens, device=device),
        }[v]
    rows: list[dict[str, Any]] = []
    hf = hf_model(cfg, params, dtype, device)
    hf_out: dict[int, torch.Tensor] = {}
    for batch in (1, conc):
        ids = prompts[:batch].to(device)

        def hf_gen(k: int, ids=ids) -> torch.Tensor:
            with torch.no_grad():
                return hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=k,
                                   do_sample=False, pad_token_id=0)[:, ids.shape[1]:]

        hf_gen(2)  # warm-up
        _, pre = _timed(lambda: hf_gen(1), device, args.repeat)
        hf_out[batch], total = _timed(lambda: hf_gen(n), device, args.repeat)
        rows.append(_row(f"batch{batch}", "hf", f"transformers-generate-{precision}", batch, n, pre, total,
                         hf_out[batch], None))
        print(_fmt(rows[-1]), flush=True)
    hf = None  # free its memory before the fast decoders
    if cuda:
        torch.cuda.empty_cache()
    for name, strategy in variants.items():
        start = time.perf_counter()
        buckets = [1, conc] if strategy.compile and strategy.cuda_graphs else None  # each bucket compiles anew
        dec = FastDecoder(cfg, params, strategy, max_batch=conc, max_len=max_len, graph_batch_sizes=buckets,
                          draft_layers=args.draft_layers)
        setup = time.perf_counter() - start
        for batch in (1, conc):
            if strategy.speculation != "none" and batch > 1 and not args.spec_batched:
                continue
            ids = prompts[:batch]
            dec.generate(ids, 2, eos_token_ids=())  # warm-up
            _, pre = _timed(lambda: dec.generate(ids, 1, eos_token_ids=()), device, args.repeat)
            out, total = _timed(lambda: dec.generate(ids, n, eos_token_ids=()), device, args.repeat)
            extra = {"setup_s": setup}
            if dec.last_speculation and strategy.speculation != "none":
                extra["speculation"] = dict(dec.last_speculation)
            rows.append(_row(f"batch{batch}", name, strategy.name, batch, n, pre, total, out, hf_out[batch], **extra))
            print(_fmt(rows[-1]), flush=True)
        if name == "fast":
            _worker_run(dec, prompts[:conc], 4)  # warm-up
            times, out, worker = [], None, None
            for _ in range(args.repeat):
                out, seconds, worker = _worker_run(dec, prompts, n)
                times.append(seconds)
            total = statistics.median(times)
            step = worker.step_seconds / max(worker.steps, 1)
            row = _row(f"batch{conc}", "worker", strategy.name, conc, n, worker.prefill_seconds, total, out,
                       hf_out[conc], steps=worker.steps, max_active=worker.max_active)
            row["decode_step_ms"], row["decode_tokens_per_s"] = 1e3 * step, conc / step
            rows.append(row)
            print(_fmt(rows[-1]), flush=True)
        dec = None
    _speedups(rows)
    return rows


def _speedups(rows: list[dict[str, Any]]) -> None:
    """Add speedup_decode and speedup_e2e over hf in the same case (same run)."""
    base = {r["case"]: r for r in rows if r["engine"] == "hf"}
    for r in rows:
        h = base[r["case"]]
        r["speedup_decode"] = r["decode_tokens_per_s"] / h["decode_tokens_per_s"]
        r["speedup_e2e"] = r["tokens_per_s"] / h["tokens_per_s"]


def _fmt(r: dict[str, Any]) -> str:
    agree = f"{r['agree_vs_hf']:.3f}" if "agree_vs_hf" in r else "-"
    return (f"  {r['case']:<8} {r['engine']:<13} prefill {1e3 * r['prefill_s']:8.1f} ms  step "
            f"{r['decode_step_ms']:7.2f} ms  decode {r['decode_tokens_per_s']:9.1f} tok/s  e2e "
            f"{r['tokens_per_s']:9.1f} tok/s  agree {agree}")


def table(rows: list[dict[str, Any]]) -> str:
    """The results as a fixed-width table."""
    head = (f"{'case':<8} {'engine':<13} {'strategy':<44} {'step ms':>8} {'decode t/s':>11} {'e2e t/s':>9} "
            f"{'x decode':>8} {'x e2e':>6} {'agree':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        agree = f"{r['agree_vs_hf']:.3f}" if "agree_vs_hf" in r else "-"
        lines.append(f"{r['case']:<8} {r['engine']:<13} {r['strategy']:<44} {r['decode_step_ms']:8.2f} "
                     f"{r['decode_tokens_per_s']:11.1f} {r['tokens_per_s']:9.1f} {r['speedup_decode']:8.2f} "
                     f"{r['speedup_e2e']:6.2f} {agree:>6}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table, write JSON."""
    quick = getattr(args, "quick", False)
    for name, full, short in (("concurrency", 32, 8), ("new_tokens", 128, 8), ("prompt_len", 32, 16),
                              ("repeat", 3, 1)):
        if getattr(args, name, None) is None:
            setattr(args, name, short if quick else full)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here")
        return 2
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if args.new_tokens < 2:
        print("--new-tokens must be >= 2")
        return 2
    print(f"SmolLM2-135M ({args.weights} weights) on {args.device}: batch 1 and {args.concurrency} rows, "
          f"{args.prompt_len}-token prompts, {args.new_tokens} new tokens, median of {args.repeat}")
    rows = run(args)
    print()
    print(table(rows))
    if args.json:
        write_json(args.json, "plaintext", rows, args.device,
                   settings={k: getattr(args, k) for k in ("concurrency", "new_tokens", "prompt_len", "repeat",
                                                           "weights", "precision", "variant")})
    return 0

