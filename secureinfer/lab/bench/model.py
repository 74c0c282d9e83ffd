"""`secureinfer bench model`: whole secure Transformer forwards on three in-process parties.

Every run is a full session (secureinfer.mpc.models.session): the model owner publishes weight shares, the client
shares its one-hot tokens and alone opens the outputs. Models:
  minilm   all-MiniLM-L6-v2 (real weights): one sentence embedding at 128 real tokens; accuracy = cosine to the
           float64 plaintext embedding.
  bert-base BERT-base shape (12 layers, hidden 768, 12 heads, vocab 30522) with random weights drawn like BERT's
           initialisation, on MiniLM's 128 real tokens (same vocabulary); accuracy = last hidden states vs plaintext.
  gpt2     GPT-2-base shape (12 layers, hidden 768, 12 heads, vocab 50257) with random weights drawn like GPT-2's
           initialisation: a 32-token prefill plus one decoded token; accuracy = logits vs plaintext.
  smollm2  SmolLM2-135M-Instruct (real weights, GGUF): a 32-token prompt prefill plus 8 decode steps, greedy;
           accuracy = token-for-token agreement with plaintext greedy decoding, and logits vs plaintext.
Figures per model: client-observed wall time per step (control message sent -> output reconstructed; weight
publishing happens before and is reported apart), rounds, bytes sent per party, the process's peak resident memory
(getrusage maxrss: the three parties, owner and client share the process; each model runs in a subprocess of its
own when several are asked for), accuracy, and a per-op breakdown of party 0 from a separate traced run (tracing
adds ~20-30% time): inclusive figures per model op (embed, attn.*, layernorm, mlp.*, lm_head) and exclusive
figures per protocol (trunc, msb, mul_bit, a2b, b2a, ...), the latter saying where time and bytes actually go.
Timings are medians over --repeat sessions.
--public-weights: each model also runs with public weights (open models: the weights in the clear at every party,
the tokens and every activation still secret shares) in the same invocation; the result gains a "public_weights"
entry with the same figures (and its own breakdown) and "public_vs_secret" with the bytes and time ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import torch

from . import metrics, write_json

MODELS = ("minilm", "bert-base", "gpt2", "smollm2")
MINILM_TEXT = ("Secure multi-party computation lets several servers evaluate a neural network on a private prompt "
               "without any of them learning the prompt, the weights or the intermediate activations; only the "
               "client reconstructs the answer. Replicated secret sharing over the ring of integers modulo two to "
               "the sixty-four with fixed-point encoding makes additions free and multiplications cheap, while "
               "comparisons, exponentials and reciprocal square roots dominate the cost of a Transformer forward "
               "pass, which is why approximations with few rounds and short messages matter so much in practice. "
               "Benchmarks therefore report wall time, rounds, bytes sent by each party and accuracy together.")
SMOLLM2_TEXT = ("Write a short story about a lighthouse keeper who discovers that the light has been guiding ships "
                "that are not from this world. The story should be calm, strange and kind, with an ending that "
                "surprises the reader.")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def op_breakdown(recs: list) -> dict[str, Any]:
    """Per model op (inclusive) and per protocol (exclusive) figures of merged recordings."""
    from secureinfer.mpc.models import trace

    rec = trace.merge(recs)
    top = {k: v.as_dict() for k, v in rec.by_top().items()}
    leaf = {k: v.as_dict() for k, v in rec.by_leaf().items()}
    named = {n: rec.by_name(n).as_dict() for n in ("softmax", "max", "exp", "reciprocal", "rsqrt", "compare",
                                                     "select", "highest_bit") if rec.by_name(n).calls}
    return {"by_model_op": top, "by_protocol": leaf, "inside_ops": named}


def _step_figures(steps: list) -> dict[str, Any]:
    return {"seconds": statistics.median(s.seconds for s in steps) if steps else 0.0,
            "rounds": max((s.rounds for s in steps), default=0),
            "bytes_per_party": [max(s.bytes_per_party[i] for s in steps) for i in range(3)] if steps else [0, 0, 0]}


def _compare(got: torch.Tensor, want: torch.Tensor) -> dict[str, float]:
    """The accuracy figures of hidden states or logits against the float64 plaintext model's."""
    return {"max_abs_diff": metrics.max_abs_diff(got, want), "min_cosine": metrics.min_row_cosine(got, want),
            "top1_agreement": metrics.top1_agreement(got, want), "scale": metrics.max_abs(want)}


def _repeat(run: Callable[[bool], tuple[Any, Any]], repeats: int, breakdown: bool) -> tuple[Any, list, Any]:
    """`repeats` untraced sessions (for time) and, optionally, one traced session (for the breakdown)."""
    results, reports = [], []
    for _ in range(repeats):
        result, report = run(False)
        results.append(result)
        reports.append(report)
    traced = run(True)[1] if breakdown else None
    return results[-1], reports, traced


# ---------------------------------------------------------------------------------------------------- models


def bench_minilm(profile, config, repeats: int, breakdown: bool, public_weights: bool = False) -> dict[str, Any]:
    """all-MiniLM-L6-v2, one 128-token sentence embedding."""
    from secureinfer.plaintext import reference as plaintext
    from secureinfer.mpc.models import session
    from secureinfer.models.checkpoint import load_checkpoint, packaged_checkpoint

    cfg, params = load_checkpoint(packaged_checkpoint("all-MiniLM-L6-v2"), torch.float64)
    ids, mask = minilm_tokens()

    def run(traced: bool):
        return session.secure_encode(cfg, params, ids, mask, profile=profile, config=config, traced=traced,
                                     public_weights=public_weights)

    emb, reports, traced = _repeat(run, repeats, breakdown)
    want = plaintext.sentence_embedding(cfg, params, ids, mask)
    steps = [r.steps[0] for r in reports]
    return {"model": "minilm", "what": "all-MiniLM-L6-v2 sentence embedding, 1 x 128 tokens",
            "forward": _step_figures(steps), "load_seconds": reports[-1].load_seconds,
            "accuracy": {"cosine": metrics.min_row_cosine(emb, want), "max_abs_diff": metrics.max_abs_diff(emb, want)},
            "breakdown": op_breakdown(list(traced.steps[0].recordings[:1])) if traced else None}


def init_like_hf(cfg, std: float, seed: int, scaled_proj: bool) -> dict[str, torch.Tensor]:
    """Random weights in `cfg`'s shapes drawn like the family's initialisation: N(0, std), norms 1, biases 0."""
    from secureinfer.models.config import parameter_shapes

    gen = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in parameter_shapes(cfg).items():
        if "LayerNorm.weight" in name or name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            params[name] = torch.ones(shape)
        elif name.endswith("bias"):
            params[name] = torch.zeros(shape)
        else:
            scaled = scaled_proj and name.endswith("c_proj.weight")
            params[name] = torch.randn(shape, generator=gen) * (std / math.sqrt(2 * cfg.n_layers) if scaled else std)
    return params


def bert_base_params(seed: int = 0) -> tuple[Any, dict[str, torch.Tensor]]:
    """A BERT-base-shaped config (bert-base-uncased's) and random weights drawn like BERT's initialisation."""
    from secureinfer.models.config import ModelConfig

    cfg = ModelConfig(arch="bert", vocab_size=30522, hidden=768, n_layers=12, n_heads=12, n_kv_heads=12, head_dim=64,
                      intermediate=3072, max_positions=512, norm_eps=1e-12, act="gelu", type_vocab_size=2)
    return cfg, init_like_hf(cfg, 0.02, seed, scaled_proj=False)


def minilm_tokens() -> tuple[torch.Tensor, torch.Tensor]:
    """MiniLM's tokenizer on the benchmark text: input ids and attention mask, (1, 128) each."""
    from secureinfer.models.checkpoint import load_tokenizer, packaged_checkpoint

    enc = load_tokenizer(packaged_checkpoint("all-MiniLM-L6-v2"))([MINILM_TEXT], truncation=True, max_length=128,
                                                                  return_tensors="pt")
    if enc["input_ids"].shape[1] != 128:
        raise RuntimeError(f"the benchmark text should fill 128 tokens, got {enc['input_ids'].shape[1]}")
    return enc["input_ids"], enc["attention_mask"]


def bench_bert_base(profile, config, repeats: int, breakdown: bool, public_weights: bool = False) -> dict[str, Any]:
    """BERT-base shape, random weights, 128 real tokens: the last hidden states."""
    from secureinfer.plaintext import reference as plaintext
    from secureinfer.mpc.models import session

    cfg, params = bert_base_params()
    params = {k: v.double() for k, v in params.items()}
    ids, mask = minilm_tokens()

    def run(traced: bool):
        return session.secure_encode(cfg, params, ids, mask, output="hidden", profile=profile, config=config,
                                     traced=traced, public_weights=public_weights)

    hidden, reports, traced = _repeat(run, repeats, breakdown)
    want = plaintext.bert_forward(cfg, params, ids, mask)
    steps = [r.steps[0] for r in reports]
    return {"model": "bert-base", "what": "BERT-base shape (random weights), last hidden states, 1 x 128 tokens",
            "forward": _step_figures(steps), "load_seconds": reports[-1].load_seconds,
            "accuracy": _compare(hidden, want),
            "breakdown": op_breakdown(list(traced.steps[0].recordings[:1])) if traced else None}


def gpt2_base_params(seed: int = 0) -> tuple[Any, dict[str, torch.Tensor]]:
    """A GPT-2-base-shaped config and random weights drawn like GPT-2's initialisation (public benchmark data)."""
    from secureinfer.models.config import ModelConfig

    cfg = ModelConfig(arch="gpt2", vocab_size=50257, hidden=768, n_layers=12, n_heads=12, n_kv_heads=12, head_dim=64,
                      intermediate=3072, max_positions=1024, norm_eps=1e-5, act="gelu_tanh", tie_word_embeddings=True)
    return cfg, init_like_hf(cfg, 0.02, seed, scaled_proj=True)


def bench_gpt2(profile, config, repeats: int, breakdown: bool, public_weights: bool = False) -> dict[str, Any]:
    """GPT-2-base shape, random weights: 32-token prefill + 1 decoded token."""
    from secureinfer.plaintext import reference as plaintext
    from secureinfer.mpc.models import session

    cfg, params = gpt2_base_params()
    prompt = torch.randint(0, cfg.vocab_size, (1, 32), generator=torch.Generator().manual_seed(1))

    def run(traced: bool):
        return session.secure_generate(cfg, params, prompt, 2, eos_token_ids=(), profile=profile, config=config,
                                       traced=traced, public_weights=public_weights)

    gen, reports, traced = _repeat(run, repeats, breakdown)
    cache = plaintext.KVCache.empty(cfg.n_layers)
    want = [plaintext.gpt2_forward(cfg, params, prompt, cache)[:, -1]]
    want.append(plaintext.gpt2_forward(cfg, params, gen.tokens[:, :1], cache)[:, -1])
    prefill, decode = [r.steps[0] for r in reports], [r.steps[1] for r in reports]
    total = [p.seconds + d.seconds for p, d in zip(prefill, decode)]
    return {"model": "gpt2", "what": "GPT-2-base shape (random weights), 32-token prefill + 1 decoded token",
            "seconds": statistics.median(total), "prefill": _step_figures(prefill), "decode": _step_figures(decode),
            "load_seconds": reports[-1].load_seconds,
            "accuracy": _compare(gen.logits, torch.stack(want)),
            "breakdown": {"prefill": op_breakdown(list(traced.steps[0].recordings[:1])),
                          "decode": op_breakdown(list(traced.steps[1].recordings[:1]))} if traced else None}


def bench_smollm2(profile, config, repeats: int, breakdown: bool, public_weights: bool = False,
                  decode_steps: int = 8) -> dict[str, Any]:
    """SmolLM2-135M-Instruct: 32-token prompt prefill + `decode_steps` decode steps, greedy."""
    from secureinfer.plaintext import reference as plaintext
    from secureinfer.mpc.models import session
    from secureinfer.models.checkpoint import load_checkpoint, load_tokenizer, packaged_checkpoint

    path = packaged_checkpoint("SmolLM2-135M-Instruct")
    cfg, params = load_checkpoint(path)
    prompt = torch.tensor([load_tokenizer(path)(SMOLLM2_TEXT)["input_ids"][:32]])
    if prompt.shape[1] != 32:
        raise RuntimeError(f"the benchmark prompt should have 32 tokens, got {prompt.shape[1]}")

    def run(traced: bool):
        return session.secure_generate(cfg, params, prompt, decode_steps + 1, eos_token_ids=(), profile=profile,
                                       config=config, traced=traced, public_weights=public_weights)

    gen, reports, traced = _repeat(run, repeats, breakdown)
    cache = plaintext.KVCache.empty(cfg.n_layers)
    want_logits = [plaintext.llama_forward(cfg, params, prompt, cache)[:, -1]]
    for i in range(decode_steps):
        want_logits.append(plaintext.llama_forward(cfg, params, gen.tokens[:, i:i + 1], cache)[:, -1])
    want_tokens = plaintext.greedy_generate(cfg, params, prompt, decode_steps + 1, eos_token_ids=())
    prefill = [r.steps[0] for r in reports]
    decode = [s for r in reports for s in r.steps[1:]]
    per_token = statistics.median(statistics.mean(s.seconds for s in r.steps[1:]) for r in reports)
    accuracy = _compare(gen.logits, torch.stack(want_logits))
    accuracy["tokens_equal"] = bool(torch.equal(gen.tokens, want_tokens))
    accuracy["secure_tokens"], accuracy["plaintext_tokens"] = gen.tokens[0].tolist(), want_tokens[0].tolist()
    return {"model": "smollm2", "what": f"SmolLM2-135M-Instruct, 32-token prefill + {decode_steps} decode steps",
            "seconds": statistics.median(r.seconds for r in reports), "prefill": _step_figures(prefill),
            "decode": _step_figures(decode), "seconds_per_decoded_token": per_token,
            "load_seconds": reports[-1].load_seconds, "accuracy": accuracy,
            "breakdown": {"prefill": op_breakdown(list(traced.steps[0].recordings[:1])),
                          "decode": op_breakdown([s.recordings[0] for s in traced.steps[1:]])} if traced else None}


BENCHES = {"minilm": bench_minilm, "bert-base": bench_bert_base, "gpt2": bench_gpt2, "smollm2": bench_smollm2}


# ---------------------------------------------------------------------------------------------------- output


def _mb(b: float) -> str:
    return f"{b / 1e6:,.1f}"


def _print_breakdown(title: str, bd: dict[str, Any], total_seconds: float) -> None:
    print(f"  {title}: per model op (party 0, traced, inclusive)")
    for name, s in bd["by_model_op"].items():
        share = 100 * s["seconds"] / total_seconds if total_seconds else 0.0
        print(f"    {name:<14}{s['seconds']:>8.3f} s {share:>5.1f}%  {_mb(s['bytes_sent']):>9} MB {s['rounds']:>6} rounds")
    print("   per protocol (exclusive: where the time and bytes go)")
    for name, s in bd["by_protocol"].items():
        share = 100 * s["seconds"] / total_seconds if total_seconds else 0.0
        print(f"    {name:<14}{s['seconds']:>8.3f} s {share:>5.1f}%  {_mb(s['bytes_sent']):>9} MB {s['rounds']:>6} rounds"
              f" {s['calls']:>6} calls")
    if bd["inside_ops"]:
        print("   inside the ops (inclusive): " + ", ".join(
            f"{k} {v['seconds']:.2f} s / {_mb(v['bytes_sent'])} MB" for k, v in bd["inside_ops"].items()))


def _total(bd: dict[str, Any]) -> float:
    return sum(s["seconds"] for s in bd["by_model_op"].values())


def _phases(r: dict[str, Any]) -> list[str]:
    return ["forward"] if "forward" in r else ["prefill", "decode"]


def weight_ratios(secret: dict[str, Any], public: dict[str, Any]) -> dict[str, Any]:
    """Secret-weights figure / public-weights figure per phase: bytes of the busiest party, and time."""
    out = {}
    for phase in _phases(secret):
        s, p = secret[phase], public[phase]
        out[phase] = {"bytes_ratio": max(s["bytes_per_party"]) / max(max(p["bytes_per_party"]), 1),
                      "seconds_ratio": s["seconds"] / p["seconds"] if p["seconds"] else 0.0,
                      "rounds_secret": s["rounds"], "rounds_public": p["rounds"]}
    return out


def print_result(r: dict[str, Any]) -> None:
    """Human-readable summary of one model's figures (and of its public-weights run, when there is one)."""
    _print_one(r, "secret weights" if "public_weights" in r else None)
    if "public_weights" in r:
        _print_one({**r, **r["public_weights"]}, "public weights")
        print("\n  public vs secret weights (secret / public):")
        for phase, q in r["public_vs_secret"].items():
            print(f"    {phase}: bytes of the busiest party x{q['bytes_ratio']:.3f}, time x{q['seconds_ratio']:.3f}, "
                  f"rounds {q['rounds_secret']} -> {q['rounds_public']}")


def _print_one(r: dict[str, Any], weights: str | None) -> None:
    label = f", {weights}" if weights else ""
    print(f"\n== {r['model']}: {r['what']} (profile {r['profile']}{label}) ==")
    if "forward" in r:
        f = r["forward"]
        print(f"  forward {f['seconds']:.2f} s, {f['rounds']} rounds, sent per party "
              f"{'/'.join(_mb(b) for b in f['bytes_per_party'])} MB")
    else:
        p, d = r["prefill"], r["decode"]
        print(f"  total {r['seconds']:.2f} s; prefill {p['seconds']:.2f} s, {p['rounds']} rounds, "
              f"{'/'.join(_mb(b) for b in p['bytes_per_party'])} MB/party; decode step {d['seconds']:.2f} s, "
              f"{d['rounds']} rounds, {'/'.join(_mb(b) for b in d['bytes_per_party'])} MB/party")
    print(f"  weights published and loaded in {r['load_seconds']:.1f} s (not in the times above); "
          f"peak RSS {r['peak_rss_mb']:,.0f} MB (whole process)")
    print("  accuracy: " + ", ".join(f"{k} {v:.7g}" if isinstance(v, float) else f"{k} {v}"
                                     for k, v in r["accuracy"].items()))
    bd = r.get("breakdown")
    if bd:
        if "by_model_op" in bd:
            _print_breakdown("breakdown", bd, _total(bd))
        else:
            for phase in ("prefill", "decode"):
                _print_breakdown(f"{phase} breakdown", bd[phase], _total(bd[phase]))


def run_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Benchmark one model in this process."""
    from secureinfer.mpc.approx import profile as profiles
    from secureinfer.mpc.party import EngineConfig

    profile = profiles.get(args.profile)
    config = EngineConfig(device=args.device)
    start = time.perf_counter()
    result = BENCHES[name](profile, config, args.repeat, not args.no_breakdown)
    if getattr(args, "public_weights", False):
        public = BENCHES[name](profile, config, args.repeat, not args.no_breakdown, public_weights=True)
        result["public_weights"] = {k: v for k, v in public.items() if k not in ("model", "what")}
        result["public_vs_secret"] = weight_ratios(result, public)
    result.update({"profile": profile.name, "device": args.device, "repeats": args.repeat,
                   "peak_rss_mb": _peak_rss_mb(), "bench_seconds": time.perf_counter() - start})
    return result


def _in_subprocess(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one model in a fresh interpreter, so its peak memory is its own."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, f"{name}.json")
        cmd = [sys.executable, "-m", "secureinfer.cli", "bench", "model", "--model", name, "--json", out, "--quiet",
               "--profile", args.profile, "--repeat", str(args.repeat), "--device", args.device]
        if args.no_breakdown:
            cmd.append("--no-breakdown")
        if getattr(args, "public_weights", False):
            cmd.append("--public-weights")
        subprocess.run(cmd, check=True)
        with open(out) as fh:
            return json.load(fh)["results"][0]


def main(args: argparse.Namespace) -> int:
    """Entry point of `secureinfer bench model`."""
    names = args.model or list(MODELS)
    if args.repeat < 1:
        print("secureinfer bench model: --repeat must be at least 1", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"secureinfer bench model: device {args.device!r} requested but torch sees no CUDA GPU", file=sys.stderr)
        return 2
    from secureinfer.mpc.approx import profile as profiles

    try:
        profiles.get(args.profile)
    except ValueError as exc:
        print(f"secureinfer bench model: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(f"3 in-process parties + model owner + client, device {args.device}, profile {args.profile}, "
              f"median of {args.repeat} (torch {torch.__version__}, {torch.get_num_threads()} threads)", flush=True)
    results = []
    for name in names:
        result = run_one(name, args) if len(names) == 1 else _in_subprocess(name, args)
        if not args.quiet:
            print_result(result)
        results.append(result)
    if args.json:
        write_json(args.json, "model", results, args.device)
    return 0
