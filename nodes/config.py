"""A node daemon's configuration: a frozen dataclass read from (and written back to) a TOML file.

The file has a `[node]` table (every NodeConfig field except `link`) and an optional `[link]` table (LinkSettings).
Relative paths in the file are resolved against the file's directory; optional settings left out mean None.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from secureinfer.mpc.comm import LinkModel

NODE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
ROLES: frozenset[str] = frozenset({"secure", "plaintext"})
LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEVICE_PATTERN = re.compile(r"cpu|cuda|cuda:\d+|auto")
# A full 1 MiB frame chunk plus its header must fit in one gRPC message.
MIN_MESSAGE_BYTES = 1024 * 1024 + 64 * 1024
MIN_SESSION_BYTES = 1 << 20  # a session budget below this could not hold an engine message of any real model
DEFAULT_CLIENT_RATE = 50.0  # sessions per second per client certificate, unless client_rate_per_s says otherwise
INBOX_BYTES = 64 << 20  # the most one link of a session holds unread (less with a smaller session_memory_bytes)


class ConfigError(ValueError):
    """A node configuration is malformed or out of range."""


# ------------------------------------------------------------------------------------------------ value checks

# Kinds of settings: how each is checked, converted from TOML and written back.
_STR, _INT, _FLOAT, _PATH, _STRS = "str", "int", "float", "path", "strs"


def _kind_name(kind: str) -> str:
    return {_STR: "a string", _INT: "an integer", _FLOAT: "a number", _PATH: "a path string",
            _STRS: "a list of strings"}[kind]


def _normalize(key: str, value: Any, kind: str, optional: bool) -> Any:
    """Check `value` has the setting's kind and return it in canonical form (float, Path, tuple)."""
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: required, expected {_kind_name(kind)}")
    if kind == _STR and isinstance(value, str):
        return value
    if kind == _INT and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == _FLOAT and isinstance(value, (int, float)) and not isinstance(value, bool):
        result = float(value)
        if not math.isfinite(result):
            raise ConfigError(f"{key}: must be finite, got {value!r}")
        return result
    if kind == _PATH and isinstance(value, (str, os.PathLike)):
        return Path(value)
    if kind == _STRS and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{key}: expected {_kind_name(kind)}, got {type(value).__name__} {value!r}")


def _check_port(key: str, port: int | None) -> None:
    if port is not None and not 0 <= port <= 65535:
        raise ConfigError(f"{key}: port must be in 0..65535, got {port}")


def _check_address(key: str, address: str) -> None:
    """Check `address` is host:port (IPv6 hosts in brackets) with a port in 1..65535."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"{key}: expected host:port with a port in 1..65535, got {address!r}")
    if host.startswith("[") != host.endswith("]") or (":" in host and not host.startswith("[")):
        raise ConfigError(f"{key}: IPv6 hosts go in brackets ([::1]:port), got {address!r}")


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


# ------------------------------------------------------------------------------------------------ link


@dataclass(frozen=True)
class LinkSettings:
    """Software-injected shaping of this node's outgoing links: a fixed delay and an optional bandwidth cap."""

    latency_s: float = 0.0
    bandwidth_bytes_per_s: float | None = None

    def __post_init__(self) -> None:
        _set(self, "latency_s", _normalize("link.latency_s", self.latency_s, _FLOAT, False))
        bandwidth = _normalize("link.bandwidth_bytes_per_s", self.bandwidth_bytes_per_s, _FLOAT, True)
        _set(self, "bandwidth_bytes_per_s", bandwidth)
        if self.latency_s < 0:
            raise ConfigError(f"link.latency_s: must be >= 0, got {self.latency_s}")
        if bandwidth is not None and bandwidth <= 0:
            raise ConfigError(f"link.bandwidth_bytes_per_s: must be > 0, got {bandwidth}")

    def model(self) -> LinkModel:
        """The engine's link model of these settings (what a node's links are shaped by)."""
        return LinkModel(self.latency_s, self.bandwidth_bytes_per_s)

    def delay_for(self, nbytes: int) -> float:
        """Seconds a message of `nbytes` bytes is held back on this link (latency plus serialization time)."""
        if nbytes < 0:
            raise ConfigError(f"message size must be >= 0, got {nbytes}")
        transfer = 0.0 if self.bandwidth_bytes_per_s is None else nbytes / self.bandwidth_bytes_per_s
        return self.latency_s + transfer


_LINK_KINDS: dict[str, tuple[str, bool]] = {"latency_s": (_FLOAT, False), "bandwidth_bytes_per_s": (_FLOAT, True)}

# ------------------------------------------------------------------------------------------------ node

# Every [node] setting: (kind, optional). Order is the file's order.
_NODE_KINDS: dict[str, tuple[str, bool]] = {
    "node_id": (_STR, False),
    "host": (_STR, False),
    "port": (_INT, False),
    "advertise": (_STR, True),
    "roles": (_STRS, False),
    "device": (_STR, False),
    "certs_dir": (_PATH, False),
    "revocation_list": (_PATH, True),
    "seeds": (_STRS, False),
    "data_dir": (_PATH, True),
    "perf_store": (_PATH, True),
    "metrics_port": (_INT, True),
    "gossip_interval_s": (_FLOAT, False),
    "record_ttl_s": (_FLOAT, False),
    "max_sessions": (_INT, False),
    "client_rate_per_s": (_FLOAT, True),
    "client_burst": (_INT, True),
    "client_max_sessions": (_INT, True),
    "session_max_rows": (_INT, False),
    "session_memory_bytes": (_INT, False),
    "max_model_bytes": (_INT, False),
    "session_timeout_s": (_FLOAT, False),
    "peer_wait_s": (_FLOAT, False),
    "batch_window_s": (_FLOAT, False),
    "batch_max_rows": (_INT, False),
    "max_message_bytes": (_INT, False),
    "log_level": (_STR, False),
    "port_file": (_PATH, True),
}


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """Everything one node daemon needs to start: identity, addresses, roles, device, certificates and limits."""

    node_id: str
    host: str = "127.0.0.1"
    port: int = 0  # 0: bind a free port
    advertise: str | None = None  # host:port others dial; None: host and the port actually bound
    roles: tuple[str, ...] = ("secure", "plaintext")
    device: str = "cpu"  # "cpu", "cuda", "cuda:N" or "auto" (see resolved_device)
    certs_dir: Path  # ca.pem, {node_id}.pem, {node_id}.key
    revocation_list: Path | None = None  # the CA-signed CRL; None: certs_dir/crl.pem if present (see revocation_path)
    seeds: tuple[str, ...] = ()  # host:port of seed peers
    data_dir: Path | None = None
    perf_store: Path | None = None  # the performance store (SQLite); None: data_dir/perf.sqlite, or in memory
    metrics_port: int | None = None  # None: no metrics endpoint; 0: bind a free port
    gossip_interval_s: float = 1.0
    record_ttl_s: float = 10.0
    max_sessions: int = 4
    client_rate_per_s: float | None = DEFAULT_CLIENT_RATE  # per client certificate: sessions per second (None: none)
    client_burst: int | None = None  # ... and how many may open at once (None: ceil(client_rate_per_s))
    client_max_sessions: int | None = None  # per client certificate: concurrent sessions (None: client_session_cap)
    session_max_rows: int = 64  # the most rows (sequences) one step of a session may carry
    session_memory_bytes: int = 1 << 30  # a session's budget: its largest message, a step's expanded token shares
    max_model_bytes: int = 8 << 30  # the most one hosted model's weights may take here (opening.model_bytes)
    session_timeout_s: float = 600.0
    peer_wait_s: float = 30.0  # how long a session waits for its lower-index parties to dial in (and vice versa)
    batch_window_s: float = 0.05  # batched secure requests: how long a group waits for partners after its first step
    batch_max_rows: int = 32  # batched secure requests: the most rows (sequences) one batched forward takes
    max_message_bytes: int = 4 * 1024 * 1024
    link: LinkSettings = field(default_factory=LinkSettings)
    log_level: str = "INFO"
    port_file: Path | None = None  # where the daemon writes the port it bound (for harnesses)

    def __post_init__(self) -> None:
        for name, (kind, optional) in _NODE_KINDS.items():
            _set(self, name, _normalize(name, getattr(self, name), kind, optional))
        if not isinstance(self.link, LinkSettings):
            raise ConfigError(f"link: expected LinkSettings, got {type(self.link).__name__}")
        if NODE_ID_PATTERN.fullmatch(self.node_id) is None:
            raise ConfigError(f"node_id: must match {NODE_ID_PATTERN.pattern}, got {self.node_id!r}")
        if not self.host:
            raise ConfigError("host: must not be empty")
        _check_port("port", self.port)
        _check_port("metrics_port", self.metrics_port)
        if self.advertise is not None:
            _check_address("advertise", self.advertise)
        for seed in self.seeds:
            _check_address("seeds", seed)
        if not self.roles:
            raise ConfigError(f"roles: need at least one of {sorted(ROLES)}")
        unknown_roles = set(self.roles) - ROLES
        if unknown_roles:
            raise ConfigError(f"roles: unknown {sorted(unknown_roles)}; allowed: {sorted(ROLES)}")
        if len(set(self.roles)) != len(self.roles):
            raise ConfigError(f"roles: duplicates in {list(self.roles)}")
        if DEVICE_PATTERN.fullmatch(self.device) is None:
            raise ConfigError(f"device: expected 'cpu', 'cuda', 'cuda:N' or 'auto', got {self.device!r}")
        for name in ("gossip_interval_s", "session_timeout_s", "peer_wait_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.record_ttl_s <= self.gossip_interval_s:
            raise ConfigError(
                f"record_ttl_s: must exceed gossip_interval_s ({self.gossip_interval_s}), got {self.record_ttl_s}"
            )
        if self.max_sessions < 1:
            raise ConfigError(f"max_sessions: must be >= 1, got {self.max_sessions}")
        _check_client_limits(self)
        _check_session_limits(self)
        if not 0.0 <= self.batch_window_s <= 10.0:
            raise ConfigError(f"batch_window_s: must be in [0, 10], got {self.batch_window_s}")
        if self.batch_max_rows < 1:
            raise ConfigError(f"batch_max_rows: must be >= 1, got {self.batch_max_rows}")
        if self.max_message_bytes < MIN_MESSAGE_BYTES:
            raise ConfigError(f"max_message_bytes: must be >= {MIN_MESSAGE_BYTES}, got {self.max_message_bytes}")
        level = self.log_level.upper()
        if level not in LOG_LEVELS:
            raise ConfigError(f"log_level: expected one of {list(LOG_LEVELS)}, got {self.log_level!r}")
        _set(self, "log_level", level)

    # --- derived values --------------------------------------------------------------------------------------------

    def resolved_device(self) -> str:
        """The torch device to use: `device` itself, or for "auto" "cuda" where a GPU is present and "cpu" otherwise."""
        if self.device != "auto":
            return self.device
        import torch  # only here: reading a config must not need torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def advertised_address(self, bound_port: int) -> str:
        """The address others dial: `advertise` if set, else host and the port actually bound."""
        if self.advertise is not None:
            return self.advertise
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{bound_port}"

    @property
    def client_session_cap(self) -> int | None:
        """Concurrent sessions one client certificate may hold here: `client_max_sessions`, else half of
        max_sessions rounded up, so that no one client holds every slot (None, no cap, only for max_sessions = 1)."""
        if self.client_max_sessions is not None:
            return self.client_max_sessions
        return None if self.max_sessions == 1 else (self.max_sessions + 1) // 2

    @property
    def inbox_bytes(self) -> int:
        """What one link of a session may hold unread before it stops reading (the remote then waits)."""
        return min(self.session_memory_bytes, INBOX_BYTES)

    def perf_store_path(self) -> Path | None:
        """Where the node keeps its performance records: `perf_store`, else perf.sqlite in `data_dir`; None (no
        data_dir either): in memory, lost when the node stops."""
        if self.perf_store is not None:
            return self.perf_store
        return None if self.data_dir is None else self.data_dir / "perf.sqlite"

    def revocation_path(self) -> tuple[Path, bool]:
        """The revocation list to load and whether it must exist: `revocation_list` (required), else crl.pem in
        certs_dir (optional: a network that has revoked nothing may have none)."""
        if self.revocation_list is not None:
            return self.revocation_list, True
        return self.certs_dir / "crl.pem", False

    @property
    def ca_path(self) -> Path:
        return self.certs_dir / "ca.pem"

    @property
    def cert_path(self) -> Path:
        return self.certs_dir / f"{self.node_id}.pem"

    @property
    def key_path(self) -> Path:
        return self.certs_dir / f"{self.node_id}.key"

    def check_files(self) -> None:
        """Raise ConfigError unless the CA certificate, node certificate and node key exist."""
        missing = [str(p) for p in (self.ca_path, self.cert_path, self.key_path) if not p.is_file()]
        if missing:
            raise ConfigError(f"certs_dir: missing {', '.join(missing)}")

    # --- reading and writing ---------------------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base_dir: Path) -> "NodeConfig":
        """Build a config from a parsed document ({"node": {...}, "link": {...}}); relative paths join `base_dir`."""
        _reject_unknown("top-level table", data, ("node", "link"))
        node = data.get("node")
        if not isinstance(node, Mapping):
            raise ConfigError("node: a [node] table is required")
        link = data.get("link", {})
        if not isinstance(link, Mapping):
            raise ConfigError("link: expected a table")
        _reject_unknown("[node] key", node, tuple(_NODE_KINDS))
        _reject_unknown("[link] key", link, tuple(_LINK_KINDS))
        values: dict[str, Any] = {}
        for key, value in node.items():
            kind, optional = _NODE_KINDS[key]
            value = _normalize(key, value, kind, optional)
            if kind == _PATH:
                value = _resolve(value, Path(base_dir))
            values[key] = value
        if "node_id" not in values:
            raise ConfigError("node_id: required")
        if "certs_dir" not in values:
            raise ConfigError("certs_dir: required")
        return cls(**values, link=LinkSettings(**link))

    @classmethod
    def from_file(cls, path: Path | str) -> "NodeConfig":
        """Read a TOML config file; relative paths in it are resolved against the file's directory."""
        path = Path(path).absolute()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        return cls.from_mapping(data, path.parent)

    def to_toml(self, relative_to: Path | None = None) -> str:
        """The config as TOML (None settings left out); paths under `relative_to` are written relative to it."""
        lines = ["[node]"]
        for name, (kind, _optional) in _NODE_KINDS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if kind == _PATH and relative_to is not None:
                value = _relative(value, Path(relative_to))
            lines.append(f"{name} = {_toml_value(value)}")
        lines.append("")
        lines.append("[link]")
        for item in fields(self.link):
            value = getattr(self.link, item.name)
            if value is not None:
                lines.append(f"{item.name} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


def _check_client_limits(config: NodeConfig) -> None:
    """Per-client admission limits: a rate > 0, a burst >= 1 only with a rate, a session cap that leaves other
    clients a slot (below max_sessions, unless that is 1)."""
    rate, burst, cap = config.client_rate_per_s, config.client_burst, config.client_max_sessions
    if rate is not None and rate <= 0:
        raise ConfigError(f"client_rate_per_s: must be > 0 (default {DEFAULT_CLIENT_RATE:g}), got {rate}")
    if burst is not None and rate is None:
        raise ConfigError("client_burst: only meaningful with client_rate_per_s; set both or neither")
    if burst is not None and burst < 1:
        raise ConfigError(f"client_burst: must be >= 1, got {burst}")
    highest = max(1, config.max_sessions - 1)
    if cap is not None and not 1 <= cap <= highest:
        raise ConfigError(f"client_max_sessions: must be in 1..{highest} (below max_sessions, {config.max_sessions}, "
                          f"so that no one client holds every session slot), got {cap}")


def _check_session_limits(config: NodeConfig) -> None:
    """A session's row cap >= 1, its memory budget >= MIN_SESSION_BYTES, a hosted model's size >= 1 byte."""
    if config.session_max_rows < 1:
        raise ConfigError(f"session_max_rows: must be >= 1, got {config.session_max_rows}")
    if config.session_memory_bytes < MIN_SESSION_BYTES:
        raise ConfigError(f"session_memory_bytes: must be >= {MIN_SESSION_BYTES}, got {config.session_memory_bytes}")
    if config.max_model_bytes < 1:
        raise ConfigError(f"max_model_bytes: must be >= 1, got {config.max_model_bytes}")


def _reject_unknown(what: str, data: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = [key for key in data if key not in allowed]
    if unknown:
        raise ConfigError(f"unknown {what} {unknown[0]!r}; allowed: {', '.join(allowed)}")


def _resolve(path: Path, base_dir: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else Path(os.path.normpath(base_dir.absolute() / path))


def _relative(path: Path, base_dir: Path) -> Path:
    try:
        return path.relative_to(base_dir)
    except ValueError:
        return path


def _toml_string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Path):
        return _toml_string(str(value))
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {type(value).__name__} {value!r} as TOML")
