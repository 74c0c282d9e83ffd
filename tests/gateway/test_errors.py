"""Every error the gateway answers, in the OpenAI format with its HTTP status, through the official client where it
can send the request: an unknown model 404, a bad request 400 (malformed, or a parameter the engine does not do), an
API key 401, a full gateway 429 with Retry-After, unknown paths 404 and methods 405."""

from __future__ import annotations

import threading
from typing import Any

import openai
import pytest

from secureinfer.gateway import GatewayConfig

from .conftest import Served, openai_client, send, serve

MESSAGES = [{"role": "user", "content": "Hi"}]


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    """The `error` object of an answer (the official client keeps the whole body)."""
    body = exc.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


@pytest.mark.parametrize("call", ["chat", "completions", "embeddings", "retrieve"])
def test_an_unknown_model_is_404_model_not_found(served: Served, call: str) -> None:
    requests = {
        "chat": lambda: served.llm.chat.completions.create(model="nope", messages=MESSAGES),
        "completions": lambda: served.llm.completions.create(model="nope", prompt="Hi"),
        "embeddings": lambda: served.llm.embeddings.create(model="nope", input="Hi"),
        "retrieve": lambda: served.llm.models.retrieve("nope"),
    }
    with pytest.raises(openai.NotFoundError) as caught:
        requests[call]()
    error = error_of(caught.value)
    assert caught.value.status_code == 404 and error["code"] == "model_not_found" and error["param"] == "model"
    assert error["type"] == "invalid_request_error" and "'nope'" in error["message"]


BAD_CHATS: list[tuple[dict[str, Any], str, str]] = [
    ({"n": 2}, "n", "not supported"),
    ({"stop": ["\n"]}, "stop", "not supported"),
    ({"logprobs": True}, "logprobs", "not supported"),
    ({"presence_penalty": 0.5}, "presence_penalty", "not supported"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "not supported"),
    ({"temperature": 3}, "temperature", "[0.0, 2.0]"),
    ({"top_p": 0}, "top_p", "(0.0, 1.0]"),
    ({"max_tokens": 0}, "max_tokens", ">= 1"),
    ({"privacy": "open"}, "privacy", "'secret'"),
    ({"strategy": {"mode": "secure", "profile": "sloppy"}}, "strategy", "profile must be one of"),
    ({"strategy": "fastest"}, "strategy", '"auto", "default"'),
    ({"max_error": 0.1, "strategy": "default"}, None, "max_error is the accuracy budget"),
    ({"frobnicate": 1}, "frobnicate", "unknown parameter"),
    ({"max_tokens": 500}, None, "exceeds max_positions"),
    ({"privacy": "public", "strategy": {"mode": "secure"}}, None, ""),
]


@pytest.mark.parametrize("extra,param,says", BAD_CHATS, ids=[str(b[0]) for b in BAD_CHATS])
def test_a_bad_chat_request_is_400_naming_the_parameter(served: Served, extra: dict[str, Any], param: str | None,
                                                        says: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        served.llm.chat.completions.create(model="chat", messages=MESSAGES, extra_body=extra)
    error = error_of(caught.value)
    assert caught.value.status_code == 400 and error["type"] == "invalid_request_error"
    assert error["param"] == param and says in error["message"], error


@pytest.mark.parametrize("model,endpoint,says", [
    ("embed", "chat", "not a decoder"),
    ("chat", "embeddings", "is a decoder"),
    ("plain", "chat", "no chat template"),
])
def test_the_wrong_endpoint_for_a_model_is_400(served: Served, model: str, endpoint: str, says: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        if endpoint == "chat":
            served.llm.chat.completions.create(model=model, messages=MESSAGES, extra_body={"privacy": "public"})
        else:
            served.llm.embeddings.create(model=model, input="Hi")
    assert says in error_of(caught.value)["message"]


def test_messages_the_gateway_cannot_pass_on_are_400(served: Served) -> None:
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]
    tool = [{"role": "tool", "content": "42", "tool_call_id": "x"}]
    for messages, says in ((image, "images and audio are not supported"), (tool, "'tool' is not supported"),
                           ([], "non-empty list")):
        with pytest.raises(openai.BadRequestError) as caught:
            served.llm.chat.completions.create(model="chat", messages=messages)
        assert says in error_of(caught.value)["message"] and error_of(caught.value)["param"].startswith("messages")


def test_a_model_not_hosted_in_the_privacy_asked_is_404_saying_which_privacy_reaches_it(served: Served) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        served.llm.completions.create(model="plain", prompt="Hi", max_tokens=1)  # secret by default
    assert "privacy='public'" in error_of(caught.value)["message"]


def test_malformed_bodies_are_400_in_the_openai_format(served: Served) -> None:
    for body in (b"{not json", b"[1, 2]", b'{"model": "chat"}'):
        answer = send(served.url, "POST", "/v1/chat/completions", body)
        assert answer.status == 400, answer.body
        assert answer.json()["error"]["type"] == "invalid_request_error"


def test_unknown_paths_and_methods_answer_in_the_openai_format(served: Served) -> None:
    missing = send(served.url, "GET", "/v1/nothing")
    wrong = send(served.url, "GET", "/v1/chat/completions")
    assert missing.status == 404 and missing.json()["error"]["code"] == "unknown_url"
    assert wrong.status == 405 and "method not allowed" in wrong.json()["error"]["message"]


def test_an_api_key_is_required_when_set(served: Served) -> None:
    gateway = serve(served.network, GatewayConfig(port=0, api_key="s3cret-key"))
    try:
        with pytest.raises(openai.AuthenticationError) as caught:
            openai_client(gateway.url, api_key="wrong-key").models.list()
        assert caught.value.status_code == 401 and error_of(caught.value)["code"] == "invalid_api_key"
        assert caught.value.response.headers["www-authenticate"] == "Bearer"
        assert {m.id for m in openai_client(gateway.url, api_key="s3cret-key").models.list()} == \
            {"owner/chat", "owner/embed", "owner/plain"}
        assert send(gateway.url, "GET", "/status.json").status == 401
        assert send(gateway.url, "GET", "/status.json?key=s3cret-key").status == 200
        assert send(gateway.url, "GET", "/?key=wrong").status == 401
    finally:
        gateway.stop()


def test_a_full_gateway_answers_429_with_retry_after(served: Served) -> None:
    """One request at a time: while a (secure, so slow) stream runs, the next request is refused, saying when to
    retry."""
    gateway = serve(served.network, GatewayConfig(port=0, max_concurrent=1))
    llm = openai_client(gateway.url)
    try:
        stream = llm.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=8, stream=True)
        first = next(iter(stream))
        assert llm.models.retrieve("chat").id == "owner/chat"  # needs no worker: still answered
        with pytest.raises(openai.RateLimitError) as caught:
            llm.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=1)
        assert first.choices[0].delta.role == "assistant"
        assert caught.value.status_code == 429 and caught.value.response.headers["retry-after"] == "1"
        assert error_of(caught.value)["type"] == "rate_limit_error"
        assert sum(1 for _ in stream) >= 1  # the running stream is not disturbed
    finally:
        gateway.stop()


def test_requests_run_concurrently(served: Served) -> None:
    """Two at once (a node lets one client certificate, the gateway's, hold only some of its session slots)."""
    results: list[str] = []

    def ask() -> None:
        got = served.llm.completions.create(model="plain", prompt="the quick", max_tokens=2, temperature=0,
                                            extra_body={"privacy": "public", "strategy": "default"})
        results.append(got.choices[0].text)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == 2 and len(set(results)) == 1
