"""Faults at the node API over real gRPC: each gets the right status code, and the daemon stays up afterwards.

Three daemons (n0, n1, n2) serve a tiny GPT-2 as a secret committee and n0 also as an open model. After every fault
`assert_alive` checks that each node still reports SERVING, has no session left over, and serves a good request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2

from secureinfer.client.connection import RequestFailed, SessionSpec
from secureinfer.models.config import ModelConfig
from secureinfer.mpc.comm import Channel
from secureinfer.mpc.models import serving
from secureinfer.mpc.party import EngineConfig
from secureinfer.net.membership import CommitteeView
from secureinfer.net.wire import config_to_json
from secureinfer.plaintext import reference as plaintext
from secureinfer.v1 import node_pb2, node_pb2_grpc

from .committee import PUBLIC, SECRET, Net, publish, running_committee, sealed
from .netutil import (Cluster, LoopThread, Outcome, Pki, finish, open_message, open_stream, session_id, tiny_config,
                      unary_outcome, wait_until)

PEER_WAIT_S = 2.0
Code = grpc.StatusCode


def logits(net: Net, view: CommitteeView, ids: torch.Tensor, cfg: ModelConfig | None = None,
           timeout_s: float = 60.0) -> torch.Tensor:
    """Decoder logits through the SDK's session plumbing (the client's cfg may be altered to send bad shapes)."""
    secret = view.privacy == node_pb2.PRIVACY_SECRET
    spec = SessionSpec(task=node_pb2.TASK_DECODE, privacy=view.privacy, model_id="olivia/tiny", output="all")
    io = serving.SECRET if secret else serving.PUBLIC
    use = cfg or net.cfg

    def program(channel: Channel) -> torch.Tensor:
        out, _ = serving.client_logits(channel, use, EngineConfig(), ids, (ids.shape[1],), io)
        return out

    return net.alice.run_session(view, spec, program, timeout_s=timeout_s)


@pytest.fixture(scope="module")
def net(pki: Pki, loop: LoopThread) -> Iterator[Net]:
    with running_committee(pki, loop, PEER_WAIT_S) as running:
        yield running


IDS = torch.tensor([[2, 5, 7, 3]])


def assert_alive(net: Net, nodes: tuple[str, ...] = SECRET) -> None:
    """Every node is SERVING, frees its sessions within a few seconds, and serves a good (public) request."""
    for node in nodes:
        assert net.run(net.cluster.health(node)) == health_pb2.HealthCheckResponse.SERVING, node
    net.run(net.cluster.wait_idle(nodes, within_s=5.0))
    out = logits(net, net.view(PUBLIC), IDS)
    assert torch.allclose(out, plaintext.gpt2_forward(net.cfg, net.params, IDS), atol=1e-9)


def session_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("session-")]


# ------------------------------------------------------------------------------------------------ open requests


async def refused_open(net: Net, node: str, first: node_pb2.ClientMessage | None, who: str = "alice") -> Outcome:
    """Send one message (or none) on a fresh Session stream, half-close, and read how it ends."""
    call = net.cluster.inference(who, node).Session(timeout=10)
    if first is not None:
        await call.write(first)
    await call.done_writing()
    return await finish(call)


def bad_open(net: Net, **fields: Any) -> node_pb2.ClientMessage:
    message = open_message(net.cluster, SECRET, 0, committee_id="c-secret")
    for name, value in fields.items():
        if name == "committee_nodes":
            message.open.committee.CopyFrom(open_message(net.cluster, value, 0, committee_id="c-secret").open.committee)
        else:
            setattr(message.open, name, value)
    return message


BAD_OPENS = {
    "short session id": dict(session_id="abc"),
    "session id with odd characters": dict(session_id="x" * 20 + "!"),
    "unknown task": dict(task=77),
    "unspecified task": dict(task=node_pb2.TASK_UNSPECIFIED),
    "unknown privacy": dict(privacy=5),
    "committee without this node": dict(committee_nodes=("n1", "n2", "n3")),
    "wrong party index": dict(party_index=1),
    "party index out of range": dict(party_index=7),
    "committee with duplicates": dict(committee_nodes=("n0", "n0", "n1")),
    "committee of two": dict(committee_nodes=("n0", "n1")),
    "other members under the hosting committee's id": dict(committee_nodes=("n0", "n1", "n3")),
    "hosting committee in another order": dict(committee_nodes=("n0", "n2", "n1")),
    "unknown profile": dict(profile="turbo"),
    "unknown output": dict(output="sideways"),
    "other fixed point": dict(fractional_bits=12),
    "bad model id": dict(model_id="../etc/passwd"),
}


@pytest.mark.parametrize("case", sorted(BAD_OPENS))
def test_bad_open_is_invalid_argument(net: Net, case: str) -> None:
    out = net.run(refused_open(net, "n0", bad_open(net, **BAD_OPENS[case])))
    assert out.code == Code.INVALID_ARGUMENT, (case, out)
    assert not any(m.HasField("accepted") for m in out.received), "refused only after accepting"
    assert_alive(net, ("n0",))


def test_stream_that_never_sends_its_open_is_dropped(net: Net) -> None:
    """A stream that stays silent does not hold a handler until its (long) deadline: it ends after the peer wait."""
    async def go() -> tuple[Outcome, Outcome]:
        session = net.cluster.inference("alice", "n0").Session(timeout=15)
        link = net.cluster.peer("n1", "n0").Link(timeout=15)
        return tuple(await asyncio.gather(finish(session), finish(link)))

    for out in net.run(go()):
        assert out.code == Code.DEADLINE_EXCEEDED, out
        assert PEER_WAIT_S - 0.2 <= out.seconds < PEER_WAIT_S + 2.0, out.seconds
    assert_alive(net, ("n0",))


def test_duplicate_session_id_is_already_exists(net: Net) -> None:
    async def go() -> tuple[Outcome, Outcome]:
        first = await open_stream(net.cluster, "alice", "n0", open_message(net.cluster, PUBLIC, 0, sid=sid,
                                                                           committee_id="c-public"))
        again = await refused_open(net, "n0", open_message(net.cluster, PUBLIC, 0, sid=sid, committee_id="c-public"))
        first.cancel()
        return again, await finish(first)

    sid = session_id()
    again, first = net.run(go())
    assert again.code == Code.ALREADY_EXISTS, again
    assert first.code == Code.CANCELLED
    assert_alive(net, ("n0",))


def test_first_message_not_open(net: Net) -> None:
    frame = node_pb2.Frame(tag="t", kind=node_pb2.PAYLOAD_KIND_BYTES, data=b"hi", total_bytes=2, last=True)
    out = net.run(refused_open(net, "n0", node_pb2.ClientMessage(frame=frame)))
    assert out.code == Code.INVALID_ARGUMENT and "open" in out.details
    out = net.run(refused_open(net, "n0", None))  # nothing at all, then the end of the stream
    assert out.code == Code.INVALID_ARGUMENT
    assert_alive(net, ("n0",))


@pytest.mark.parametrize("nodes", [SECRET, PUBLIC], ids=["secret", "public"])
def test_unknown_model_is_not_found_before_accepting(net: Net, nodes: tuple[str, ...]) -> None:
    message = open_message(net.cluster, nodes, 0, model_id="no-such-model", committee_id=net.view(nodes).committee_id)
    out = net.run(refused_open(net, "n0", message))
    assert out.code == Code.NOT_FOUND, out
    assert not any(m.HasField("accepted") for m in out.received)
    other_committee = open_message(net.cluster, nodes, 0, committee_id="c-elsewhere")  # hosted, but not by it
    assert net.run(refused_open(net, "n0", other_committee)).code == Code.NOT_FOUND
    assert_alive(net)


def test_unknown_model_through_the_sdk(net: Net) -> None:
    view = net.view(SECRET, committee_id="c-nothing-here")
    with pytest.raises(RequestFailed) as info:
        logits(net, view, IDS, timeout_s=10)
    assert info.value.code == Code.NOT_FOUND
    assert_alive(net)


# ------------------------------------------------------------------------------------------------ certificates


def test_client_cannot_publish(net: Net) -> None:
    message = open_message(net.cluster, PUBLIC, 0, task=node_pb2.TASK_PUBLISH, committee_id="c-x",
                           model_config_json=config_to_json(net.cfg))
    out = net.run(refused_open(net, "n0", message, who="alice"))
    assert out.code == Code.PERMISSION_DENIED, out
    assert_alive(net, ("n0",))


def test_another_owner_cannot_replace_a_published_model(net: Net) -> None:
    message = open_message(net.cluster, PUBLIC, 0, task=node_pb2.TASK_PUBLISH, committee_id="c-public",
                           model_config_json=config_to_json(net.cfg))
    out = net.run(refused_open(net, "n0", message, who="oscar"))
    assert out.code == Code.PERMISSION_DENIED, out
    assert "another owner" in out.details
    assert_alive(net, ("n0",))


def test_client_cannot_use_peer_or_gossip(net: Net) -> None:
    async def go() -> tuple[Outcome, Outcome]:
        call = net.cluster.peer("alice", "n1").Link(timeout=5)
        try:  # the node may refuse the link before the hello is written: its status arrives either way
            await call.write(node_pb2.PeerMessage(hello=node_pb2.LinkHello(session_id=session_id(), from_party=0,
                                                                           to_party=1)))
        except grpc.aio.AioRpcError:
            pass
        link = await finish(call)
        gossip = await unary_outcome(net.cluster.membership("alice", "n1").Gossip(node_pb2.GossipRequest(),
                                                                                   timeout=5))
        return link, gossip

    link, gossip = net.run(go())
    assert link.code == Code.PERMISSION_DENIED and gossip.code == Code.PERMISSION_DENIED
    assert_alive(net, ("n1",))


def test_certificate_from_another_ca_is_refused(net: Net, pki: Pki) -> None:
    async def go() -> list[Outcome]:
        outs = []
        for who in (pki.intruder("mallory"), pki.intruder("n0")):
            stub = net.cluster.membership(who, "n1")
            outs.append(await unary_outcome(stub.Status(node_pb2.StatusRequest(), timeout=5)))
        return outs

    for out in net.run(go()):
        assert out.code == Code.UNAVAILABLE, out
    assert_alive(net, ("n1",))


def test_missing_client_certificate_is_refused(net: Net, pki: Pki) -> None:
    async def go() -> Outcome:
        credentials = grpc.ssl_channel_credentials(root_certificates=pki.identity("alice").ca_pem)
        channel = grpc.aio.secure_channel(net.cluster.address("n1"), credentials,
                                          [("grpc.ssl_target_name_override", "n1")])
        try:
            stub = node_pb2_grpc.MembershipStub(channel)
            return await unary_outcome(stub.Status(node_pb2.StatusRequest(), timeout=5))
        finally:
            await channel.close()

    assert net.run(go()).code == Code.UNAVAILABLE
    assert_alive(net, ("n1",))


# ------------------------------------------------------------------------------------------------ peer links


def test_peer_link_checks(net: Net) -> None:
    """Impostors and misdirected links are refused while party 1's session waits for its real peers."""
    sid = session_id()

    async def go() -> dict[str, Outcome]:
        client = await open_stream(net.cluster, "alice", "n1",
                                   open_message(net.cluster, SECRET, 1, sid=sid, committee_id="c-secret"))
        outs = {}
        for name, who, hello in [
            ("outsider", "n3", node_pb2.LinkHello(session_id=sid, from_party=0, to_party=1)),
            ("wrong party", "n2", node_pb2.LinkHello(session_id=sid, from_party=0, to_party=1)),
            ("higher party dials", "n2", node_pb2.LinkHello(session_id=sid, from_party=2, to_party=1)),
            ("wrong target", "n0", node_pb2.LinkHello(session_id=sid, from_party=0, to_party=2)),
            ("out of range", "n0", node_pb2.LinkHello(session_id=sid, from_party=9, to_party=1)),
        ]:
            call = net.cluster.peer(who, "n1").Link(timeout=5)
            await call.write(node_pb2.PeerMessage(hello=hello))
            outs[name] = await finish(call)
        call = net.cluster.peer("n0", "n1").Link(timeout=5)  # a frame where the hello belongs
        await call.write(node_pb2.PeerMessage(frame=node_pb2.Frame(tag="t", last=True)))
        outs["no hello"] = await finish(call)
        right = node_pb2.PeerMessage(hello=node_pb2.LinkHello(session_id=sid, from_party=0, to_party=1))
        first = net.cluster.peer("n0", "n1").Link(timeout=5)  # the real party 0's node: attached
        await first.write(right)
        setup = await first.read()  # party 1 sends its key agreement message: the link is attached
        assert setup.HasField("frame") and setup.frame.tag == "setup", setup
        second = net.cluster.peer("n0", "n1").Link(timeout=5)
        await second.write(right)
        outs["second link"] = await finish(second)
        client.cancel()
        first.cancel()
        return outs

    outs = net.run(go())
    assert outs["outsider"].code == Code.PERMISSION_DENIED
    assert outs["wrong party"].code == Code.PERMISSION_DENIED
    for name in ("higher party dials", "wrong target", "out of range", "no hello", "second link"):
        assert outs[name].code == Code.INVALID_ARGUMENT, (name, outs[name])
    assert_alive(net)


def test_peer_link_to_a_publish_session_is_refused(net: Net) -> None:
    sid = session_id()

    async def go() -> Outcome:
        owner = await open_stream(net.cluster, "olivia", "n1", sealed(open_message(
            net.cluster, SECRET, 1, sid=sid, task=node_pb2.TASK_PUBLISH, committee_id="c-new",
            model_config_json=config_to_json(net.cfg)), net.cluster.pki.identity("olivia")))
        call = net.cluster.peer("n0", "n1").Link(timeout=5)
        await call.write(node_pb2.PeerMessage(hello=node_pb2.LinkHello(session_id=sid, from_party=0, to_party=1)))
        out = await finish(call)
        owner.cancel()
        return out

    out = net.run(go())
    assert out.code == Code.INVALID_ARGUMENT, out
    assert_alive(net)


def test_peer_link_for_a_session_that_never_opens(net: Net) -> None:
    async def go() -> Outcome:
        call = net.cluster.peer("n0", "n1").Link(timeout=10)
        await call.write(node_pb2.PeerMessage(hello=node_pb2.LinkHello(session_id=session_id(), from_party=0,
                                                                       to_party=1)))
        return await finish(call)

    out = net.run(go())
    assert out.code == Code.NOT_FOUND, out
    assert PEER_WAIT_S - 0.2 <= out.seconds < PEER_WAIT_S + 2.0, out.seconds
    assert_alive(net, ("n1",))


def test_peer_that_never_dials_in(net: Net) -> None:
    """Parties 1 and 2 open, party 0 never does: both fail within the peer wait with UNAVAILABLE, nothing leaks."""
    sid = session_id()

    async def go() -> list[Outcome]:
        calls = [await open_stream(net.cluster, "alice", n, open_message(net.cluster, SECRET, i, sid=sid,
                                                                          committee_id="c-secret"), timeout=30)
                 for i, n in ((1, "n1"), (2, "n2"))]
        start = time.monotonic()
        return list(await asyncio.gather(*(finish(c, start) for c in calls)))

    outs = net.run(go(), timeout=30)
    for out in outs:
        assert out.code == Code.UNAVAILABLE, out
        assert out.seconds < PEER_WAIT_S + 3.0, out.seconds
    # The first to give up names the missing party; the other may instead see that first one leave.
    assert any("P0" in out.details and "did not connect" in out.details for out in outs), outs
    wait_until(lambda: not any(sid[:8] in t for t in session_threads()), 5.0, "worker threads exiting")
    assert_alive(net)


# ------------------------------------------------------------------------------------------------ frames and sizes


def test_oversized_grpc_message_is_resource_exhausted(net: Net) -> None:
    async def go() -> Outcome:
        channel = net.cluster.channel("alice", "n0", max_message_bytes=64 << 20)
        call = node_pb2_grpc.InferenceStub(channel).Session(timeout=10)
        await call.write(open_message(net.cluster, PUBLIC, 0, committee_id="c-public"))
        reply = await call.read()
        assert reply.HasField("accepted")
        data = bytes(5 << 20)
        frame = node_pb2.Frame(tag="tokens", kind=node_pb2.PAYLOAD_KIND_BYTES, total_bytes=len(data), data=data,
                               last=True)
        await call.write(node_pb2.ClientMessage(frame=frame))
        return await finish(call)

    out = net.run(go())
    assert out.code == Code.RESOURCE_EXHAUSTED, out
    assert_alive(net, ("n0",))


def test_frame_size_disagreeing_with_shape_is_invalid_argument(net: Net) -> None:
    async def go() -> Outcome:
        call = await open_stream(net.cluster, "alice", "n0", open_message(net.cluster, PUBLIC, 0,
                                                                          committee_id="c-public"))
        frame = node_pb2.Frame(tag="ctrl", kind=node_pb2.PAYLOAD_KIND_TENSOR, dtype="int64", shape=[4, 4],
                               total_bytes=64, data=bytes(64), last=True)
        await call.write(node_pb2.ClientMessage(frame=frame))
        return await finish(call)

    for _ in range(3):  # the race between the link's failure and the worker's must not change the status
        out = net.run(go())
        assert out.code == Code.INVALID_ARGUMENT, out
    assert_alive(net, ("n0",))


def test_second_open_mid_session_is_invalid_argument(net: Net) -> None:
    async def go() -> Outcome:
        call = await open_stream(net.cluster, "alice", "n0", open_message(net.cluster, PUBLIC, 0,
                                                                          committee_id="c-public"))
        await call.write(open_message(net.cluster, PUBLIC, 0, committee_id="c-public"))
        return await finish(call)

    out = net.run(go())
    assert out.code == Code.INVALID_ARGUMENT, out
    assert_alive(net, ("n0",))


@pytest.mark.parametrize("change", ["vocabulary", "positions"])
def test_wrong_token_shapes_are_invalid_argument(net: Net, change: str) -> None:
    if change == "vocabulary":  # one-hot rows of the wrong width
        cfg, ids = dataclasses.replace(net.cfg, vocab_size=net.cfg.vocab_size + 3), IDS
    else:  # more positions than the model has
        cfg = dataclasses.replace(net.cfg, max_positions=net.cfg.max_positions + 4)
        ids = torch.randint(0, net.cfg.vocab_size, (1, net.cfg.max_positions + 2))
    with pytest.raises(RequestFailed) as info:
        logits(net, net.view(SECRET), ids, cfg=cfg, timeout_s=30)
    assert info.value.code == Code.INVALID_ARGUMENT, info.value
    if change == "vocabulary":  # a public session takes token ids: the wrong vocabulary shows as an id out of range
        ids = torch.tensor([[2, net.cfg.vocab_size + 1]])
    with pytest.raises(RequestFailed) as info:
        logits(net, net.view(PUBLIC), ids, cfg=cfg, timeout_s=30)
    assert info.value.code == Code.INVALID_ARGUMENT, info.value
    assert_alive(net)


@pytest.mark.parametrize("nodes", [SECRET, PUBLIC], ids=["secret", "public"])
def test_publishing_wrong_shapes_is_invalid_argument(net: Net, nodes: tuple[str, ...]) -> None:
    params = dict(net.params)
    params["transformer.wte.weight"] = torch.zeros(net.cfg.vocab_size + 1, net.cfg.hidden, dtype=torch.float64)
    with pytest.raises(RequestFailed) as info:
        publish(net.olivia, net.view(nodes, committee_id="c-bad-shape"), net.cfg, params)
    assert info.value.code == Code.INVALID_ARGUMENT, info.value
    assert_alive(net)


# ------------------------------------------------------------------------------------------------ time and cancellation


def open_all(net: Net, sid: str, timeout: float) -> Any:
    async def go() -> list[Any]:
        calls = []
        for i, node in enumerate(SECRET):
            calls.append(await open_stream(net.cluster, "alice", node, open_message(
                net.cluster, SECRET, i, sid=sid, committee_id="c-secret"), timeout=timeout))
        for call in calls:  # every party agreed its seeds and says ready: the session is fully up
            ready = await call.read()
            assert ready.HasField("frame") and ready.frame.data == b"ready", ready
        return calls

    return go()


def test_client_that_stops_sending_gets_deadline_exceeded(net: Net) -> None:
    sid = session_id()

    async def go() -> list[Outcome]:
        start = time.monotonic()
        calls = await open_all(net, sid, timeout=2.0)
        return list(await asyncio.gather(*(finish(c, start) for c in calls)))

    outs = net.run(go())
    # Party 0's call was opened first, so its deadline passes first; parties 1 and 2 may learn of that through
    # their links a moment before their own deadlines pass (then UNAVAILABLE).
    assert outs[0].code == Code.DEADLINE_EXCEEDED, outs[0]
    for out in outs:
        assert out.code in (Code.DEADLINE_EXCEEDED, Code.UNAVAILABLE), out
        assert 1.9 <= out.seconds < 3.5, out.seconds
    net.run(net.cluster.wait_idle(SECRET, within_s=3.0))
    wait_until(lambda: not any(sid[:8] in t for t in session_threads()), 5.0, "worker threads exiting")
    assert_alive(net)


@pytest.mark.parametrize("nodes", [SECRET, PUBLIC], ids=["secret", "public"])
def test_sdk_session_past_its_deadline(net: Net, nodes: tuple[str, ...]) -> None:
    """Through the SDK: a client that waits for nothing past its call timeout gets DEADLINE_EXCEEDED."""
    spec = SessionSpec(task=node_pb2.TASK_DECODE, privacy=net.view(nodes).privacy, model_id="olivia/tiny", output="all")
    io = serving.SECRET if len(nodes) == 3 else serving.PUBLIC

    def program(channel: Channel) -> None:
        serving.wait_ready(channel, io)
        channel.recv(io.parties[0], "never-sent")

    start = time.monotonic()
    with pytest.raises(RequestFailed) as info:
        net.alice.run_session(net.view(nodes), spec, program, timeout_s=1.5)
    assert info.value.code == Code.DEADLINE_EXCEEDED, info.value
    assert time.monotonic() - start < 1.5 + 3.0
    net.run(net.cluster.wait_idle(nodes, within_s=3.0))
    assert_alive(net)


def test_client_cancelling_its_stream_ends_every_party(net: Net) -> None:
    sid = session_id()

    async def go() -> list[Outcome]:
        calls = await open_all(net, sid, timeout=30)
        await net.cluster.wait_active(SECRET, 1, within_s=3.0)
        calls[0].cancel()  # only party 0's stream: the other parties must notice through their peer links
        start = time.monotonic()
        outs = list(await asyncio.gather(*(finish(c, start) for c in calls[1:])))
        await net.cluster.wait_idle(SECRET, within_s=5.0)
        return outs

    for out in net.run(go()):
        assert out.code == Code.UNAVAILABLE, out
        assert out.seconds < 5.0
    wait_until(lambda: not any(sid[:8] in t for t in session_threads()), 5.0, "worker threads exiting")
    assert_alive(net)


def test_cancel_rpc(net: Net) -> None:
    sid = session_id()

    async def go() -> tuple[Outcome, Outcome, Outcome, list[Outcome]]:
        calls = await open_all(net, sid, timeout=30)
        request = node_pb2.CancelRequest(session_id=sid)
        by_bob = await unary_outcome(net.cluster.inference("bob", "n1").Cancel(request, timeout=5))
        unknown = await unary_outcome(net.cluster.inference("alice", "n1").Cancel(
            node_pb2.CancelRequest(session_id=session_id()), timeout=5))
        by_alice = await unary_outcome(net.cluster.inference("alice", "n1").Cancel(request, timeout=5))
        ends = list(await asyncio.gather(*(finish(c) for c in calls)))
        return by_bob, unknown, by_alice, ends

    by_bob, unknown, by_alice, ends = net.run(go())
    assert by_bob.code == Code.PERMISSION_DENIED
    assert unknown.code == Code.OK and not unknown.received[0].cancelled
    assert by_alice.code == Code.OK and by_alice.received[0].cancelled
    assert ends[1].code == Code.CANCELLED, ends[1]
    assert ends[0].code == ends[2].code == Code.UNAVAILABLE, ends
    net.run(net.cluster.wait_idle(SECRET, within_s=5.0))
    assert_alive(net)


def test_good_secure_request_after_the_faults(net: Net) -> None:
    out = logits(net, net.view(SECRET), IDS)
    ref = plaintext.gpt2_forward(net.cfg, net.params, IDS)
    assert out.shape == ref.shape and (out - ref).abs().max().item() < 0.02
    wait_until(lambda: not session_threads(), 5.0, "every session worker thread exiting")


# ------------------------------------------------------------------------------------------------ limits


def test_max_sessions_is_resource_exhausted(cluster: Cluster) -> None:
    cluster.start("n4", max_sessions=1)
    publish_open = sealed(open_message(cluster, ("n4",), 0, task=node_pb2.TASK_PUBLISH, committee_id="c-limit",
                                       model_config_json=config_to_json(tiny_config())), cluster.pki.identity("olivia"))

    def fresh() -> node_pb2.ClientMessage:
        message = node_pb2.ClientMessage()
        message.CopyFrom(publish_open)
        message.open.session_id = session_id()
        return message

    async def go() -> tuple[Outcome, int]:
        first = await open_stream(cluster, "olivia", "n4", fresh(), timeout=10)
        call = cluster.inference("olivia", "n4").Session(timeout=10)
        await call.write(fresh())
        refused = await finish(call)
        first.cancel()
        await cluster.wait_idle(("n4",), within_s=5.0)
        again = await open_stream(cluster, "olivia", "n4", fresh(), timeout=10)  # the slot is free again
        again.cancel()
        return refused, await cluster.health("n4")

    refused, health = cluster.run(go())
    assert refused.code == Code.RESOURCE_EXHAUSTED, refused
    assert health == health_pb2.HealthCheckResponse.SERVING
    cluster.run(cluster.wait_idle(("n4",), within_s=5.0))


def test_stopping_a_node_ends_its_running_sessions(cluster: Cluster) -> None:
    cluster.start("n4")
    publish_open = sealed(open_message(cluster, ("n4",), 0, task=node_pb2.TASK_PUBLISH, committee_id="c-stop",
                                       model_config_json=config_to_json(tiny_config())), cluster.pki.identity("olivia"))
    call = cluster.run(open_stream(cluster, "olivia", "n4", publish_open, timeout=30))
    sid = publish_open.open.session_id
    start = time.monotonic()
    cluster.stop("n4")  # grace 0.5 s, then the session is cancelled
    assert time.monotonic() - start < 5.0
    out = cluster.run(finish(call))
    assert out.code in (Code.CANCELLED, Code.UNAVAILABLE), out
    wait_until(lambda: not any(sid[:8] in t for t in session_threads()), 5.0, "the worker thread exiting")
