"""The `secureinfer` command line: `secureinfer --help` lists the subcommands."""

from __future__ import annotations

import argparse
import sys

from secureinfer import __version__

from . import certs as cli_certs, node as cli_node, selector as cli_selector, simulate as cli_simulate

DESCRIPTION = """\
secureinfer runs Transformer inference across machines that do not trust each other.

Secure mode splits the model's weights and the client's prompt into replicated secret shares held by three
nodes, so no single node sees either; only the client reconstructs the answer.
"""

EPILOG = """\
examples:
  secureinfer bench ops                 # time the secure primitives on a 3-party in-process network
  secureinfer bench ops --json out.json # ... and write the figures as JSON
  secureinfer bench model --model minilm # a whole secure MiniLM forward: time, rounds, bytes, accuracy, breakdown
  secureinfer bench sweep --dry-run      # the grid of requests x strategies x links for the performance store
  secureinfer bench plaintext --device cuda # fast plaintext decoding vs transformers generate
  secureinfer certs init --dir certs     # a network CA; then `certs issue` for each node, client and owner
  secureinfer node serve --config n.toml # run a node daemon (see `secureinfer node serve --help`)
  secureinfer network status --seed 127.0.0.1:7001 --certs certs --name alice
  secureinfer simulate                   # 3 local node processes, MiniLM published as secret shares, a secure request
"""

# Kept in step with secureinfer.lab.bench.sweep's MODELS and LINKS (tests/test_sweep.py checks); written out here so
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
  secureinfer bench sweep --grid small --csv benchmarks/sweep/sweep.csv
  secureinfer bench sweep --grid medium --device cuda --models minilm,smollm2 --store gpu.sqlite
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secureinfer", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"secureinfer {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench = commands.add_parser("bench", help="measure the engine (time, rounds, bytes per party, error)")
    bench_kinds = bench.add_subparsers(dest="bench_kind", metavar="WHAT")
    ops = bench_kinds.add_parser(
        "ops",
        help="secure primitives on a 3-party in-process network",
        description="Time each secure primitive on three in-process parties and report rounds, bytes sent per "
        "party and error against float64 torch.",
    )
    ops.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE ('-' for stdout)")
    ops.add_argument("--repeat", type=int, default=3, help="runs per op; the median is reported (default 3)")
    ops.add_argument("--device", default="cpu", help="torch device for the parties, e.g. cpu or cuda (default cpu)")
    ops.add_argument("--only", metavar="NAME", action="append", help="run only the named op (repeatable)")
    ops.set_defaults(handler=_bench_ops)
    model = bench_kinds.add_parser(
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
    model.set_defaults(handler=_bench_model)
    network = bench_kinds.add_parser(
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
    network.set_defaults(handler=_bench_network)
    load = bench_kinds.add_parser(
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
    load.add_argument("--json", metavar="FILE", help="also write the report (every outcome) as JSON to FILE")
    load.set_defaults(handler=_bench_load)
    sweep = bench_kinds.add_parser(
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
    sweep.add_argument("--store", default="benchmarks/sweep/sweep.sqlite",
                       help="SQLite performance store (default benchmarks/sweep/sweep.sqlite)")
    sweep.add_argument("--csv", metavar="FILE", help="export the whole store as CSV to FILE afterwards")
    sweep.add_argument("--limit", type=int, metavar="N", help="measure at most N new runs")
    sweep.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                       help="skip runs already in the store (default on; --no-resume re-measures and replaces)")
    sweep.add_argument("--dry-run", action="store_true", help="print the grid and exit")
    sweep.add_argument("--host", help="host label stored with each row and part of its key (default: hostname)")
    sweep.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")
    sweep.set_defaults(handler=_bench_sweep)
    plain = bench_kinds.add_parser(
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
    plain.set_defaults(handler=_bench_plaintext)
    bench.set_defaults(handler=lambda _args: _usage(bench))
    cli_certs.add_parser(commands)
    cli_node.add_parsers(commands)
    cli_simulate.add_parser(commands)
    cli_selector.add_parser(commands)
    parser.set_defaults(handler=lambda _args: _usage(parser))
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    """A bare command or group: show what it can do, and fail (nothing was run)."""
    parser.print_help()
    return 2


def _bench_ops(args: argparse.Namespace) -> int:
    from secureinfer.lab.bench import ops

    return ops.main(args)


def _bench_model(args: argparse.Namespace) -> int:
    from secureinfer.lab.bench import model

    return model.main(args)


def _bench_plaintext(args: argparse.Namespace) -> int:
    from secureinfer.lab.bench import plaintext

    return plaintext.main(args)


def _bench_network(args: argparse.Namespace) -> int:
    from secureinfer.lab.bench import network

    return network.main(args)


def _bench_load(args: argparse.Namespace) -> int:
    from secureinfer.lab.bench import load

    return load.main(args)


def _bench_sweep(args: argparse.Namespace) -> int:
    from secureinfer.lab.bench import sweep

    return sweep.main(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
