"""The gateway's settings: where it listens, who may call it, and the defaults it gives requests that leave them out.

It holds a client certificate and sees every prompt and answer in the clear, so it listens on loopback unless told
otherwise, and says so loudly when it is (`exposure_warnings`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class ConfigError(ValueError):
    """A gateway setting that is malformed or out of range."""


@dataclass(frozen=True)
class GatewayConfig:
    """How the gateway serves: its address, an optional bearer token, and the defaults and limits of requests."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0: any free port (the server says which)
    api_key: str | None = None  # callers must send `Authorization: Bearer <api_key>`; None: no check
    default_max_tokens: int = 16  # new tokens when a request names none (secure generation is slow)
    max_concurrent: int = 4  # requests running at once; more are refused with 429
    recent_requests: int = 200  # how many finished requests the status page keeps
    refresh_s: float = 2.0  # how often the status page reloads its data

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(f"host must be a host name or address, got {self.host!r}")
        if not isinstance(self.port, int) or isinstance(self.port, bool) or not 0 <= self.port < 65536:
            raise ConfigError(f"port must be in 0..65535, got {self.port!r}")
        if self.api_key is not None and (not isinstance(self.api_key, str) or len(self.api_key) < 8
                                         or any(c.isspace() for c in self.api_key)):
            raise ConfigError("api_key must be at least 8 characters without spaces")
        for name in ("default_max_tokens", "max_concurrent", "recent_requests"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.refresh_s, (int, float)) or not 0.2 <= self.refresh_s <= 3600:
            raise ConfigError(f"refresh_s must be in [0.2, 3600] seconds, got {self.refresh_s!r}")

    @property
    def loopback(self) -> bool:
        """Whether only this machine can reach the gateway."""
        return is_loopback(self.host)

    @property
    def base_url(self) -> str:
        """http://host:port as a browser or HTTP client writes it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback name or address (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (an IPv6 host in brackets: `[::1]:8080`) as (host, port); ConfigError for anything else."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--listen must be HOST:PORT (e.g. 127.0.0.1:8080 or [::1]:8080), got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"an IPv6 host goes in brackets: [{host}]:{port}")
    number = int(port)
    if not 0 <= number < 65536:
        raise ConfigError(f"port must be in 0..65535, got {number}")
    return host, number


def exposure_warnings(config: GatewayConfig) -> list[str]:
    """What to shout before serving beyond loopback: the gateway sees prompts in the clear, and without a token
    anyone who reaches it speaks with this gateway's certificate."""
    if config.loopback:
        return []
    lines = [f"WARNING: the gateway listens on {config.host}, which other machines can reach. It sees every prompt "
             f"and every answer in the clear (the secret sharing starts here), so only expose it on a network you "
             f"trust, behind TLS."]
    if config.api_key is None:
        lines.append("WARNING: no API key is set: anyone who reaches this address can run requests with your client "
                     "certificate. Set one with --api-key-file (callers send `Authorization: Bearer KEY`).")
    return lines
