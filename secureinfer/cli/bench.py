"""`secureinfer bench`: the benchmarks of secureinfer.lab.bench, one subcommand each, run by one handler.

Each subcommand's module is imported only when it runs, so building the parser (and `secureinfer --help`) imports
no torch.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from . import usage

# subcommand -> the module whose main(args) runs it
MODULES = {
    "ops": "secureinfer.lab.bench.ops",
    "model": "secureinfer.lab.bench.model",
    "network": "secureinfer.lab.bench.network",
    "load": "secureinfer.lab.bench.load",
    "sweep": "secureinfer.lab.bench.sweep",
    "plaintext": "secureinfer.lab.bench.plaintext",
    "anchors": "secureinfer.lab.bench.anchors",
    "membership": "secureinfer.lab.bench.membership",
}

# Kept in step with secureinfer.lab.bench.sweep's MODELS and LINKS (tests/lab/test_sweep.py checks); written out here so
# that building the parser does not import torch.
SWEEP_EPILOG = """\
models:
  tiny-gpt2     GPT-2 shape, 2 layers, hidden 64, 4 heads, vocab 256, random weights
  tiny-llama    LLaMA shape, 2 layers, hidden 64, 8 heads / 2 KV heads (GQA), vocab 256, random weights
  tiny-bert     BERT shape, 2 layers, hidden 64, 4 heads, vocab 256, random weights
  small-gpt2    GPT-2 shape, 4 layers, hidden 128, 4 heads, vocab 512, random weights
  small-llama   LLaMA shape, 4 layers, hidden 128, 8 heads / 2 KV heads (GQA), vocab 512, random weights
  small-bert    BERT shape, 4 layers, hidden 128, 4 heads, vocab 512, random weights
  gpt2-base-2L  GPT-2-base shape (hidden 768, 12 heads, vocab 50257) cut to its first 2 of 12 layers, random weights
  gpt2-base     GPT-2-base shape, 12 layers, random GPT-2-style weights
  minilm        all-MiniLM-L6-v2 (real weights), sentence embedding
  smollm2       SmolLM2-135M-Instruct (real weights, GGUF Q4_1 dequantized)
links (secure runs, between the parties and the client):
  local         no shaping
  lan           0.1 ms one way, 1000 Mbit/s
  metro         2 ms one way, 100 Mbit/s
  wan           20 ms one way, 100 Mbit/s
  slow          50 ms one way, 20 Mbit/s
grids:
  small         the committed CPU dataset's grid (tiny models, GPT-2-base cut to 2 layers, MiniLM, SmolLM2)
  medium, full  more shapes, the 12-layer GPT-2-base, secure SmolLM2, the wan link, torch.compile
  selector      variety for the selector's held-out evaluation: tiny and small models of all three
                architectures, batch 4, 64-128 tokens, and the wan and slow links on single-forward cases
examples:
  secureinfer bench sweep --dry-run
  secureinfer bench sweep --grid small --store sweep.sqlite --csv sweep.csv
  secureinfer bench sweep --grid medium --device cuda --models minilm,smollm2 --store gpu.sqlite
"""


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the `bench` command and its subcommands to the top-level subcommands; return its parser."""
    bench = commands.add_parser("bench", help="measure the engine (time, rounds, bytes per party, error)")
    kinds = bench.add_subparsers(dest="bench_kind", metavar="WHAT")
    for add in (_add_ops, _add_model, _add_network, _add_load, _add_sweep, _add_plaintext, _add_anchors,
                _add_membership):
        add(kinds).set_defaults(handler=run)
    usage.help_when_bare(bench)
    return bench


def run(args: argparse.Namespace) -> int:
    """Run the chosen benchmark: import its module now and call its main(args)."""
    return importlib.import_module(MODULES[args.bench_kind]).main(args)


def _add_ops(kinds: Any) -> argparse.ArgumentParser:
    """`bench ops`: the secure primitives one by one."""
    ops = kinds.add_parser(
        "ops",
        help="secure primitives on a 3-party in-process network",
        description="Time each secure primitive on three in-process parties and report rounds, bytes sent per "
        "party and error against float64 torch.",
    )
    ops.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE ('-' for stdout)")
    ops.add_argument("--repeat", type=int, default=3, help="runs per op; the median is reported (default 3)")
    ops.add_argument("--device", default="cpu", help="torch device for the parties, e.g. cpu or cuda (default cpu)")
    ops.add_argument("--only", metavar="NAME", action="append", help="run only the named op (repeatable)")
    return ops


def _add_model(kinds: Any) -> argparse.ArgumentParser:
    """`bench model`: whole secure forwards on in-process parties."""
    model = kinds.add_parser(
        "model",
        help="whole secure Transformer forwards (MiniLM, GPT-2-base shape, SmolLM2)",
        description="Run secure forwards of real and real-shaped Transformers on three in-process parties (plus the "
        "model owner and the client) and report wall time, rounds, bytes sent per party, peak memory, accuracy "
        "against the float64 plaintext model, and a per-op breakdown of where time and bytes go.",
    )
    model.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE ('-' for stdout)")
    model.add_argument("--model", action="append", choices=["minilm", "bert-base", "gpt2", "smollm2"],
                       help="benchmark only this model (repeatable; default: all three, each in its own process)")
    model.add_argument("--profile", default="accurate", help="approximation profile: accurate, fast or lean (default accurate)")
    model.add_argument("--repeat", type=int, default=1, help="sessions per model; the median is reported (default 1)")
    model.add_argument("--device", default="cpu", help="torch device for the parties, e.g. cpu or cuda (default cpu)")
    model.add_argument("--no-breakdown", action="store_true", help="skip the traced run that gives the per-op breakdown")
    model.add_argument("--public-weights", action="store_true",
                       help="also run each model with public weights (open models: weights in the clear at every "
                            "party, activations secret) and report both and the secret/public bytes and time ratios")
    model.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    return model


def _add_network(kinds: Any) -> argparse.ArgumentParser:
    """`bench network`: the model benchmarks through real node processes."""
    network = kinds.add_parser(
        "network", help="the model benchmarks over three real node processes (mutual TLS) vs in-process",
        description="Run the MiniLM and GPT-2-base benchmarks once on three in-process parties and once through "
        "three node processes on loopback with mutual TLS (secureinfer simulate's network), and report each step's "
        "time in both, the overhead ratio, and the bytes each node sent to the other parties.")
    network.add_argument("--model", action="append", choices=["minilm", "bert-base", "gpt2", "tiny"],
                         help="only this model (repeatable); tiny (a random 2-layer GPT-2) only with --concurrent")
    network.add_argument("--profile", default="accurate", help="approximation profile: accurate, fast or lean")
    network.add_argument("--latency-ms", type=float, default=0.0, help="software-injected one-way latency per message")
    network.add_argument("--bandwidth-mbit", type=float, default=None, help="software-injected per-link bandwidth cap")
    network.add_argument("--device", default="cpu", help="torch device of the parties and nodes (default cpu)")
    network.add_argument("--torch-threads", type=int, default=1,
                         help="torch threads per node process (default 1: three nodes share this machine's cores)")
    network.add_argument("--public-weights", action="store_true",
                         help="also publish each model with public weights (open weights in the clear at every node, "
                              "the prompt and activations still secret) and report its time, bytes and the ratios")
    network.add_argument("--concurrent", type=int, default=0, metavar="N",
                         help="instead: N concurrent requests per model, each in its own MPC run and then batched "
                              "(SecureStrategy(batch_requests=True)), and the throughput of both")
    network.add_argument("--batch-window-s", type=float, default=2.0,
                         help="with --concurrent: how long the nodes hold a batch open for partners (default 2.0; "
                              "MiniLM's token uploads take ~0.1 s per request on loopback)")
    network.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE ('-' for stdout)")
    return network


def _add_load(kinds: Any) -> argparse.ArgumentParser:
    """`bench load`: concurrent requests while nodes are killed and restarted."""
    load = kinds.add_parser(
        "load", help="load and soak with faults: concurrent secure requests while nodes are killed and restarted",
        description="Start six node processes (two committees of a tiny random GPT-2, mutual TLS), fire concurrent "
        "secure requests from several client certificates, SIGKILL and restart committee members during the run, "
        "check every answer against the plaintext model, and report outcomes by cause, latency percentiles and the "
        "nodes' memory and open files before and after.")
    load.add_argument("--requests", type=int, default=40, help="requests in all (default 40)")
    load.add_argument("--concurrency", type=int, default=4, help="requests in flight at once (default 4)")
    load.add_argument("--clients", type=int, default=3, help="client certificates the requests come from (default 3)")
    load.add_argument("--kills", type=int, default=1, help="nodes killed and restarted during the run (default 1)")
    load.add_argument("--deadline-s", type=float, default=60.0, help="each request's deadline, retries included")
    load.add_argument("--republish", action="store_true",
                      help="nodes keep no data directory: a restarted node starts empty and the model is published "
                      "to its committee again (default: nodes keep their shares and serve them after a restart)")
    load.add_argument("--json", metavar="FILE", help="also write the report (every outcome) as JSON to FILE")
    return load


def _add_sweep(kinds: Any) -> argparse.ArgumentParser:
    """`bench sweep`: a grid of runs into a performance store."""
    sweep = kinds.add_parser(
        "sweep", help="measure a grid of requests x strategies x devices x links into the performance store",
        description="Run a grid of (model, seq_len, batch, gen_tokens) x strategies (secure profiles, fractional "
        "bits and public weights; plaintext precisions and the fast engine's strategies) x devices x simulated "
        "links, and write one row per run (request, node and link features, strategy, latency, rounds, bytes per "
        "party, peak memory, accuracy vs float64 plaintext) into the SQLite performance store the selector learns "
        "from. Resumable: rows already in the store are skipped.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=SWEEP_EPILOG)
    sweep.add_argument("--grid", choices=["small", "medium", "full", "selector"], default="small",
                       help="grid size (default small)")
    sweep.add_argument("--models", action="append", metavar="M[,M...]",
                       help="only these models (repeatable or comma-separated; names below)")
    sweep.add_argument("--case", action="append", metavar="MODEL:SEQ:BATCH:GEN",
                       help="measure these cases instead of the grid's (repeatable; GEN 0 for encoders)")
    sweep.add_argument("--device", action="append", metavar="DEV",
                       help="devices (repeatable or comma-separated; default cpu, plus cuda where available)")
    sweep.add_argument("--link", action="append", metavar="NAME",
                       help="links for secure runs (repeatable or comma-separated; names below; default: the grid's)")
    sweep.add_argument("--strategy", action="append", metavar="SUBSTR",
                       help="only strategies whose name contains SUBSTR (repeatable), e.g. secure-lean or plain-")
    sweep.add_argument("--repeat", type=int, default=1, help="repetitions of each grid point (default 1)")
    sweep.add_argument("--store", metavar="FILE",
                       help="the SQLite performance store to write (created if missing; required unless --dry-run)")
    sweep.add_argument("--csv", metavar="FILE", help="export the whole store as CSV to FILE afterwards")
    sweep.add_argument("--limit", type=int, metavar="N", help="measure at most N new runs")
    sweep.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                       help="skip runs already in the store (default on; --no-resume re-measures and replaces)")
    sweep.add_argument("--dry-run", action="store_true", help="print the grid and exit")
    sweep.add_argument("--host", help="host label stored with each row and part of its key (default: hostname)")
    sweep.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")
    return sweep


def _add_plaintext(kinds: Any) -> argparse.ArgumentParser:
    """`bench plaintext`: the fast plaintext decoder against transformers' generate."""
    plain = kinds.add_parser(
        "plaintext", help="the fast plaintext decoder vs Hugging Face generate (SmolLM2, batch 1 and 32)",
        description="Decode SmolLM2-135M with Hugging Face transformers' generate and with secureinfer's fast "
        "plaintext decoder (static KV cache, CUDA graphs, continuous batching) on the same device and precision, "
        "in one run: per-step latency, tokens/s, speedup, and greedy token agreement.")
    plain.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    plain.add_argument("--precision", choices=["fp32", "bf16", "fp16"],
                        help="both engines' precision (default: bf16 on cuda, fp32 on cpu)")
    plain.add_argument("--concurrency", type=int, default=None, help="rows / concurrent requests (default 32)")
    plain.add_argument("--new-tokens", type=int, default=None, help="tokens generated per row (default 128)")
    plain.add_argument("--prompt-len", type=int, default=None, help="prompt tokens per row (default 32)")
    plain.add_argument("--repeat", type=int, default=None, help="timed runs per figure, median (default 3)")
    plain.add_argument("--quick", action="store_true",
                        help="a short run for CPUs: 8 rows, 16-token prompts, 8 new tokens, 1 repeat")
    plain.add_argument("--weights", choices=["packaged", "random"], default="packaged",
                        help="the packaged SmolLM2 GGUF (default) or random weights of its shape")
    plain.add_argument("--checkpoint", help="a SmolLM2 .gguf file or HF directory instead of the packaged one")
    plain.add_argument("--variant", action="append", choices=["eager", "compile", "int8", "spec"],
                        help="also run the fast decoder this way (repeatable): eager (no graphs), compile, int8, spec")
    plain.add_argument("--speculation-tokens", type=int, default=4, help="drafted tokens per round for --variant spec")
    plain.add_argument("--draft-layers", type=int, default=None, help="early-exit draft depth (default half)")
    plain.add_argument("--spec-batched", action="store_true", help="run --variant spec at the batched case too")
    plain.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    plain.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE ('-' for stdout)")
    return plain


def _add_anchors(kinds: Any) -> argparse.ArgumentParser:
    """`bench anchors`: the checkout's side-by-side benchmarks; every argument, --help included, is theirs."""
    anchors = kinds.add_parser(
        "anchors", help="secureinfer against SPU/PUMA, CrypTen and transformers, side by side (needs a source "
        "checkout; `secureinfer bench anchors --help` for its options)",
        description="Run the source checkout's benchmarks/anchors (python -m benchmarks.anchors) from any folder.",
        add_help=False, prefix_chars="\0")  # no option of its own: every argument goes through to the anchors
    anchors.add_argument("anchor_args", nargs=argparse.REMAINDER, metavar="ARGS",
                         help="the anchors' own options (see `secureinfer bench anchors --help`)")
    return anchors


def _add_membership(kinds: Any) -> argparse.ArgumentParser:
    """`bench membership`: gossip of many nodes' signed records, simulated in one process."""
    membership = kinds.add_parser(
        "membership", help="membership at scale: N nodes' signed records through the gossip code, in one process",
        description="Give N simulated nodes certificates from one CA and signed records, and run the nodes' gossip "
        "rounds (their target choice, the Gossip call's merge and reply as wire bytes; no gRPC) until every table "
        "holds every record, while some members push forged records. Reports rounds to converge, bytes per node "
        "per round, CPU time, forged records rejected, and the time to choose committees from a full table.")
    membership.add_argument("--nodes", type=int, default=1000, help="simulated nodes (default 1000)")
    membership.add_argument("--seeds", type=int, default=3, help="seed nodes every node starts from (default 3)")
    membership.add_argument("--forgers", type=int, default=2,
                            help="members that push forged records in every message (default 2)")
    membership.add_argument("--max-rounds", type=int, default=60, help="give up after this many rounds (default 60)")
    membership.add_argument("--seed", type=int, default=0, help="random seed of the simulation (default 0)")
    membership.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE ('-' for stdout)")
    return membership
