"""`secureinfer bench network --concurrent N`: N concurrent secure requests through three node processes, first each
in its own MPC run (unbatched), then with SecureStrategy(batch_requests=True) (the nodes run their steps as batched
forwards), and the throughput of both.

Figures per mode: wall time from the first session opened to the last result, requests per second, each client's own
request time, the bytes each node sent (its sessions' and batch runs' own counts, read from the node logs), and the
batches the nodes ran; and the largest difference between a client's batched and unbatched output (fixed point with
randomized truncations: never bit-exact). Requests differ in their inputs (MiniLM: the benchmark text from a
different word on; GPT-2: a different random prompt) and have equal shapes, so they can share every step. Models:
minilm (128 tokens, embedding), gpt2 (GPT-2-base shape, 32-token prompt + 2 generated tokens) and tiny (a random
2-layer GPT-2, hidden 64, vocabulary 512, 16-token prompt + 2 generated tokens: cheap steps, so per-round costs show).
"""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path
from typing import Any

import torch

from .model import MINILM_TEXT, gpt2_base_params
from .nodelogs import entries_after


def _inputs(name: str, n: int) -> tuple[Any, dict[str, torch.Tensor], list[tuple[torch.Tensor, Any]]]:
    from secureinfer.models.checkpoint import load_checkpoint, load_tokenizer, packaged_checkpoint

    if name == "minilm":
        path = packaged_checkpoint("all-MiniLM-L6-v2")
        cfg, params = load_checkpoint(path, torch.float64)
        words = MINILM_TEXT.split()
        texts = [" ".join(words[7 * k:] + words[: 7 * k]) for k in range(n)]
        enc = load_tokenizer(path)(texts, padding="max_length", truncation=True, max_length=128, return_tensors="pt")
        return cfg, params, [(enc["input_ids"][k:k + 1], enc["attention_mask"][k:k + 1]) for k in range(n)]
    cfg, params = tiny_gpt2() if name == "tiny" else gpt2_base_params()
    length = 16 if name == "tiny" else 32
    prompts = [torch.randint(0, cfg.vocab_size, (1, length), generator=torch.Generator().manual_seed(100 + k))
               for k in range(n)]
    return cfg, params, [(p, None) for p in prompts]


def tiny_gpt2() -> tuple[Any, dict[str, torch.Tensor]]:
    """A random 2-layer GPT-2 (hidden 64, 4 heads, vocabulary 512, 64 positions)."""
    from secureinfer.models.config import ModelConfig, parameter_shapes

    cfg = ModelConfig(arch="gpt2", vocab_size=512, hidden=64, n_layers=2, n_heads=4, n_kv_heads=4, head_dim=16,
                      intermediate=256, max_positions=64, norm_eps=1e-5, act="gelu_tanh", tie_word_embeddings=True)
    gen = torch.Generator().manual_seed(0)
    params = {}
    for name, shape in sorted(parameter_shapes(cfg).items()):
        noise = torch.randn(shape, generator=gen, dtype=torch.float64)
        params[name] = 1.0 + 0.1 * noise if len(shape) == 1 and name.endswith("weight") else 0.3 * noise
    return cfg, params


def _node_log(log: Path, after: float) -> tuple[int, int]:
    """(bytes sent by the node's request sessions and batch runs, batches run) logged after `after`."""
    sent, batches = 0, 0
    for entry in entries_after(log, after):
        if entry.get("msg") == "session done" and entry.get("task") != "publish":
            sent += int(entry.get("bytes_sent", 0))
        elif entry.get("msg") == "batch done":
            sent += int(entry.get("bytes_sent", 0))
            batches += 1
    return sent, batches


def _run_all(client, view, spec, cfg, inputs) -> tuple[float, list[Any], list[float]]:
    """Every request at once, each in its own thread: wall time, outputs and each request's own time."""
    from secureinfer.mpc.models import serving
    from secureinfer.models.sampling import SamplingConfig
    from secureinfer.mpc.party import EngineConfig

    def one(ids: torch.Tensor, mask: Any) -> tuple[Any, float]:
        def program(channel):
            if not cfg.causal:
                return serving.client_encode(channel, cfg, EngineConfig(), ids, mask, None, "embedding")[0]
            results, _ = serving.client_generate_many(channel, cfg, EngineConfig(), [ids], 2, SamplingConfig(),
                                                      torch.tensor([], dtype=torch.int64))
            return results[0].logits

        start = time.perf_counter()
        out = client.connector.run_session(view, spec, program)
        return out, time.perf_counter() - start

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(len(inputs)) as pool:
        done = [f.result() for f in [pool.submit(one, ids, mask) for ids, mask in inputs]]
    return time.perf_counter() - start, [o for o, _ in done], [t for _, t in done]


def bench_concurrent(name: str, n: int, profile_name: str, net_config) -> dict[str, Any]:
    """N concurrent requests of one model over a local network, unbatched then batched."""
    from secureinfer.strategy import SecureStrategy, to_json
    from secureinfer.client.connection import SessionSpec
    from ..simulate import LocalNetwork
    from secureinfer.v1 import node_pb2

    cfg, params, inputs = _inputs(name, n)
    modes: dict[str, Any] = {}
    outputs: dict[str, list[Any]] = {}
    with LocalNetwork(net_config) as net, net.owner() as owner, net.client() as client:
        committee = owner.publish(name, cfg, params)[0]
        model_id = owner.model_id(name)  # OWNER/NAME: the id nodes host it under
        view = next(v for v in client.committees(model_id) if v.committee_id == committee.committee_id)
        for mode in ("unbatched", "batched"):
            chosen = SecureStrategy(profile=profile_name, batch_requests=mode == "batched")
            spec = SessionSpec(task=node_pb2.TASK_DECODE if cfg.causal else node_pb2.TASK_ENCODE,
                               privacy=node_pb2.PRIVACY_SECRET, model_id=model_id,
                               output="last" if cfg.causal else "embedding", strategy_json=to_json(chosen))
            started = time.time()
            wall, outputs[mode], each = _run_all(client, view, spec, cfg, inputs)
            time.sleep(0.5)  # the nodes log as their streams close
            logged = [_node_log(net.log_path(node), started) for node in net.node_ids]
            modes[mode] = {"wall_s": wall, "requests_per_s": n / wall, "request_s": each,
                           "bytes_per_node": [b for b, _ in logged], "batches_per_node": [k for _, k in logged]}
    diff = max((a - b).abs().max().item() for a, b in zip(outputs["batched"], outputs["unbatched"]))
    return {"model": name, "concurrent": n, "profile": profile_name, "device": net_config.device, **modes,
            "throughput_ratio": modes["unbatched"]["wall_s"] / modes["batched"]["wall_s"],
            "max_abs_diff_batched_vs_unbatched": diff}


def describe(r: dict[str, Any]) -> str:
    """One paragraph of a concurrent run's figures."""
    parts = []
    for mode in ("unbatched", "batched"):
        m = r[mode]
        parts.append(f"{mode} {m['wall_s']:.2f} s ({m['requests_per_s']:.3f} req/s, bytes per node "
                     f"{'/'.join(f'{b / 1e6:,.1f}' for b in m['bytes_per_node'])} MB, batches "
                     f"{m['batches_per_node'][0]})")
    return (f"{r['model']} x{r['concurrent']} concurrent: " + "; ".join(parts) +
            f"; batched throughput x{r['throughput_ratio']:.2f}; max |batched - unbatched| "
            f"{r['max_abs_diff_batched_vs_unbatched']:.2e}")
