"""The `secureinfer` command line: one module per command group (certs, node, network, simulate, selector, bench).

`secureinfer --help` lists the commands; `app.py` builds the parser from each group's `add_parser`.
"""

from __future__ import annotations

from .app import build_parser, main

__all__ = ["build_parser", "main"]
