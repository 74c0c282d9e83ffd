"""Structured fuzzing of every gRPC method of a node process: hypothesis builds well-typed protobuf messages with
hostile values (huge numbers, NaN and infinite doubles, empty and long strings, frames whose dtype, shape and sizes
disagree), streams in any order (frames before the open, duplicate opens, streams cut off mid-way, unknown session
ids). Every status must be one the method documents; after each batch the node is alive, SERVING, idle, and answers
a good request. The long variant (SECUREINFER_LONG_TESTS=1) runs many more examples and prints its figures.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secureinfer.v1 import node_pb2

from .fuzzutil import Target, running_target
from .netutil import LoopThread, Pki, session_id

SHORT_EXAMPLES, LONG_EXAMPLES = 8, 400
U32, U64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)
I64 = st.one_of(st.integers(-2**63, 2**63 - 1), st.sampled_from([0, 1, -1, 2**63 - 1, -2**63]))
DOUBLES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e308, -1e308]))
TEXT = st.one_of(st.text(max_size=40), st.sampled_from(["", "tiny", "all", "accurate", "x" * 5000]))
ENUMS = st.one_of(st.integers(0, 3), st.integers(-2**31, 2**31 - 1))


@pytest.fixture(scope="module")
def target(pki: Pki, loop: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with running_target(pki, loop, tmp_path_factory.mktemp("fuzz-structured")) as running:
        yield running


def frames() -> st.SearchStrategy[node_pb2.Frame]:
    """Frames whose kind, dtype, shape, sizes and data may disagree in every way."""
    return st.builds(node_pb2.Frame, tag=TEXT, clock=U64, kind=ENUMS,
                     dtype=st.one_of(st.sampled_from(["int64", "float64", "bool", "uint8", "complex64", ""]), TEXT),
                     shape=st.lists(I64, max_size=10), total_bytes=st.one_of(U64, st.integers(0, 64)),
                     data=st.binary(max_size=128), last=st.booleans())


def opens(target: Target) -> st.SearchStrategy[node_pb2.OpenSession]:
    """Open requests: real committees and models mixed with random ones, every field possibly hostile."""
    committees = st.one_of(st.just(target.committee(False)), st.just(target.committee(True)),
                           st.builds(node_pb2.Committee, committee_id=TEXT, node_ids=st.lists(TEXT, max_size=4),
                                     addresses=st.lists(TEXT, max_size=4)))
    return st.builds(node_pb2.OpenSession,
                     session_id=st.one_of(st.builds(session_id), TEXT, st.just("a" * 16)),
                     task=ENUMS, privacy=ENUMS, model_id=st.one_of(st.just("olivia/tiny"), TEXT), committee=committees,
                     party_index=st.one_of(st.integers(0, 3), U32), output=st.one_of(st.sampled_from(["all", "last"]),
                                                                                       TEXT),
                     profile=st.one_of(st.just(""), TEXT), model_config_json=st.one_of(st.just("{}"), TEXT),
                     fractional_bits=st.one_of(st.just(0), U32), strategy_json=st.one_of(st.just(""), TEXT),
                     public_weights=st.booleans())


def run_batch(target: Target, method: str, messages: st.SearchStrategy, examples: int, stream: bool = False) -> None:
    """`examples` calls of `method`, each a list of messages (one for unary methods), statuses checked as they come."""

    @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(batch=st.lists(messages, min_size=1, max_size=5 if stream else 1), half_close=st.booleans())
    def one(batch: list, half_close: bool) -> None:
        data = [m.SerializeToString() for m in batch]
        code = target.run(target.call(method, data, half_close=half_close or not stream))
        assert target.allowed(method, code), (method, code, target.details.get((method, code.name)), batch[:2])

    one()


def strategies(target: Target) -> dict[str, tuple[st.SearchStrategy, bool]]:
    """Per method: the messages to send and whether it is a stream of them."""
    client = st.one_of(st.builds(node_pb2.ClientMessage, open=opens(target)),
                       st.builds(node_pb2.ClientMessage, frame=frames()), st.just(node_pb2.ClientMessage()))
    hello = st.builds(node_pb2.LinkHello, session_id=st.one_of(st.builds(session_id), TEXT),
                      from_party=st.one_of(st.integers(0, 3), U32), to_party=st.one_of(st.integers(0, 3), U32))
    peer = st.one_of(st.builds(node_pb2.PeerMessage, hello=hello), st.builds(node_pb2.PeerMessage, frame=frames()),
                     st.just(node_pb2.PeerMessage()))
    capability = st.builds(node_pb2.Capability, device=TEXT, memory_bytes=U64, matmul_gflops=DOUBLES, cpu_count=U32)
    record = st.builds(node_pb2.NodeRecord, node_id=st.one_of(st.sampled_from(["n1", "n2", "n0", "n9"]), TEXT),
                       address=TEXT, roles=st.lists(TEXT, max_size=3), capability=capability, healthy=st.booleans(),
                       heartbeat=U64, issued_at=DOUBLES, ttl_s=DOUBLES, certificate_pem=st.binary(max_size=64),
                       signature=st.binary(max_size=64))
    perf = st.builds(node_pb2.PerfRecord, key=st.one_of(st.from_regex(r"[A-Za-z0-9._:-]{1,20}", fullmatch=True), TEXT),
                     timestamp=DOUBLES, model=TEXT, arch=st.sampled_from(["gpt2", "bert", "llama", "?"]),
                     n_params=I64, seq_len=I64, batch=I64, gen_tokens=I64, task=st.sampled_from(["embed", "x"]),
                     device=TEXT, cpu_count=I64, matmul_gflops=DOUBLES, memory_bytes=I64, latency_s=DOUBLES,
                     mode=st.sampled_from(["secure", "plaintext", ""]), strategy_json=TEXT,
                     status=st.sampled_from(["ok", "error", ""]), total_s=DOUBLES, min_cosine=DOUBLES, repeat=I64)
    keys = st.lists(st.one_of(st.from_regex(r"[A-Za-z0-9]{1,12}", fullmatch=True), TEXT), max_size=300)
    return {
        "Inference.Session": (client, True),
        "Peer.Link": (peer, True),
        "Inference.Cancel": (st.builds(node_pb2.CancelRequest, session_id=st.one_of(st.builds(session_id), TEXT)),
                             False),
        "Inference.ListModels": (st.just(node_pb2.ListModelsRequest()), False),
        "Membership.Gossip": (st.builds(node_pb2.GossipRequest, records=st.lists(record, max_size=4)), False),
        "Membership.Status": (st.just(node_pb2.StatusRequest()), False),
        "Records.Push": (st.builds(node_pb2.PushRecordsRequest,
                                   records=st.one_of(st.lists(perf, max_size=3), st.lists(perf, min_size=257,
                                                                                          max_size=260))), False),
        "Records.Pull": (st.builds(node_pb2.PullRecordsRequest, cursor=U64, limit=U32, keys_only=st.booleans()),
                         False),
        "Records.Fetch": (st.builds(node_pb2.FetchRecordsRequest, keys=keys), False),
    }


METHOD_NAMES = ("Inference.Session", "Peer.Link", "Inference.Cancel", "Inference.ListModels", "Membership.Gossip",
                "Membership.Status", "Records.Push", "Records.Pull", "Records.Fetch")


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_structured(target: Target, method: str) -> None:
    messages, stream = strategies(target)[method]
    run_batch(target, method, messages, SHORT_EXAMPLES, stream)
    target.check()
    assert not target.bad_statuses(), target.bad_statuses()


def test_health_service_names(target: Target) -> None:
    """The health service: any service name is OK (known) or NOT_FOUND (unknown), never an error of the node."""
    from grpc_health.v1 import health_pb2

    run_batch(target, "Health.Check", st.builds(health_pb2.HealthCheckRequest, service=TEXT), SHORT_EXAMPLES)
    target.check(secure=True)


@pytest.mark.long
def test_long_structured_fuzz(target: Target) -> None:
    """Long variant: LONG_EXAMPLES per method; prints calls, statuses and RSS for the report."""
    before = target.node.rss_bytes()
    samples = []
    for round_ in range(3):
        for method in METHOD_NAMES:
            messages, stream = strategies(target)[method]
            run_batch(target, method, messages, LONG_EXAMPLES // 3, stream)
        target.check()
        samples.append(target.node.rss_bytes())
    print(f"\nstructured fuzz: {sum(target.statuses.values())} calls; statuses {dict(sorted(target.statuses.items()))};"
          f" RSS MiB before {before >> 20}, per round {[s >> 20 for s in samples]}; write races {target.write_races}")
    assert samples[-1] - samples[0] < 48 << 20
    assert not target.bad_statuses(), target.bad_statuses()
    target.check(secure=True)
