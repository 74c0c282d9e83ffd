"""The `secureinfer` command line: one module per command group (bench, certs, node, network, simulate, selector).

`secureinfer --help` lists the commands; `app.py` builds the root parser from each group's `add_parser`, and
`usage.py` holds what the groups share (help for a bare group, one-line errors).
"""

from __future__ import annotations

from .app import build_parser, main

__all__ = ["build_parser", "main"]
