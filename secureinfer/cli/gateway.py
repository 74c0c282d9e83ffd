"""`secureinfer gateway`: an OpenAI-compatible HTTP API and a live status page, at the client's side of a network."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from . import usage

DESCRIPTION = """\
Serve the OpenAI HTTP API (GET /v1/models, POST /v1/chat/completions, /v1/completions, /v1/embeddings) over a
secureinfer network, and a live status page of its nodes, committees and recent requests at /.

The gateway holds your client certificate and runs at your side: it sees your prompts and the answers in the clear
and secret-shares them itself, exactly as the Python SDK does. So it listens on 127.0.0.1 by default; on any other
address it warns, and an API key (--api-key-file) makes callers send `Authorization: Bearer KEY`.

Per request, the body may add "privacy": "secret" (default: a committee of three nodes on secret shares) or "public"
(an open model in the clear on one worker), and "strategy": "auto" (default: the selector plans it) or a strategy
object such as {"mode": "secure", "profile": "accurate"}.
"""

EPILOG = """\
examples:
  secureinfer gateway --certs demo/certs --name client --seed 127.0.0.1:7101
  curl http://127.0.0.1:8080/v1/models          # the hosted models, their modes and committees
  curl http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' -d @request.json
  python -c 'import openai; print(openai.OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="-").models.list())'
the gateway needs: pip install 'secureinfer[gateway]'
"""

API_KEY_ENV = "SECUREINFER_GATEWAY_API_KEY"


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the `gateway` command to the top-level subcommands; return its parser."""
    gateway = commands.add_parser("gateway", help="serve the OpenAI HTTP API and a status page over the network",
                                  description=DESCRIPTION, epilog=EPILOG,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    gateway.add_argument("--certs", required=True, type=Path, metavar="DIR",
                         help="directory with ca.pem and your identity")
    gateway.add_argument("--name", required=True, help="your client identity's name in DIR")
    gateway.add_argument("--seed", required=True, action="append", metavar="HOST:PORT",
                         help="a node of the network (repeat for more)")
    gateway.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                         help="where to serve HTTP (default 127.0.0.1:8080; port 0: any free port)")
    gateway.add_argument("--api-key-file", type=Path, metavar="FILE",
                         help=f"require this key as a bearer token (or set {API_KEY_ENV})")
    gateway.add_argument("--max-tokens", type=int, default=16, metavar="N",
                         help="new tokens for a request that names none (default 16)")
    gateway.add_argument("--max-concurrent", type=int, default=4, metavar="N",
                         help="requests run at once; more get 429 (default 4)")
    gateway.add_argument("--timeout", type=float, default=600.0, metavar="S",
                         help="deadline of each request on the nodes in seconds (default 600)")
    gateway.set_defaults(handler=_main)
    return gateway


def _main(args: argparse.Namespace) -> int:
    """Check the settings, warn about an exposed address, bind it, connect to the network, then serve."""
    try:
        from secureinfer.gateway import Backend, GatewayConfig, RunningGateway, exposure_warnings, parse_listen
        from secureinfer.gateway.config import ConfigError
        from secureinfer.gateway.server import bind
    except ImportError as exc:
        return usage.fail("gateway", f"{exc.name} is missing: pip install 'secureinfer[gateway]'")
    from secureinfer.client import ClientError
    from secureinfer.net.certs import CertError

    try:
        host, port = parse_listen(args.listen)
        config = GatewayConfig(host=host, port=port, api_key=_api_key(args.api_key_file),
                               default_max_tokens=args.max_tokens, max_concurrent=args.max_concurrent)
    except (ConfigError, OSError) as exc:
        return usage.fail("gateway", exc)
    for line in exposure_warnings(config):
        print(line, file=sys.stderr, flush=True)
    try:
        sock = bind(config.host, config.port)  # first: a taken address fails before the network is asked anything
    except OSError as exc:
        return usage.fail("gateway", f"cannot listen on {args.listen}: {exc.strerror or exc}")
    try:
        backend = Backend.connect(args.certs, args.name, args.seed, args.timeout, config.default_max_tokens)
    except (CertError, ClientError) as exc:
        sock.close()
        return usage.fail("gateway", exc)
    try:
        _serve(RunningGateway(backend, config, sock), args)
    finally:
        backend.close()
    return 0


def _serve(gateway: Any, args: argparse.Namespace) -> None:
    """Announce where the gateway serves, then serve until Ctrl-C or SIGTERM."""
    print(f"secureinfer gateway: the OpenAI API at {gateway.url}/v1 and the status page at {gateway.url}/ "
          f"(as {args.name}, through {', '.join(args.seed)}; Ctrl-C stops it)", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: None)  # uvicorn stops on SIGTERM and raises it again once done
    try:
        gateway.serve()
    except KeyboardInterrupt:  # uvicorn stopped on Ctrl-C and raised it again once done
        pass


def _api_key(path: Path | None) -> str | None:
    """The API key from `path` (its first line), else from the environment, else None."""
    if path is not None:
        return path.read_text(encoding="utf-8").strip()
    return os.environ.get(API_KEY_ENV) or None
