"""The `secureinfer` command line: the root parser, built from each command group's module, and `main`."""

from __future__ import annotations

import argparse
import sys

from secureinfer import __version__

from . import bench, certs, gateway, network, node, selector, simulate, usage

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
  secureinfer bench anchors --workload minilm # vs SPU/PUMA, CrypTen, transformers (needs a source checkout)
  secureinfer certs init --dir certs     # a network CA; then `certs issue` for each node, client and owner
  secureinfer node serve --config n.toml # run a node daemon (see `secureinfer node serve --help`)
  secureinfer network status --seed 127.0.0.1:7001 --certs certs --name alice
  secureinfer gateway --seed 127.0.0.1:7001 --certs certs --name alice  # the OpenAI API and a status page
  secureinfer simulate                   # 3 local node processes, MiniLM published as secret shares, a secure request
"""


def build_parser() -> argparse.ArgumentParser:
    """The root parser: one subcommand per command group, each added by its module's add_parser."""
    parser = argparse.ArgumentParser(
        prog="secureinfer", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"secureinfer {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in (bench, certs, node, network, gateway, simulate, selector):
        group.add_parser(commands)
    usage.help_when_bare(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: the process's arguments) and run the chosen command; its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
