"""Engine messages on the wire: a payload (bytes or a tensor) split into `Frame` chunks, and put back together.

No pickle: a tensor travels as its raw little-endian bytes with a dtype name from `DTYPES` and a shape; the
receiver checks the first chunk's declared size against its limit (a node: its session budget) and that the sizes
agree before it keeps any data, holds no more than the chunks that actually arrived, and joins them once.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from secureinfer.mpc.comm import Message
from secureinfer.v1 import node_pb2

CHUNK_BYTES = 1 << 20  # 1 MiB: four chunks fit gRPC's default 4 MiB message cap with room for the envelope
DEFAULT_MAX_PAYLOAD = 4 << 30

DTYPES: dict[str, torch.dtype] = {
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "uint8": torch.uint8,
    "bool": torch.bool,
    "float32": torch.float32,
    "float64": torch.float64,
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}
_MAX_DIMS = 8


class FrameError(ValueError):
    """A frame sequence that does not describe a valid payload (bad dtype, sizes that disagree, too large)."""


def tensor_bytes(t: torch.Tensor) -> bytes:
    """The raw bytes of a tensor (CPU, contiguous); a bool tensor as one byte per element."""
    t = t.detach().to("cpu").contiguous()
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    return t.numpy().tobytes()


def encode(payload: torch.Tensor | bytes, tag: str, clock: int, chunk_bytes: int = CHUNK_BYTES
           ) -> Iterator[node_pb2.Frame]:
    """The frames of one message; an empty payload still gives one (last) frame."""
    if isinstance(payload, torch.Tensor):
        if payload.dtype not in _NAMES:
            raise FrameError(f"dtype {payload.dtype} cannot travel; allowed: {', '.join(DTYPES)}")
        data = tensor_bytes(payload)
        head = dict(kind=node_pb2.PAYLOAD_KIND_TENSOR, dtype=_NAMES[payload.dtype], shape=list(payload.shape))
    elif isinstance(payload, (bytes, bytearray)):
        data = bytes(payload)
        head = dict(kind=node_pb2.PAYLOAD_KIND_BYTES)
    else:
        raise FrameError(f"payload must be a tensor or bytes, got {type(payload).__name__}")
    view = memoryview(data)
    total = len(data)
    start = 0
    while True:
        end = min(start + chunk_bytes, total)
        yield node_pb2.Frame(tag=tag, clock=clock, total_bytes=total, data=bytes(view[start:end]),
                             last=end >= total, **head)
        if end >= total:
            return
        start = end


class Assembler:
    """Collects the frames of one link, in order, and returns each completed `Message`."""

    def __init__(self, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_payload_bytes = max_payload_bytes
        self._first: node_pb2.Frame | None = None
        self._parts: list[bytes] = []
        self._received = 0

    def add(self, frame: node_pb2.Frame) -> Message | None:
        """Take the next frame; returns the message it completes, or None while more chunks are due."""
        if self._first is None:
            self._check_head(frame)
            self._first = frame
        elif (frame.tag, frame.kind, frame.total_bytes) != (self._first.tag, self._first.kind, self._first.total_bytes):
            raise FrameError("a chunk does not belong to the payload in progress")
        if not frame.data and not frame.last:
            raise FrameError("an empty chunk must be the payload's last")
        self._received += len(frame.data)
        if self._received > self._first.total_bytes:
            raise FrameError("chunks exceed the announced payload size")
        self._parts.append(frame.data)
        if not frame.last:
            return None
        first, parts, received = self._first, self._parts, self._received
        self._first, self._parts, self._received = None, [], 0
        if received != first.total_bytes:
            raise FrameError(f"payload ended after {received} of {first.total_bytes} bytes")
        return Message(_payload(first, parts), int(first.clock), first.tag)

    def _check_head(self, frame: node_pb2.Frame) -> None:
        if frame.total_bytes > self.max_payload_bytes:
            raise FrameError(f"payload of {frame.total_bytes} bytes exceeds the limit of {self.max_payload_bytes}")
        if frame.kind == node_pb2.PAYLOAD_KIND_BYTES:
            return
        if frame.kind != node_pb2.PAYLOAD_KIND_TENSOR:
            raise FrameError(f"unknown payload kind {frame.kind}")
        if frame.dtype not in DTYPES:
            raise FrameError(f"dtype {frame.dtype!r} is not allowed; allowed: {', '.join(DTYPES)}")
        if len(frame.shape) > _MAX_DIMS or any(d < 0 for d in frame.shape):
            raise FrameError(f"bad tensor shape {list(frame.shape)}")
        itemsize = torch.empty((), dtype=DTYPES[frame.dtype]).element_size()
        if int(np.prod(frame.shape, dtype=np.float64)) * itemsize != frame.total_bytes:
            raise FrameError(f"shape {list(frame.shape)} of {frame.dtype} does not match {frame.total_bytes} bytes")


def _payload(first: node_pb2.Frame, parts: list[bytes]) -> torch.Tensor | bytes:
    """The payload the chunks `parts` carry: joined once, a tensor over the joined buffer (no further copy)."""
    if first.kind == node_pb2.PAYLOAD_KIND_BYTES:
        return b"".join(parts)
    dtype = DTYPES[first.dtype]
    raw = torch.uint8 if dtype == torch.bool else dtype
    data = bytearray().join(parts)
    flat = torch.frombuffer(data, dtype=raw) if data else torch.empty(0, dtype=raw)
    return flat.reshape(tuple(first.shape)).to(dtype)
