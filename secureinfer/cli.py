"""The `secureinfer` command line: `secureinfer --help` lists the subcommands."""

from __future__ import annotations

import argparse
import sys

from . import __version__

DESCRIPTION = """\
secureinfer runs Transformer inference across machines that do not trust each other.

Secure mode splits the model's weights and the client's prompt into replicated secret shares held by three
nodes, so no single node sees either; only the client reconstructs the answer.
"""

EPILOG = """\
examples:
  secureinfer bench ops                 # time the secure primitives on a 3-party in-process network
  secureinfer bench ops --json out.json # ... and write the figures as JSON
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
    bench.set_defaults(handler=lambda _args: _usage(bench))
    parser.set_defaults(handler=lambda _args: _usage(parser))
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    """A bare command or group: show what it can do, and fail (nothing was run)."""
    parser.print_help()
    return 2


def _bench_ops(args: argparse.Namespace) -> int:
    from .bench import ops

    return ops.main(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
