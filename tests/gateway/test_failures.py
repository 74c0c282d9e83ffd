"""What the network does to a request, as the gateway answers it, over its own network of node processes: a caller
that hangs up (streaming or not) ends its session on every node at once, nodes that are full answer 429 with
Retry-After, and a committee with a node down answers 503 (while the dead node's record lives, and after)."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator

import openai
import pytest

from secureinfer.client import Cancelled, Client
from secureinfer.client.connection import Cancellation, SessionSpec, session_io
from secureinfer.lab.simulate import LocalNetwork
from secureinfer.net import certs
from secureinfer.net.certs import Identity
from secureinfer.v1 import node_pb2

from ..nodes.netutil import wait_until
from .conftest import openai_client, serve, start_network, stop_network

MAX_SESSIONS = 2
LONG = 60  # tokens a cancelled request asks for: far more than it may compute before the nodes drop it
MESSAGES = [{"role": "user", "content": "Tell me a long story."}]


@pytest.fixture(scope="module")
def network() -> Iterator[LocalNetwork]:
    network = start_network(max_sessions=MAX_SESSIONS)
    try:
        yield network
    finally:
        stop_network(network)


@pytest.fixture(scope="module")
def gateway(network: LocalNetwork) -> Iterator:
    gateway = serve(network)
    try:
        yield gateway
    finally:
        gateway.stop()


def active_sessions(network: LocalNetwork) -> dict[str, int]:
    """Each node's own count of the sessions it runs now (its Status answer)."""
    identity = Identity.load(network.certs_dir, "client")
    counts = {}
    for node_id in network.node_ids:
        with Client(identity, [network.address(node_id)], timeout_s=10) as probe:
            counts[node_id] = probe.connector.status().active_sessions
    return counts


def recent(gateway) -> list[dict]:
    return gateway.app.state.gateway.recent.items()


def test_a_stream_the_caller_closes_ends_the_session_on_every_node(network: LocalNetwork, gateway) -> None:
    llm = openai_client(gateway.url)
    stream = llm.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=LONG, stream=True,
                                         temperature=0)
    chunks = iter(stream)
    next(chunks)  # the opening chunk: the session is open and sampling
    assert all(n >= 1 for n in active_sessions(network).values())
    started = time.monotonic()
    stream.close()
    took = wait_until(lambda: not any(active_sessions(network).values()), 20, "every node dropping the session",
                      step_s=0.2)
    assert took < 20 and time.monotonic() - started < 25
    wait_until(lambda: any(r.status == 499 for r in recent(gateway)), 10, "the request recorded as cancelled")
    cancelled = [r for r in recent(gateway) if r.status == 499][-1]
    assert cancelled.mode == "secure" and cancelled.endpoint == "chat"


def test_a_request_the_caller_abandons_ends_the_session_on_every_node(network: LocalNetwork, gateway) -> None:
    before = sum(1 for r in recent(gateway) if r.status == 499)
    url = urllib.parse.urlsplit(gateway.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=3)
    body = {"model": "chat", "messages": MESSAGES, "max_tokens": LONG, "temperature": 0}
    connection.request("POST", "/v1/chat/completions", body=json.dumps(body),
                       headers={"Content-Type": "application/json"})
    wait_until(lambda: all(n >= 1 for n in active_sessions(network).values()), 30, "the session opening")
    connection.close()  # hang up without waiting for the answer
    wait_until(lambda: not any(active_sessions(network).values()), 20, "every node dropping the session", step_s=0.2)
    wait_until(lambda: sum(1 for r in recent(gateway) if r.status == 499) > before, 10, "the cancel recorded")


def hold_sessions(network: LocalNetwork, count: int) -> Callable[[], None]:
    """Open `count` sessions of "chat" on its committee that just wait, so its nodes are full: one per client
    certificate made for the purpose (a node never lets one client hold every slot). Returns what ends them."""
    switches, threads = [], []
    release = threading.Event()
    for index in range(count):
        name = f"holder-{index}"
        certs.issue(network.certs_dir, name, "client", force=True)
        holder = Client(Identity.load(network.certs_dir, name), [network.seed], timeout_s=60)
        view = holder.committees("chat", "secret")[0]
        spec = SessionSpec(task=node_pb2.TASK_DECODE, privacy=node_pb2.PRIVACY_SECRET, model_id="owner/chat",
                           output="last")
        _, spec = session_io(spec.privacy, view, spec)
        switch = Cancellation()

        def hold(holder: Client = holder, view=view, spec: SessionSpec = spec, switch: Cancellation = switch) -> None:
            try:
                holder.connector.run_session(view, spec, lambda channel: release.wait(60), cancel=switch)
            except Cancelled:
                pass
            finally:
                holder.close()

        switches.append(switch)
        threads.append(threading.Thread(target=hold, daemon=True))
        threads[-1].start()

    def end() -> None:
        release.set()
        for switch in switches:
            switch.cancel()
        for thread in threads:
            thread.join(30)

    try:
        wait_until(lambda: all(n >= count for n in active_sessions(network).values()), 30, "the held sessions")
    except BaseException:
        end()
        raise
    return end


def test_nodes_that_are_full_answer_429_with_retry_after(network: LocalNetwork, gateway) -> None:
    end = hold_sessions(network, MAX_SESSIONS)
    try:
        with pytest.raises(openai.RateLimitError) as caught:
            openai_client(gateway.url).chat.completions.create(model="chat", messages=MESSAGES, max_tokens=1)
    finally:
        end()
    error = caught.value.response.json()["error"]
    assert caught.value.status_code == 429 and int(caught.value.response.headers["retry-after"]) >= 1
    assert error["type"] == "rate_limit_error" and error["code"] == "overloaded"
    assert f"maximum of {MAX_SESSIONS} sessions" in error["message"] and "The nodes are busy" in error["message"]
    wait_until(lambda: not any(active_sessions(network).values()), 20, "the held sessions ending")


def test_a_committee_with_a_node_down_answers_503(network: LocalNetwork, gateway) -> None:
    llm = openai_client(gateway.url)
    network.kill("node-2")
    with pytest.raises(openai.InternalServerError) as fresh:  # node-2's record still lives
        llm.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=1)
    wait_until(lambda: "node-2" not in {r.node_id for r in network.client().nodes()}, 30, "node-2's record expiring",
               step_s=0.2)
    with pytest.raises(openai.InternalServerError) as expired:
        llm.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=1)
    for caught in (fresh, expired):
        error = caught.value.response.json()["error"]
        assert caught.value.status_code == 503 and error["type"] == "service_unavailable", error
        assert caught.value.response.headers["retry-after"] == "5" and error["code"] == "committee_unavailable"
    assert "'chat' is whole right now" in expired.value.response.json()["error"]["message"]
    chat = llm.models.retrieve("chat").model_dump()
    assert chat["modes"] == ["public"] and not [c for c in chat["committees"] if c["mode"] == "secret"][0]["up"]
    public = llm.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=1,
                                         extra_body={"privacy": "public"})  # the worker on node-0 still serves
    assert public.model_extra["secureinfer"]["mode"] == "plaintext"


def test_an_address_in_use_is_refused_before_serving(network: LocalNetwork, gateway) -> None:
    from secureinfer.gateway.server import bind

    port = urllib.parse.urlsplit(gateway.url).port
    with pytest.raises(OSError):
        bind("127.0.0.1", port)
