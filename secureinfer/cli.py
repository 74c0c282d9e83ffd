"""The `secureinfer` command line: `secureinfer --help` lists the subcommands."""

from __future__ import annotations

import argparse
import sys

from . import __version__, cli_certs, cli_node, cli_simulate

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
  secureinfer certs init --dir certs     # a network CA; then `certs issue` for each node, client and owner
  secureinfer node serve --config n.toml # run a node daemon (see `secureinfer node serve --help`)
  secureinfer network status --seed 127.0.0.1:7001 --certs certs --name alice
  secureinfer simulate                   # 3 local node processes, MiniLM published as secret shares, a secure request
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
    model.add_argument("--model", action="append", choices=["minilm", "gpt2", "smollm2"],
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
    network.add_argument("--model", action="append", choices=["minilm", "gpt2"], help="only this model (repeatable)")
    network.add_argument("--profile", default="accurate", help="approximation profile: accurate, fast or lean")
    network.add_argument("--latency-ms", type=float, default=0.0, help="software-injected one-way latency per message")
    network.add_argument("--bandwidth-mbit", type=float, default=None, help="software-injected per-link bandwidth cap")
    network.add_argument("--device", default="cpu", help="torch device of the parties and nodes (default cpu)")
    network.add_argument("--torch-threads", type=int, default=1,
                         help="torch threads per node process (default 1: three nodes share this machine's cores)")
    network.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE ('-' for stdout)")
    network.set_defaults(handler=_bench_network)
    bench.set_defaults(handler=lambda _args: _usage(bench))
    cli_certs.add_parser(commands)
    cli_node.add_parsers(commands)
    cli_simulate.add_parser(commands)
    parser.set_defaults(handler=lambda _args: _usage(parser))
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    """A bare command or group: show what it can do, and fail (nothing was run)."""
    parser.print_help()
    return 2


def _bench_ops(args: argparse.Namespace) -> int:
    from .bench import ops

    return ops.main(args)


def _bench_model(args: argparse.Namespace) -> int:
    from .bench import model

    return model.main(args)


def _bench_network(args: argparse.Namespace) -> int:
    from .bench import network

    return network.main(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
