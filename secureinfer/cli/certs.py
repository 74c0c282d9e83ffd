"""The `secureinfer certs` subcommands: create the network CA, issue member certificates, show one, revoke one."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import usage

CERTS_DESCRIPTION = """\
Every connection in a secureinfer network is mutual TLS: both ends present a certificate issued by the network's
certificate authority (CA), and nothing else is accepted.

A certificate directory holds:
  ca.pem          the CA certificate; public: copy it to every node, client and model owner
  ca.key          the CA private key; secret: only whoever admits new members needs it (keep it offline)
  NAME.pem        a member's certificate: its name (CN), role (OU: node, client or owner), host names and, for
                  a node, its operator (O): who runs it; a committee takes nodes of three distinct operators
  NAME.key        that member's private key (mode 0600); it never leaves the member's machine
  crl.pem         the revocation list: serials the CA revoked, signed by it; public: copy it to every node
"""

CERTS_EPILOG = """\
examples:
  secureinfer certs init --dir certs
  secureinfer certs issue --dir certs --name node-a --role node --operator acme --host 10.0.0.5
  secureinfer certs issue --dir certs --name alice --role client
  secureinfer certs show --dir certs --name node-a
  secureinfer certs revoke --dir certs --name bob        # then copy certs/crl.pem to every node
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
        "'client' runs inference, 'owner' publishes models. Give each address the member is reached at with --host. "
        "A node needs --operator: the person or organisation that runs it, as the CA vouches for it. Committees "
        "take three nodes of three distinct operators, so give every node one operator runs the same operator "
        "name, and nodes run by different operators different names.",
    )
    issue.add_argument("--dir", required=True, type=Path, help="certificate directory holding ca.pem and ca.key")
    issue.add_argument("--name", required=True, help="member name: letters, digits, '.', '_', '-' (at most 63)")
    issue.add_argument("--role", required=True, choices=["node", "client", "owner"], help="what the member may do")
    issue.add_argument("--operator", metavar="OP",
                       help="who runs the node (required for --role node, refused otherwise): letters, digits, "
                       "'.', '_', '-' (at most 63)")
    issue.add_argument("--host", action="append", metavar="H",
                       help="an IP address or DNS name the member serves on "
                       "(repeatable; default 127.0.0.1 and localhost)")
    issue.add_argument("--days", type=int, default=825, help="validity in days (default 825)")
    issue.add_argument("--force", action="store_true", help="replace an existing certificate and key of that name")
    issue.set_defaults(handler=_issue)

    show = actions.add_parser(
        "show",
        help="print a certificate's name, role, operator, fingerprint and expiry",
        description="Print NAME.pem's name, role, operator (nodes), SHA-256 fingerprint (what node records and logs "
        "refer to), validity and host names, and whether the CA in DIR accepts it now.",
    )
    show.add_argument("--dir", required=True, type=Path, help="certificate directory")
    show.add_argument("--name", required=True, help="member name")
    show.set_defaults(handler=_show)

    revoke = actions.add_parser(
        "revoke",
        help="revoke certificates: add their serials to the CA-signed revocation list crl.pem",
        description="Add certificates to DIR/crl.pem, the network's revocation list (an X.509 CRL signed by the "
        "CA key in DIR). Copy crl.pem to every node: nodes re-read it within one gossip interval, then refuse "
        "every call made with a revoked certificate and drop the revoked node's membership records. To rotate a "
        "certificate, issue the member a new one (`certs issue --force` prints the old serial), restart the "
        "member, then revoke the old serial.",
        epilog="examples:\n  secureinfer certs revoke --dir certs --name bob\n"
        "  secureinfer certs revoke --dir certs --serial 3f2a9c...   # e.g. an old certificate after rotation\n"
        "  secureinfer certs revoke --dir certs --cert lost/node-b.pem",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    revoke.add_argument("--dir", required=True, type=Path, help="certificate directory holding ca.pem and ca.key")
    revoke.add_argument("--name", action="append", default=[], metavar="NAME",
                        help="revoke the certificate now in DIR/NAME.pem (repeatable)")
    revoke.add_argument("--serial", action="append", default=[], metavar="HEX",
                        help="revoke by serial number, as `certs show` prints it (repeatable)")
    revoke.add_argument("--cert", action="append", default=[], type=Path, metavar="FILE",
                        help="revoke the certificate in this PEM file (repeatable)")
    revoke.add_argument("--days", type=int, default=365,
                        help="when the list says it is next updated, in days (default 365); nodes warn after it")
    revoke.set_defaults(handler=_revoke)

    usage.help_when_bare(certs)
    return certs


def _init(args: argparse.Namespace) -> int:
    """`certs init`: create the CA."""
    from secureinfer.net.certs import CertError, create_ca

    from secureinfer.nodes.revocation import CRL_FILE, revoke

    try:
        path = create_ca(args.dir, force=args.force)
        (args.dir / CRL_FILE).unlink(missing_ok=True)  # an old CA's list (--force) would not verify
        revoke(args.dir, [])
    except CertError as exc:
        return usage.fail("certs", f"error: {exc}")
    print(f"created the network CA: {path} (give to every member) and {args.dir / 'ca.key'} (keep secret), "
          f"and an empty revocation list {args.dir / CRL_FILE} (give to every node)")
    print(f"next: secureinfer certs issue --dir {args.dir} --name NAME --role node --operator OPERATOR "
          "(or --role client|owner)")
    return 0


def _issue(args: argparse.Namespace) -> int:
    """`certs issue`: issue one member certificate."""
    from secureinfer.net.certs import CertError, issue

    from secureinfer.nodes.revocation import certificate_serial, format_serial

    hosts = tuple(args.host) if args.host else ("127.0.0.1", "localhost")
    old = args.dir / f"{args.name}.pem"
    try:
        old_serial = certificate_serial(old.read_bytes()) if args.force and old.is_file() else None
    except CertError:
        old_serial = None
    try:
        path = issue(args.dir, args.name, args.role, hosts=hosts, days=args.days, force=args.force,
                     operator=args.operator)
    except CertError as exc:
        return usage.fail("certs", f"error: {exc}")
    key = args.dir / f"{args.name}.key"
    run_by = f"operator: {args.operator}; " if args.operator else ""
    print(f"issued {args.role} certificate {path} and key {key} ({run_by}hosts: {', '.join(hosts)})")
    print(f"copy {path}, {key} and {args.dir / 'ca.pem'} to {args.name}'s machine; never copy ca.key")
    if old_serial is not None:
        print(f"replaced certificate serial {format_serial(old_serial)}; once {args.name} runs the new one, revoke "
              f"the old: secureinfer certs revoke --dir {args.dir} --serial {format_serial(old_serial)}")
    return 0


def _show(args: argparse.Namespace) -> int:
    """`certs show`: describe one certificate and say whether this directory's CA accepts it."""
    from secureinfer.net.certs import CertError, Identity, describe
    from secureinfer.nodes.revocation import CRL_FILE, RevocationWatch, certificate_serial, format_serial

    try:
        info = describe(args.dir, args.name)
        cert_pem = (args.dir / f"{args.name}.pem").read_bytes()
        serial = format_serial(certificate_serial(cert_pem))
    except CertError as exc:
        return usage.fail("certs", f"error: {exc}")
    try:
        identity = Identity.load(args.dir, args.name)
        revoked = RevocationWatch(args.dir / CRL_FILE, identity.ca_pem, required=False).reason(cert_pem)
        status = f"REVOKED: {revoked}" if revoked else "valid (signed by this CA, in its validity window, key matches)"
    except CertError as exc:
        status = f"NOT usable: {exc}"
    print(f"name:        {info['name']}")
    print(f"role:        {info['role']}")
    if info["role"] == "node":
        print(f"operator:    {info['operator'] or '(none: re-issue this certificate with --operator)'}")
    print(f"serial:      {serial}")
    print(f"fingerprint: {info['fingerprint']}")
    print(f"issuer:      {info['issuer']}")
    print(f"valid from:  {info['not_before']}")
    print(f"expires:     {info['not_after']}")
    print(f"hosts:       {info['hosts']}")
    print(f"status:      {status}")
    return 0 if status.startswith("valid") else 2


def _revoke(args: argparse.Namespace) -> int:
    """`certs revoke`: add certificates to the CA-signed revocation list."""
    from secureinfer.net.certs import CertError
    from secureinfer.nodes.revocation import certificate_serial, format_serial, parse_serial, revoke

    if not (args.name or args.serial or args.cert):
        return usage.fail("certs", "error: name what to revoke: --name NAME, --serial HEX or --cert FILE")
    try:
        serials = [parse_serial(text) for text in args.serial]
        for path in [args.dir / f"{name}.pem" for name in args.name] + list(args.cert):
            try:
                serials.append(certificate_serial(path.read_bytes()))
            except OSError as exc:
                raise CertError(f"cannot read certificate {path}: {exc.strerror}") from None
        path, revoked = revoke(args.dir, serials, days=args.days)
    except CertError as exc:
        return usage.fail("certs", f"error: {exc}")
    print(f"revoked serial(s) {', '.join(format_serial(s) for s in serials)}: {path} is revocation list "
          f"#{revoked.number}, {len(revoked.serials)} certificate(s) revoked in all")
    print(f"next: copy {path} to every node (their revocation_list, default crl.pem beside ca.pem); they re-read it "
          "within one gossip interval")
    return 0
