"""Raw-bytes fuzzing of every gRPC method of a node process: arbitrary, truncated and bit-flipped serialized requests,
and messages just under and just over the 4 MiB cap. After every batch the node is alive, SERVING, frees its
sessions and answers a good request; every status is one the method documents (never UNKNOWN or INTERNAL); its RSS
stays bounded. The long variant (SECUREINFER_LONG_TESTS=1) runs many more examples and prints its figures.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secureinfer.v1 import node_pb2

from .fuzzutil import ALLOWED, CALL_TIMEOUT_S, METHODS, Target, running_target
from .netutil import LoopThread, Pki, session_id

Code = grpc.StatusCode
SHORT_EXAMPLES, LONG_EXAMPLES = 6, 300
CAP = 4 << 20  # the node's max_message_bytes (NodeConfig default)
RSS_LIMIT = 48 << 20  # growth allowed across the memory batches after warm-up


@pytest.fixture(scope="module")
def target(pki: Pki, loop: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with running_target(pki, loop, tmp_path_factory.mktemp("fuzz-raw")) as running:
        yield running


def seeds(target: Target) -> dict[str, list[bytes]]:
    """Well-formed requests per method: the starting points that mutations truncate and flip."""
    public = node_pb2.OpenSession(session_id=session_id(), task=node_pb2.TASK_DECODE, privacy=node_pb2.PRIVACY_PUBLIC,
                                  model_id="olivia/tiny", committee=target.committee(False), output="all")
    frame = node_pb2.Frame(tag="tokens", clock=1, kind=node_pb2.PAYLOAD_KIND_TENSOR, dtype="int64", shape=[1, 2],
                           total_bytes=16, data=bytes(16), last=True)
    hello = node_pb2.LinkHello(session_id=session_id(), from_party=0, to_party=1)
    record = node_pb2.PerfRecord(key="fuzz-1", timestamp=1.7e9, model="tiny", arch="gpt2", seq_len=4, batch=1,
                                 task="logits", device="cpu", mode="secure", status="ok", repeat=1)
    return {
        "Peer.Link": [node_pb2.PeerMessage(hello=hello).SerializeToString(),
                      node_pb2.PeerMessage(frame=frame).SerializeToString()],
        "Inference.Session": [node_pb2.ClientMessage(open=public).SerializeToString(),
                              node_pb2.ClientMessage(frame=frame).SerializeToString()],
        "Inference.Cancel": [node_pb2.CancelRequest(session_id=session_id()).SerializeToString()],
        "Inference.ListModels": [b""],
        "Membership.Gossip": [node_pb2.GossipRequest(records=[node_pb2.NodeRecord(node_id="n1", ttl_s=5.0)])
                              .SerializeToString()],
        "Membership.Status": [b""],
        "Records.Push": [node_pb2.PushRecordsRequest(records=[record]).SerializeToString()],
        "Records.Pull": [node_pb2.PullRecordsRequest(cursor=1, limit=10, keys_only=True).SerializeToString()],
        "Records.Fetch": [node_pb2.FetchRecordsRequest(keys=["fuzz-1", "x"]).SerializeToString()],
        "Health.Check": [b"\x0a\x00", b"\x0a\x05other"],
        "Health.Watch": [b"\x0a\x00"],
    }


@st.composite
def mutated(draw: st.DrawFn, base: list[bytes]) -> bytes:
    """One request: a seed truncated, bit-flipped, spliced with random bytes, or random bytes outright."""
    data = bytearray(draw(st.sampled_from(base)))
    how = draw(st.sampled_from(["random", "truncate", "flip", "splice", "repeat"]))
    if how == "random" or not data:
        return draw(st.binary(max_size=256))
    if how == "truncate":
        return bytes(data[:draw(st.integers(0, len(data) - 1))])
    if how == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if how == "splice":
        i = draw(st.integers(0, len(data)))
        return bytes(data[:i]) + draw(st.binary(min_size=1, max_size=32)) + bytes(data[i:])
    return bytes(data) * draw(st.integers(2, 4))


def fuzz_method(target: Target, method: str, examples: int) -> None:
    """Run `examples` raw calls of `method`, each status checked as it comes."""
    base = seeds(target)[method]
    stream_in = METHODS[method][1]

    @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(messages=st.lists(mutated(base), min_size=1, max_size=4 if stream_in else 1), half_close=st.booleans())
    def one(messages: list[bytes], half_close: bool) -> None:
        code = target.run(target.call(method, messages, half_close=half_close or not stream_in))
        assert target.allowed(method, code), (method, code, target.details[(method, code.name)], messages[:2])

    one()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_raw_bytes(target: Target, method: str) -> None:
    fuzz_method(target, method, SHORT_EXAMPLES)
    target.check()
    assert not target.bad_statuses(), target.bad_statuses()


def test_corrupt_bytes_are_invalid_argument(target: Target) -> None:
    """Bytes that are no protobuf message at all are the caller's error for every method, stream or not."""
    for method in sorted(METHODS):
        code = target.run(target.call(method, [b"\xff\xff\xff"]))
        assert code == Code.INVALID_ARGUMENT, (method, code)
    target.check()


def unknown_field(size: int) -> bytes:
    """A valid message of exactly `size` bytes (size >= 8): one length-delimited field number 1000 (unknown)."""
    key = bytes([0xC2, 0x3E])  # field 1000, wire type 2
    for header in range(1, 6):
        payload = size - len(key) - header
        if len(_varint(payload)) == header:
            return key + _varint(payload) + bytes(payload)
    raise ValueError(f"cannot make a message of {size} bytes")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_oversized_messages(target: Target, method: str) -> None:
    """Just over the cap: RESOURCE_EXHAUSTED; just under: parsed (unknown fields) and answered as documented.
    (The oversized call gets the full call bound even on Health.Watch: sending 4 MiB over TLS on a busy 2-core box
    took longer than the usual 0.5 s cut-off of a watch once, in CI.)"""
    under, over = unknown_field(CAP - 1024), unknown_field(CAP + 1024)
    code = target.run(target.call(method, [over], max_message_bytes=64 << 20, watch_timeout_s=CALL_TIMEOUT_S))
    assert code == Code.RESOURCE_EXHAUSTED, (method, code)
    code = target.run(target.call(method, [under], max_message_bytes=64 << 20))
    assert code in ALLOWED[method] and code != Code.RESOURCE_EXHAUSTED, (method, code)
    target.check()


def memory_batches(target: Target, batches: int, examples: int) -> list[int]:
    """RSS of n0 after a warm-up batch and after each of `batches` batches of every method's raw fuzzing."""
    samples = []
    for batch in range(batches + 1):
        for method in sorted(METHODS):
            fuzz_method(target, method, examples)
        target.check()
        samples.append(target.node.rss_bytes())
    return samples


def test_memory_stays_bounded(target: Target) -> None:
    samples = memory_batches(target, batches=3, examples=6)
    growth = max(samples[1:]) - samples[0]
    assert growth < RSS_LIMIT, [s >> 20 for s in samples]
    target.check(secure=True)


@pytest.mark.long
def test_long_raw_fuzz(target: Target) -> None:
    """Long variant: LONG_EXAMPLES examples per method per batch; prints examples, statuses and RSS for the report."""
    samples = memory_batches(target, batches=4, examples=LONG_EXAMPLES)
    growth = max(samples[2:]) - samples[1]  # after two warm-up batches
    print(f"\nraw fuzz: {sum(target.statuses.values())} calls; statuses {dict(sorted(target.statuses.items()))}; "
          f"RSS MiB per batch {[s >> 20 for s in samples]}; growth after warm-up {growth / 2**20:.1f} MiB")
    assert growth < RSS_LIMIT, [s >> 20 for s in samples]
    assert not target.bad_statuses(), target.bad_statuses()
    target.check(secure=True)
