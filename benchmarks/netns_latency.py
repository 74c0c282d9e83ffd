"""Secure request latency across network namespaces with tbf-capped links (needs root; see secureinfer/lab/netns.py).

    python benchmarks/netns_latency.py --model minilm --seq 128 --rates none,1gbit,100mbit --json out.json
    python benchmarks/netns_latency.py --model tiny --rates none,100mbit,10mbit

Starts three node processes, each in its own network namespace with its own address, publishes the model as secret
shares, then for each cap (set live on every node link, both directions) runs `--repeat` requests from this process
(root namespace) and reports wall time, bytes each node put on its interface (kernel counters) and the busiest link's
rate. MiniLM: secure sentence embeddings of `--seq` random tokens (cosine vs plaintext); tiny: a 2-layer GPT-2
generating 4 tokens. Figures are for this machine (shared cores: noisy); not a test.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch

from secureinfer.cli.simulate import tiny_gpt2
from secureinfer.lab.bench import metrics
from secureinfer.lab.netns import NetnsConfig, NetnsNetwork, describe, unavailable_reason
from secureinfer.lab.simulate import SimulationConfig
from secureinfer.models.checkpoint import load_checkpoint, packaged_checkpoint
from secureinfer.plaintext import reference as plaintext

_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}


def parse_rate(text: str) -> float | None:
    """'none' -> None; '100mbit', '1gbit', '500kbit', '8000000' -> bits per second."""
    if text.strip().lower() == "none":
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)(?:bit)?", text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"a rate is 'none' or like 100mbit, 1gbit, 500kbit; got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _label(rate: float | None) -> str:
    return "uncapped" if rate is None else f"{rate / 1e6:g} Mbit/s"


def _request(net: NetnsNetwork, model: str, cfg, params, seq: int, seed: int) -> tuple[float, float]:
    """Run one request; (wall seconds, accuracy figure: cosine for MiniLM, 1.0 if tokens equal greedy for tiny)."""
    gen = torch.Generator().manual_seed(seed)
    client = net.client(timeout_s=1800.0)
    if model == "minilm":
        ids = torch.randint(1000, cfg.vocab_size, (1, seq), generator=gen)
        mask = torch.ones_like(ids)
        start = time.monotonic()
        got = client.embed("minilm", ids, mask)
        seconds = time.monotonic() - start
        want = plaintext.sentence_embedding(cfg, params, ids, mask)
        return seconds, metrics.min_row_cosine(got, want)
    prompt = torch.randint(0, cfg.vocab_size, (1, 5), generator=gen)
    start = time.monotonic()
    got = client.generate("tiny", prompt, 4)
    seconds = time.monotonic() - start
    return seconds, float(torch.equal(got.tokens, plaintext.greedy_generate(cfg, params, prompt, 4)))


def run(args: argparse.Namespace) -> dict:
    """Publish the model on a namespaced 3-node network, then time `--repeat` requests at each link cap."""
    if args.model == "minilm":
        cfg, params = load_checkpoint(packaged_checkpoint("all-MiniLM-L6-v2"), torch.float64)
    else:
        cfg, params = tiny_gpt2()
    results = []
    with NetnsNetwork(SimulationConfig(n_nodes=3, session_timeout_s=1800.0), NetnsConfig()) as net:
        print(json.dumps(describe(net)), flush=True)
        net.owner(timeout_s=1800.0).publish(args.model, cfg, params)
        for rate in args.rates:
            net.set_rate(rate)
            tcp = net.throughput("node-1", 8 << 20) * 8 if rate is not None and rate <= 2e9 else None
            rows = []
            for repeat in range(args.repeat):
                before = {n: net.link_bytes(n) for n in net.node_ids}
                seconds, accuracy = _request(net, args.model, cfg, params, args.seq, seed=repeat)
                after = {n: net.link_bytes(n) for n in net.node_ids}
                sent = [after[n][1] - before[n][1] for n in net.node_ids]
                received = [after[n][0] - before[n][0] for n in net.node_ids]
                busiest = max(sent + received)
                rows.append({"seconds": seconds, "accuracy": accuracy, "sent_bytes": sent, "received_bytes": received,
                             "busiest_link_mbit_s": busiest * 8 / seconds / 1e6})
                print(f"{_label(rate):>14}: {seconds:7.2f} s, busiest link {busiest / 1e6:8.1f} MB "
                      f"({busiest * 8 / seconds / 1e6:7.1f} Mbit/s), accuracy {accuracy:.7f}", flush=True)
            results.append({"rate_bits_per_s": rate, "tcp_mbit_s": None if tcp is None else tcp / 1e6,
                            "median_s": statistics.median(r["seconds"] for r in rows), "requests": rows})
    return {"benchmark": "netns", "model": args.model, "seq": args.seq if args.model == "minilm" else None,
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "torch": torch.__version__},
            "results": results}


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, check that namespaces can be made here, run, and write --json if asked."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("minilm", "tiny"), default="minilm",
                        help="minilm: real all-MiniLM-L6-v2 embeddings (default); tiny: a 2-layer random GPT-2")
    parser.add_argument("--seq", type=int, default=128, help="MiniLM tokens per request (default 128)")
    parser.add_argument("--rates", type=lambda s: [parse_rate(r) for r in s.split(",")],
                        default=[None, 1e9, 1e8], help="comma-separated caps per link (default none,1gbit,100mbit)")
    parser.add_argument("--repeat", type=int, default=1, help="requests per cap (default 1)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    report = run(args)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
