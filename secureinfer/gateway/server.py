"""Serving the gateway with uvicorn: in the foreground until a signal (`serve`, what `secureinfer gateway` runs), or
in a background thread (`RunningGateway`, for programs and tests that embed it).

    with RunningGateway(Backend.connect(certs, "alice", seeds, 600.0), GatewayConfig(port=0)) as gateway:
        openai.OpenAI(base_url=gateway.url + "/v1", api_key="none")      # port 0 above: any free port
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from .app import build_app
from .backend import Backend
from .config import GatewayConfig

SHUTDOWN_GRACE_S = 5.0
START_TIMEOUT_S = 30.0


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free one); OSError if the address is taken or invalid."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=128)


class RunningGateway:
    """A gateway over `backend` served by uvicorn on `sock` (None: bound here to the config's address, OSError if
    taken); `url` says where. The backend stays the caller's to close."""

    def __init__(self, backend: Backend, config: GatewayConfig, sock: socket.socket | None = None) -> None:
        import uvicorn  # the gateway extra; loaded only when serving

        self.app = build_app(backend, config)
        self.socket = sock if sock is not None else bind(config.host, config.port)
        self.port = self.socket.getsockname()[1]
        self.url = _url(config.host, self.port)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="off",
                                                    timeout_graceful_shutdown=int(SHUTDOWN_GRACE_S)))
        self._thread: threading.Thread | None = None

    def serve(self) -> None:
        """Serve here until `stop()` or, in the main thread, SIGINT or SIGTERM."""
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self.app.state.gateway.runner.close()
            self.socket.close()

    def start(self) -> "RunningGateway":
        """Serve in a background thread; return once it accepts connections."""
        self._thread = threading.Thread(target=self.serve, name="secureinfer-gateway-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self.server.started:
            raise RuntimeError("the gateway's HTTP server did not start")
        return self

    def stop(self) -> None:
        """Stop serving: running requests are stopped at their next token."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(SHUTDOWN_GRACE_S + 5)

    def __enter__(self) -> "RunningGateway":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host == "0.0.0.0" else "::1" if host == "::" else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
