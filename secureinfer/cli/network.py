"""`secureinfer network`: look at a running network through any of its nodes (`status`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from . import usage


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the `network` command (status) to the top-level subcommands; return its parser."""
    network = commands.add_parser("network", help="look at a running network",
                                  description="Inspect a running secureinfer network through any of its nodes.")
    net_cmds = network.add_subparsers(dest="network_command", metavar="WHAT")
    status = net_cmds.add_parser(
        "status", help="list the live nodes and the models they host",
        description="Ask a seed node for its membership view: every live node's address, roles, device, measured "
        "speed and hosted models (records are signed by each node; they are verified here against the CA).")
    status.add_argument("--seed", required=True, action="append", metavar="HOST:PORT", help="a node to ask")
    status.add_argument("--certs", required=True, metavar="DIR", help="directory with ca.pem and your identity")
    status.add_argument("--name", required=True, help="your identity's name in DIR (a client, owner or node)")
    status.set_defaults(handler=_status)
    usage.help_when_bare(network)
    return network


def _status(args: argparse.Namespace) -> int:
    """`network status`: print a seed node's membership view, verified against the CA."""
    from secureinfer.client import Client
    from secureinfer.client.connection import NetworkError
    from secureinfer.net.certs import CertError

    try:
        with Client.from_dir(Path(args.certs), args.name, args.seed, timeout_s=15.0) as client:
            records = client.nodes()
    except (NetworkError, CertError) as exc:
        return usage.fail("network status", exc)
    print(format_status(records))
    return 0


def format_status(records: list) -> str:
    """A table of node records: one line per node, then its hosted models."""
    now = time.time()
    lines = [f"{'NODE':<16} {'ADDRESS':<22} {'ROLES':<18} {'DEVICE':<24} {'GFLOP/s':>8} {'MEM GiB':>8} {'AGE s':>6}"]
    for r in sorted(records, key=lambda r: r.node_id):
        cap = r.capability
        lines.append(f"{r.node_id:<16} {r.address:<22} {','.join(r.roles):<18} {cap.device:<24} "
                     f"{cap.matmul_gflops:>8.1f} {cap.memory_bytes / 2**30:>8.1f} {now - r.issued_at:>6.1f}")
        for m in r.models:
            kind = ("secret, public weights" if m.public_weights else "secret") if m.privacy == 1 else "public"
            bits = f" at f={m.frac_bits or 18}" if m.privacy == 1 else ""  # a record without the field: 18
            lines.append(f"    hosts {m.model_id} ({m.arch}, {kind}){bits} committee {m.committee_id} "
                         f"as party {m.party_index} of {'/'.join(m.node_ids)}")
    lines.append(f"{len(records)} live node(s)")
    return "\n".join(lines)
