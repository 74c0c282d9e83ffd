"""Leakage audit (a debugging and test facility, off unless asked for): record every message a party receives.

`Recorder` keeps, per receiver, every inbound message in order; `AuditingChannel` wraps any `Channel` so that what
it receives goes to a recorder (the in-process runtime takes `recorder=` and wraps each party's channel). `FrameLog`
writes inbound messages to a directory as raw payload bytes plus one JSON line per message (no pickle), so that a
node process can be audited from outside (nodes/ turns it on with the SECUREINFER_AUDIT_DIR environment variable);
`read_log` reads such a directory back. Nothing here judges the messages: the tests (tests/audit/) search them for
planted canaries and test them for uniformity and independence of the secret inputs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import torch

from .channel import Channel, Message, Payload

INDEX_FILE = "index.jsonl"
_DTYPES: dict[str, torch.dtype] = {str(d).removeprefix("torch."): d for d in (
    torch.int64, torch.int32, torch.int16, torch.uint8, torch.bool, torch.float32, torch.float64)}


class AuditError(ValueError):
    """An audit log that cannot be written or read back (unknown dtype, missing or malformed file)."""


@dataclass(frozen=True)
class Inbound:
    """One message as its receiver got it: who sent it, the protocol step's tag, and the payload (on CPU)."""

    receiver: str
    sender: str
    tag: str
    payload: Payload
    session: str = ""

    @property
    def raw(self) -> bytes:
        """The payload's bytes as they travel (a tensor's little-endian element bytes)."""
        return payload_raw(self.payload)


def payload_raw(payload: Payload) -> bytes:
    """The raw bytes of a payload: bytes as they are, a tensor's elements little-endian (bool as one byte)."""
    if isinstance(payload, torch.Tensor):
        t = payload.detach().to("cpu").contiguous()
        return (t.to(torch.uint8) if t.dtype == torch.bool else t).numpy().tobytes()
    return bytes(payload)


class Recorder:
    """A thread-safe log of inbound messages per receiver; `receivers` limits which receivers are kept."""

    def __init__(self, receivers: Collection[str] | None = None) -> None:
        self.receivers = None if receivers is None else frozenset(receivers)
        self._log: dict[str, list[Inbound]] = {}
        self._lock = threading.Lock()

    def record(self, receiver: str, sender: str, message: Message, session: str = "") -> None:
        """Keep a copy of `message` (tensors cloned to CPU, so later in-place changes do not alter the record)."""
        if self.receivers is not None and receiver not in self.receivers:
            return
        payload = message.payload
        payload = payload.detach().to("cpu").clone() if isinstance(payload, torch.Tensor) else bytes(payload)
        with self._lock:
            self._log.setdefault(receiver, []).append(Inbound(receiver, sender, message.tag, payload, session))

    def inbound(self, receiver: str) -> list[Inbound]:
        """Everything `receiver` got, in arrival order (a copy of the list)."""
        with self._lock:
            return list(self._log.get(receiver, []))

    @property
    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._log)

    def wrap(self, channel: Channel) -> "AuditingChannel":
        return AuditingChannel(channel, self)


class AuditingChannel(Channel):
    """A `Channel` that passes everything to `inner` and records what it receives; counts its own stats."""

    def __init__(self, inner: Channel, recorder: Recorder) -> None:
        super().__init__(inner.name)
        self.inner = inner
        self.recorder = recorder

    def _deliver(self, to: str, message: Message) -> None:
        self.inner._deliver(to, message)

    def _receive(self, frm: str) -> Message:
        message = self.inner._receive(frm)
        self.recorder.record(self.name, frm, message)
        return message


class FrameLog:
    """Writes inbound messages under `directory`: `{seq}.bin` (raw payload) and a line of `index.jsonl` each."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._seq = sum(1 for _ in self.directory.glob("*.bin"))

    def record(self, receiver: str, sender: str, message: Message, session: str = "") -> None:
        """Append one message (thread-safe)."""
        payload = message.payload
        entry: dict[str, object] = {"receiver": receiver, "sender": sender, "tag": message.tag, "session": session}
        if isinstance(payload, torch.Tensor):
            name = str(payload.dtype).removeprefix("torch.")
            if name not in _DTYPES:
                raise AuditError(f"cannot log a tensor of dtype {payload.dtype}")
            entry.update(kind="tensor", dtype=name, shape=list(payload.shape))
        else:
            entry.update(kind="bytes")
        data = payload_raw(payload)
        with self._lock:
            entry["file"] = f"{self._seq:08d}.bin"
            self._seq += 1
            (self.directory / str(entry["file"])).write_bytes(data)
            with open(self.directory / INDEX_FILE, "a", encoding="utf-8") as index:
                index.write(json.dumps(entry) + "\n")


def read_log(directory: Path) -> list[Inbound]:
    """The messages a `FrameLog` wrote under `directory`, in order (tensors rebuilt from their raw bytes)."""
    directory = Path(directory)
    try:
        lines = (directory / INDEX_FILE).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise AuditError(f"no audit log in {directory} ({INDEX_FILE} missing)") from None
    out = []
    for line in lines:
        entry = json.loads(line)
        data = (directory / entry["file"]).read_bytes()
        payload: Payload = data
        if entry["kind"] == "tensor":
            dtype = _DTYPES.get(entry["dtype"])
            if dtype is None:
                raise AuditError(f"unknown dtype {entry['dtype']!r} in {directory}")
            raw = torch.uint8 if dtype == torch.bool else dtype
            flat = torch.frombuffer(bytearray(data), dtype=raw) if data else torch.empty(0, dtype=raw)
            payload = flat.reshape(entry["shape"]).to(dtype)
        out.append(Inbound(entry["receiver"], entry["sender"], entry["tag"], payload, entry["session"]))
    return out
