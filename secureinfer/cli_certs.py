"""The `secureinfer certs` subcommands: create the network CA, issue member certificates, show one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

CERTS_DESCRIPTION = """\
Every connection in a secureinfer network is mutual TLS: both ends present a certificate issued by the network's
certificate authority (CA), and nothing else is accepted.

A certificate directory holds:
  ca.pem          the CA certificate; public: copy it to every node, client and model owner
  ca.key          the CA private key; secret: only whoever admits new members needs it (keep it offline)
  NAME.pem        a member's certificate: its name (CN), role (OU: node, client or owner) and host names
  NAME.key        that member's private key (mode 0600); it never leaves the member's machine
"""

CERTS_EPILOG = """\
examples:
  secureinfer certs init --dir certs
  secureinfer certs issue --dir certs --name node-a --role node --host 10.0.0.5 --host node-a.example.org
  secureinfer certs issue --dir certs --name alice --role client
  secureinfer certs show --dir certs --name node-a
"""


def add_parser(subcommands: Any) -> argparse.ArgumentParser:
    """Add the `certs` command (init, issue, show) to a parser's subcommands; return its parser."""
    certs = subcommands.add_parser(
        "certs",
        help="create the network CA and issue node, client and model-owner certificates",
        description=CERTS_DESCRIPTION,
        epilog=CERTS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = certs.add_subparsers(dest="certs_action", metavar="ACTION")

    init = actions.add_parser(
        "init",
        help="create a new network CA (ca.pem, ca.key)",
        description="Create the network's certificate authority in DIR: ca.pem (the CA certificate, to hand to "
        "every member) and ca.key (its private key, mode 0600, needed only to issue certificates). Refuses to "
        "replace an existing CA, since that would cut off every member it certified.",
    )
    init.add_argument("--dir", required=True, type=Path, help="certificate directory (created if missing)")
    init.add_argument("--force", action="store_true",
                      help="replace an existing CA (every old certificate stops working)")
    init.set_defaults(handler=_init)

    issue = actions.add_parser(
        "issue",
        help="issue a certificate and key for a node, client or model owner",
        description="Issue NAME.pem and NAME.key in DIR, signed by the CA there. The certificate names NAME "
        "(peers check nodes by this name) and carries the role: 'node' runs a daemon and joins committees, "
        "'client' runs inference, 'owner' publishes models. Give each address the member is reached at with --host.",
    )
    issue.add_argument("--dir", required=True, type=Path, help="certificate directory holding ca.pem and ca.key")
    issue.add_argument("--name", required=True, help="member name: letters, digits, '.', '_', '-' (at most 63)")
    issue.add_argument("--role", required=True, choices=["node", "client", "owner"], help="what the member may do")
    issue.add_argument("--host", action="append", metavar="H",
                       help="an IP address or DNS name the member serves on "
                       "(repeatable; default 127.0.0.1 and localhost)")
    issue.add_argument("--days", type=int, default=825, help="validity in days (default 825)")
    issue.add_argument("--force", action="store_true", help="replace an existing certificate and key of that name")
    issue.set_defaults(handler=_issue)

    show = actions.add_parser(
        "show",
        help="print a certificate's name, role, fingerprint and expiry",
        description="Print NAME.pem's name, role, SHA-256 fingerprint (what node records and logs refer to), "
        "validity and host names, and whether the CA in DIR accepts it now.",
    )
    show.add_argument("--dir", required=True, type=Path, help="certificate directory")
    show.add_argument("--name", required=True, help="member name")
    show.set_defaults(handler=_show)

    certs.set_defaults(handler=lambda _args: _usage(certs))
    return certs


def _usage(parser: argparse.ArgumentParser) -> int:
    """A bare `certs`: show what it can do, and fail (nothing was run)."""
    parser.print_help()
    return 2


def _error(message: object) -> int:
    """Print a one-line error on stderr; exit code 2."""
    print(f"secureinfer certs: error: {message}", file=sys.stderr)
    return 2


def _init(args: argparse.Namespace) -> int:
    """`certs init`: create the CA."""
    from secureinfer.nodes.certs import CertError, create_ca

    try:
        path = create_ca(args.dir, force=args.force)
    except CertError as exc:
        return _error(exc)
    print(f"created the network CA: {path} (give to every member) and {args.dir / 'ca.key'} (keep secret)")
    print(f"next: secureinfer certs issue --dir {args.dir} --name NAME --role node|client|owner")
    return 0


def _issue(args: argparse.Namespace) -> int:
    """`certs issue`: issue one member certificate."""
    from secureinfer.nodes.certs import CertError, issue

    hosts = tuple(args.host) if args.host else ("127.0.0.1", "localhost")
    try:
        path = issue(args.dir, args.name, args.role, hosts=hosts, days=args.days, force=args.force)
    except CertError as exc:
        return _error(exc)
    key = args.dir / f"{args.name}.key"
    print(f"issued {args.role} certificate {path} and key {key} (hosts: {', '.join(hosts)})")
    print(f"copy {path}, {key} and {args.dir / 'ca.pem'} to {args.name}'s machine; never copy ca.key")
    return 0


def _show(args: argparse.Namespace) -> int:
    """`certs show`: describe one certificate and say whether this directory's CA accepts it."""
    from secureinfer.nodes.certs import CertError, Identity, describe

    try:
        info = describe(args.dir, args.name)
    except CertError as exc:
        return _error(exc)
    try:
        Identity.load(args.dir, args.name)
        status = "valid (signed by this CA, in its validity window, key matches)"
    except CertError as exc:
        status = f"NOT usable: {exc}"
    print(f"name:        {info['name']}")
    print(f"role:        {info['role']}")
    print(f"fingerprint: {info['fingerprint']}")
    print(f"issuer:      {info['issuer']}")
    print(f"valid from:  {info['not_before']}")
    print(f"expires:     {info['not_after']}")
    print(f"hosts:       {info['hosts']}")
    print(f"status:      {status}")
    return 0 if status.startswith("valid") else 2
