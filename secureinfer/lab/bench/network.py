"""`secureinfer bench network`: the model benchmarks over a real network of node processes, against in-process.

For each model, one run in-process (three party threads, bench model's figures) and one over a `LocalNetwork`:
three node processes on loopback, mutual TLS, the same session protocol. Figures per step: the client-observed
time (control message sent -> output reconstructed), for the network run also the whole request as a user sees it
(session opened on three nodes -> closed), and the bytes each node sent to the other parties, read from the
nodes' own session logs. Overhead = network step time / in-process step time, measured in the same run.
Models: minilm (all-MiniLM-L6-v2, 128 tokens), bert-base (BERT-base shape, random weights, 128 tokens) and gpt2
(GPT-2-base shape, 32-token prefill + 1 decoded token).
--public-weights: each model is also published with public weights (its open weights in the clear at every party) and
run with SecureStrategy(public_weights=True) over the same nodes, the prompt still secret; the result gains a
"public_weights" entry (network step times, bytes per node) and the secret/public ratios.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from . import write_json
from .model import bert_base_params, gpt2_base_params, minilm_tokens
from .nodelogs import entries_after

MODELS = ("minilm", "bert-base", "gpt2")
ENCODERS = ("minilm", "bert-base")


def _node_session_bytes(log: Path, after: float) -> list[int]:
    """bytes_sent of each 'session done' entry a node logged after `after` (unix seconds)."""
    return [int(entry.get("bytes_sent", 0)) for entry in entries_after(log, after)
            if entry.get("msg") == "session done" and entry.get("task") != "publish"]


def _load(name: str) -> tuple[Any, dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None]:
    from secureinfer.models.checkpoint import load_checkpoint, packaged_checkpoint

    if name == "minilm":
        cfg, params = load_checkpoint(packaged_checkpoint("all-MiniLM-L6-v2"), torch.float64)
        return (cfg, params, *minilm_tokens())
    if name == "bert-base":
        cfg, params = bert_base_params()
        return (cfg, {k: v.double() for k, v in params.items()}, *minilm_tokens())
    cfg, params = gpt2_base_params()
    prompt = torch.randint(0, cfg.vocab_size, (1, 32), generator=torch.Generator().manual_seed(1))
    return cfg, params, prompt, None


def _in_process(name: str, cfg, params, ids, mask, profile, device: str) -> list[float]:
    from secureinfer.mpc.models import session
    from secureinfer.mpc.party import EngineConfig

    config = EngineConfig(device=device)
    if name in ENCODERS:
        _, report = session.secure_encode(cfg, params, ids, mask, profile=profile, config=config)
    else:
        _, report = session.secure_generate(cfg, params, ids, 2, eos_token_ids=(), profile=profile, config=config)
    return [s.seconds for s in report.steps]


def _over_network(net, name: str, cfg, params, ids, mask, profile_name: str, public_weights: bool = False
                  ) -> tuple[list[float], float, Any]:
    """Per-step client times, the whole request's wall time, and the output, through the SDK's connector."""
    from secureinfer.mpc.models import serving
    from secureinfer.models.sampling import SamplingConfig
    from secureinfer.strategy import SecureStrategy, to_json
    from secureinfer.mpc.party import EngineConfig
    from secureinfer.client.connection import SessionSpec
    from secureinfer.v1 import node_pb2

    model_id = f"{name}-open" if public_weights else name
    with net.owner() as owner, net.client() as client:
        committee = owner.publish(model_id, cfg, params, public_weights=public_weights)[0]
        model_id = owner.model_id(model_id)  # OWNER/NAME: the id nodes host it under
        view = next(v for v in client.committees(model_id) if v.committee_id == committee.committee_id)
        task = node_pb2.TASK_ENCODE if name in ENCODERS else node_pb2.TASK_DECODE
        chosen = to_json(SecureStrategy(profile=profile_name, public_weights=True)) if public_weights else ""
        spec = SessionSpec(task=task, privacy=node_pb2.PRIVACY_SECRET, model_id=model_id,
                           output="embedding" if name in ENCODERS else "last",
                           profile="" if public_weights else profile_name, strategy_json=chosen)

        def program(channel):
            if name in ENCODERS:
                return serving.client_encode(channel, cfg, EngineConfig(), ids, mask, None, "embedding")
            results, times = serving.client_generate_many(channel, cfg, EngineConfig(), [ids], 2, SamplingConfig(),
                                                          torch.tensor([], dtype=torch.int64))
            return results[0], times

        start = time.perf_counter()
        out, times = client.connector.run_session(view, spec, program)
        wall = time.perf_counter() - start
    return [t for t, _ in times], wall, out


def bench(name: str, profile_name: str, net_config, public_weights: bool = False) -> dict[str, Any]:
    """One model in-process and over the network (and, with `public_weights`, over the network with public
    weights)."""
    from secureinfer.mpc.approx import profile as profiles
    from ..simulate import LocalNetwork

    profile = profiles.get(profile_name)
    cfg, params, ids, mask = _load(name)
    local = _in_process(name, cfg, params, ids, mask, profile, net_config.device)
    with LocalNetwork(net_config) as net:
        started = time.time()
        remote, wall, _ = _over_network(net, name, cfg, params, ids, mask, profile_name)
        time.sleep(0.5)  # the nodes log 'session done' as their streams close
        sent = [_node_session_bytes(net.log_path(n), started) for n in net.node_ids]
        if public_weights:
            started = time.time()
            open_steps, open_wall, _ = _over_network(net, name, cfg, params, ids, mask, profile_name, True)
            time.sleep(0.5)
            open_sent = [_node_session_bytes(net.log_path(n), started) for n in net.node_ids]
    steps = ["forward"] if name in ENCODERS else ["prefill", "decode"]
    extra: dict[str, Any] = {}
    if public_weights:
        open_bytes = [sum(s) for s in open_sent]
        extra["public_weights"] = {
            "steps": {step: {"network_s": t} for step, t in zip(steps, open_steps)}, "network_s": sum(open_steps),
            "network_request_wall_s": open_wall, "bytes_per_node": open_bytes,
            "bytes_ratio": max(sum(s) for s in sent) / max(open_bytes), "time_ratio": sum(remote) / sum(open_steps)}
    return {**extra, "model": name, "profile": profile_name, "device": net_config.device,
            "steps": {step: {"in_process_s": a, "network_s": b, "overhead": b / a if a else None}
                      for step, a, b in zip(steps, local, remote)},
            "in_process_s": sum(local), "network_s": sum(remote), "overhead": sum(remote) / sum(local),
            "network_request_wall_s": wall,
            "bytes_per_node": [sum(s) for s in sent]}


def main(args: argparse.Namespace) -> int:
    """Entry point of `secureinfer bench network`."""
    from ..simulate import SimulationConfig

    latency = (args.latency_ms or 0.0) / 1000
    bandwidth = args.bandwidth_mbit * 1e6 / 8 if args.bandwidth_mbit else None
    concurrent = getattr(args, "concurrent", 0) or 0
    net_config = SimulationConfig(n_nodes=3, latency_s=latency, bandwidth_bytes_per_s=bandwidth, log_level="INFO",
                                  device=args.device, torch_threads=args.torch_threads,
                                  max_sessions=max(4, concurrent),
                                  batch_window_s=getattr(args, "batch_window_s", 0.05))
    if concurrent:
        return _main_concurrent(args, concurrent, net_config)
    if "tiny" in (args.model or ()):
        print("error: the tiny model is only for --concurrent", file=sys.stderr)
        return 2
    print(f"in-process (3 threads) vs 3 node processes on loopback with mutual TLS; device {args.device}, profile "
          f"{args.profile}; "
          f"link latency {latency * 1000:g} ms, bandwidth {args.bandwidth_mbit or 'unlimited'} Mbit/s", flush=True)
    results = []
    for name in args.model or MODELS:
        r = bench(name, args.profile, net_config, getattr(args, "public_weights", False))
        results.append(r)
        steps = "; ".join(f"{k} {v['in_process_s']:.2f} s -> {v['network_s']:.2f} s (x{v['overhead']:.2f})"
                          for k, v in r["steps"].items())
        print(f"{name}: {steps}; whole request over the network {r['network_request_wall_s']:.2f} s; "
              f"bytes sent per node {'/'.join(f'{b / 1e6:,.1f}' for b in r['bytes_per_node'])} MB", flush=True)
        if "public_weights" in r:
            pw = r["public_weights"]
            steps = "; ".join(f"{k} {v['network_s']:.2f} s" for k, v in pw["steps"].items())
            print(f"{name} with public weights over the network: {steps}; bytes sent per node "
                  f"{'/'.join(f'{b / 1e6:,.1f}' for b in pw['bytes_per_node'])} MB; secret/public: bytes "
                  f"x{pw['bytes_ratio']:.3f}, time x{pw['time_ratio']:.3f}", flush=True)
    if args.json:
        write_json(args.json, "network", results, args.device, latency_ms=args.latency_ms,
                   bandwidth_mbit=args.bandwidth_mbit, node_torch_threads=args.torch_threads)
    return 0


def _main_concurrent(args: argparse.Namespace, n: int, net_config) -> int:
    """`--concurrent N`: N concurrent requests per model, unbatched and batched."""
    from .concurrent import bench_concurrent, describe

    print(f"{n} concurrent secure requests through 3 node processes (loopback, mutual TLS), each in its own MPC run, "
          f"then batched (SecureStrategy(batch_requests=True), node batch window {net_config.batch_window_s:g} s); "
          f"device {args.device}, profile {args.profile}", flush=True)
    results = []
    for name in args.model or MODELS:
        results.append(bench_concurrent(name, n, args.profile, net_config))
        print(describe(results[-1]), flush=True)
    if args.json:
        write_json(args.json, "network-concurrent", results, args.device, latency_ms=args.latency_ms,
                   bandwidth_mbit=args.bandwidth_mbit, node_torch_threads=args.torch_threads,
                   batch_window_s=net_config.batch_window_s)
    return 0
