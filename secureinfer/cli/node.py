"""`secureinfer node`: run a node daemon (`serve`) and probe one (`health`)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from . import usage

NODE_EXAMPLE = """\
example node.toml (paths are relative to the file):

  [node]
  node_id = "node-a"            # must equal the name in its certificate (secureinfer certs issue --role node)
  host = "0.0.0.0"
  port = 7001
  advertise = "10.0.0.5:7001"   # what other nodes and clients dial
  roles = ["secure", "plaintext"]
  device = "auto"               # cpu, cuda, cuda:N or auto
  certs_dir = "certs"           # ca.pem, node-a.pem, node-a.key
  seeds = ["10.0.0.6:7001"]     # any node already in the network; none for the first node
  revocation_list = "certs/crl.pem"  # the CA-signed revocation list (default: crl.pem in certs_dir, if there)
  data_dir = "data"             # keeps data/perf.sqlite (performance records; perf_store = FILE to move it) and
                                # the hosted models, encrypted with the key data/models.key (made on the first
                                # start, mode 0600): a restarted node serves them again without republishing
  metrics_port = 9101           # Prometheus text format at http://127.0.0.1:9101/metrics
  batch_window_s = 0.05         # SecureStrategy(batch_requests=True): how long a batch waits for partners
  batch_max_rows = 32           # ... and the most sequences one batched forward takes
  max_sessions = 4              # sessions this node runs at once
  client_rate_per_s = 50.0      # per client certificate: sessions per second (default 50) ...
  client_burst = 50             # ... with this many at once (default: the rate); over it: RESOURCE_EXHAUSTED
  client_max_sessions = 2       # per client certificate: concurrent sessions here, below max_sessions (default:
                                # half of it); other nodes are never limited
  session_max_rows = 64         # the most rows (sequences) one step of a session may carry
  session_memory_bytes = 1073741824  # one session's budget (1 GiB): its largest message, one step's token shares
                                # once expanded; each of its links holds at most 64 MiB of it unread
  max_model_bytes = 8589934592  # the most one hosted model's weights may take here (8 GiB; 16 bytes a parameter
                                # in a secure committee, 8 on a plaintext worker)

  [link]                        # optional software-injected link shaping (for experiments)
  latency_s = 0.0
"""


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the `node` command (serve, health) to the top-level subcommands; return its parser."""
    node = commands.add_parser("node", help="run a node daemon", description="Run a secureinfer node daemon.")
    node_cmds = node.add_subparsers(dest="node_command", metavar="WHAT")
    serve = node_cmds.add_parser(
        "serve", help="serve until SIGTERM/SIGINT",
        description="Start a node: load its certificate, measure its capability, join the network through its "
        "seeds and serve secure sessions (as one party of a committee) and/or plaintext requests, over mutual TLS.",
        epilog=NODE_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--config", required=True, metavar="FILE", help="the node's TOML configuration")
    serve.set_defaults(handler=_serve)
    health = node_cmds.add_parser(
        "health", help="exit 0 when the local node answers SERVING (container and Kubernetes probes)",
        description="Ask the node configured in FILE for its standard gRPC health status, over mutual TLS with the "
        "node's own certificate (so it works where plaintext probes cannot: every port of a node demands a client "
        "certificate of the network). Exit 0 for SERVING, 1 otherwise, 2 for a bad configuration.",
        epilog="examples:\n  secureinfer node health --config /etc/secureinfer/node-a.toml\n"
        "  secureinfer node health --config node-a.toml --address 10.0.0.5:7001 --timeout 5",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    health.add_argument("--config", required=True, metavar="FILE", help="the node's TOML configuration")
    health.add_argument("--address", metavar="HOST:PORT",
                        help="where to ask (default: this machine, at the configured port or the port_file's)")
    health.add_argument("--timeout", type=float, default=3.0, metavar="S", help="seconds to wait (default 3)")
    health.set_defaults(handler=_health)
    usage.help_when_bare(node)
    return node


def _serve(args: argparse.Namespace) -> int:
    """`node serve`: run the daemon configured in --config until SIGTERM/SIGINT."""
    from secureinfer.net.certs import CertError
    from secureinfer.nodes.capability import CapabilityError
    from secureinfer.nodes.config import ConfigError, NodeConfig
    from secureinfer.nodes.daemon import serve
    from secureinfer.perfstore import StoreError

    # A configuration mistake is one line and exit status 2; the daemon's StartupError (a setting it cannot use: a
    # port in use, a performance store that does not open, ...) is a ConfigError and names the setting.
    try:
        config = NodeConfig.from_file(Path(args.config))
        asyncio.run(serve(config))
    except (ConfigError, CertError, CapabilityError, StoreError, OSError) as exc:
        return usage.fail("node serve", exc)
    return 0


def _health(args: argparse.Namespace) -> int:
    """`node health`: ask the configured node for its gRPC health status over mutual TLS."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from secureinfer.net.certs import CertError, Identity
    from secureinfer.nodes.config import ConfigError, NodeConfig

    try:
        config = NodeConfig.from_file(Path(args.config))
        identity = Identity.load(config.certs_dir, config.node_id)
        address = args.address or local_address(config)
    except (ConfigError, CertError, OSError, ValueError) as exc:
        return usage.fail("node health", exc)
    options = identity.channel_options(config.node_id)
    with grpc.secure_channel(address, identity.channel_credentials(), options) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=args.timeout)
        except grpc.RpcError as exc:
            return usage.fail("node health", f"{config.node_id} at {address}: {exc.code().name}: {exc.details()}", 1)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{config.node_id} at {address}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def local_address(config) -> str:
    """Where a node configured by `config` is reached from its own machine (wildcard hosts become loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}.get(config.host, config.host)
    port = config.port
    if port == 0:
        if config.port_file is None:
            raise ValueError("port is 0 and there is no port_file: give --address HOST:PORT")
        port = int(config.port_file.read_text().strip())
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
