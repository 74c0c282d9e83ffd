"""Frames: payloads cut into <= 1 MiB chunks and put back together, and every malformed sequence refused."""

from __future__ import annotations

import pytest
import torch

from secureinfer.net import frames
from secureinfer.net.frames import CHUNK_BYTES, DTYPES, Assembler, FrameError, encode
from secureinfer.v1 import node_pb2


def roundtrip(payload: torch.Tensor | bytes, **kwargs) -> tuple[list[node_pb2.Frame], object]:
    chunks = list(encode(payload, "step", 7, **kwargs))
    assembler = Assembler()
    out = [assembler.add(f) for f in chunks]
    assert all(o is None for o in out[:-1]), "a message completed before its last chunk"
    assert out[-1] is not None
    return chunks, out[-1]


def sample(dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) > 0.5
    if dtype.is_floating_point:
        return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype) * 1e3
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max, shape, generator=gen, dtype=torch.int64).to(dtype)


@pytest.mark.parametrize("name", sorted(DTYPES))
@pytest.mark.parametrize("shape", [(3, 5), (), (0,), (2, 0, 4), (1, 1, 1, 7)])
def test_tensor_roundtrip_every_dtype(name: str, shape: tuple[int, ...]) -> None:
    t = sample(DTYPES[name], shape)
    chunks, message = roundtrip(t)
    assert len(chunks) == 1 and chunks[0].last and chunks[0].dtype == name
    assert message.tag == "step" and message.clock == 7
    got = message.payload
    assert isinstance(got, torch.Tensor) and got.dtype == t.dtype and tuple(got.shape) == shape
    assert torch.equal(got, t)


def test_extreme_int64_values_survive() -> None:
    t = torch.tensor([-(2 ** 63), 2 ** 63 - 1, 0, -1], dtype=torch.int64)
    _, message = roundtrip(t)
    assert torch.equal(message.payload, t)


def test_noncontiguous_tensor_roundtrip() -> None:
    t = torch.arange(24, dtype=torch.int64).reshape(4, 6).t()
    assert not t.is_contiguous()
    _, message = roundtrip(t)
    assert torch.equal(message.payload, t)


@pytest.mark.parametrize("payload", [b"", b"x", bytes(range(256)) * 5])
def test_bytes_roundtrip(payload: bytes) -> None:
    chunks, message = roundtrip(payload)
    assert len(chunks) == 1 and chunks[0].kind == node_pb2.PAYLOAD_KIND_BYTES
    assert message.payload == payload and isinstance(message.payload, bytes)


def test_large_tensor_is_chunked_below_one_mib() -> None:
    t = torch.arange(3 * CHUNK_BYTES // 8 + 1001, dtype=torch.int64)  # 3 MiB + 8008 bytes
    chunks, message = roundtrip(t)
    assert len(chunks) == 4
    assert all(len(c.data) <= CHUNK_BYTES for c in chunks)
    assert [c.last for c in chunks] == [False, False, False, True]
    assert {c.total_bytes for c in chunks} == {t.numel() * 8}
    assert all(c.ByteSize() < 4 << 20 for c in chunks)
    assert torch.equal(message.payload, t)


def test_large_bytes_exact_multiple_of_chunk() -> None:
    payload = bytes(2 * CHUNK_BYTES)
    chunks, message = roundtrip(payload)
    assert len(chunks) == 2 and all(len(c.data) == CHUNK_BYTES for c in chunks)
    assert message.payload == payload


def test_assembler_handles_consecutive_messages() -> None:
    assembler = Assembler()
    big = torch.arange(CHUNK_BYTES // 4, dtype=torch.int64)
    seen = []
    for i, payload in enumerate([big, b"ctrl", torch.ones(2, 2, dtype=torch.bool)]):
        for f in encode(payload, f"t{i}", i):
            out = assembler.add(f)
            if out is not None:
                seen.append(out)
    assert [m.tag for m in seen] == ["t0", "t1", "t2"] and [m.clock for m in seen] == [0, 1, 2]
    assert torch.equal(seen[0].payload, big) and seen[1].payload == b"ctrl"


def test_encode_refuses_unsupported_payloads() -> None:
    with pytest.raises(FrameError):
        list(encode(torch.zeros(2, dtype=torch.complex64), "t", 0))
    with pytest.raises(FrameError):
        list(encode("text", "t", 0))  # type: ignore[arg-type]


def tensor_frame(dtype: str = "int64", shape: tuple[int, ...] = (2,), total: int = 16, data: bytes | None = None,
                 last: bool = True, tag: str = "t") -> node_pb2.Frame:
    return node_pb2.Frame(tag=tag, clock=0, kind=node_pb2.PAYLOAD_KIND_TENSOR, dtype=dtype, shape=list(shape),
                          total_bytes=total, data=bytes(total) if data is None else data, last=last)


def test_rejects_unknown_dtype() -> None:
    with pytest.raises(FrameError, match="dtype"):
        Assembler().add(tensor_frame(dtype="complex128"))


def test_rejects_unknown_kind() -> None:
    with pytest.raises(FrameError, match="kind"):
        Assembler().add(node_pb2.Frame(tag="t", kind=node_pb2.PAYLOAD_KIND_UNSPECIFIED, last=True))


@pytest.mark.parametrize("shape,total", [((3,), 16), ((2, 2), 16), ((), 0), ((0,), 8)])
def test_rejects_shape_size_mismatch(shape: tuple[int, ...], total: int) -> None:
    with pytest.raises(FrameError, match="does not match"):
        Assembler().add(tensor_frame(shape=shape, total=total))


def test_rejects_negative_dims() -> None:
    with pytest.raises(FrameError, match="shape"):
        Assembler().add(tensor_frame(shape=(-2, -1), total=16))


def test_rejects_too_many_dims() -> None:
    with pytest.raises(FrameError, match="shape"):
        Assembler().add(tensor_frame(shape=(1,) * 9 + (2,), total=16))


def test_rejects_payload_over_limit_before_allocating() -> None:
    assembler = Assembler(max_payload_bytes=1 << 20)
    # Announces 1 TiB; only the header is checked, so nothing near that size is ever allocated.
    huge = node_pb2.Frame(tag="t", kind=node_pb2.PAYLOAD_KIND_BYTES, total_bytes=1 << 40, data=b"abc", last=False)
    with pytest.raises(FrameError, match="exceeds the limit"):
        assembler.add(huge)
    big_tensor = tensor_frame(shape=(1 << 20, 1 << 10), total=(1 << 33), data=b"", last=False)
    with pytest.raises(FrameError, match="exceeds the limit"):
        Assembler(max_payload_bytes=1 << 30).add(big_tensor)


def test_rejects_chunk_from_another_payload() -> None:
    assembler = Assembler()
    first = list(encode(torch.arange(CHUNK_BYTES // 4, dtype=torch.int64), "a", 0))
    other = list(encode(torch.arange(CHUNK_BYTES // 4, dtype=torch.int64), "b", 0))
    assert assembler.add(first[0]) is None
    with pytest.raises(FrameError, match="does not belong"):
        assembler.add(other[1])


def test_rejects_chunk_with_other_total() -> None:
    assembler = Assembler()
    chunks = list(encode(bytes(CHUNK_BYTES + 10), "a", 0))
    assembler.add(chunks[0])
    bad = node_pb2.Frame()
    bad.CopyFrom(chunks[1])
    bad.total_bytes += 1
    with pytest.raises(FrameError, match="does not belong"):
        assembler.add(bad)


def test_rejects_too_many_bytes() -> None:
    assembler = Assembler()
    with pytest.raises(FrameError, match="exceed"):
        assembler.add(tensor_frame(total=16, data=bytes(24)))
    chunks = list(encode(bytes(CHUNK_BYTES + 10), "a", 0))
    assembler = Assembler()
    assembler.add(chunks[0])
    extra = node_pb2.Frame()
    extra.CopyFrom(chunks[1])
    extra.data = bytes(20)
    with pytest.raises(FrameError, match="exceed"):
        assembler.add(extra)


def test_rejects_payload_ending_short() -> None:
    with pytest.raises(FrameError, match="ended after"):
        Assembler().add(tensor_frame(total=16, data=bytes(8), last=True))


def test_rejects_empty_intermediate_chunks() -> None:
    """An endless run of empty, non-final chunks would grow the assembler without bound: refused."""
    assembler = Assembler()
    with pytest.raises(FrameError, match="empty"):
        assembler.add(node_pb2.Frame(tag="t", kind=node_pb2.PAYLOAD_KIND_BYTES, total_bytes=8, data=b"", last=False))


def test_assembler_limit_default_and_custom() -> None:
    assert Assembler().max_payload_bytes == frames.DEFAULT_MAX_PAYLOAD
    small = Assembler(max_payload_bytes=8)
    assert small.add(tensor_frame(shape=(1,), total=8)) is not None
    with pytest.raises(FrameError):
        small.add(tensor_frame(shape=(2,), total=16))
