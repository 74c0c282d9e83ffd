"""What every command group shares: a bare group shows its help and fails; an error is one line on stderr."""

from __future__ import annotations

import argparse
import sys


def help_when_bare(parser: argparse.ArgumentParser) -> None:
    """Make `parser`, run without a subcommand, print its help and fail (nothing was run)."""

    def show_help(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(handler=show_help)


def fail(command: str, message: object, code: int = 2) -> int:
    """Print `secureinfer COMMAND: MESSAGE` on stderr; return the exit status `code`."""
    print(f"secureinfer {command}: {message}", file=sys.stderr, flush=True)
    return code
