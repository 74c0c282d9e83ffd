"""The OpenAI request bodies the gateway takes, checked field by field into frozen requests for the SDK.

Supported: the model, `max_tokens` / `max_completion_tokens`, `temperature`, `top_p`, `seed`, `stream` with
`stream_options.include_usage`, and these extensions: `"privacy": "secret" | "public"` (default secret),
`"strategy"`: "auto" (the selector plans it), "default" (the nodes' default for the privacy mode) or a strategy object
as secureinfer.strategy writes it (`{"mode": "secure", "profile": "accurate"}`); left out, "auto", except for public
embeddings, which the selector does not plan (its plaintext strategies are for decoders) and which then run the
worker's default; `max_error` (the accuracy budget of "auto"), `top_k` and `return_token_ids`. OpenAI
parameters the engine does not do (`n` > 1, `stop`, penalties, `logprobs`, tools, ...) are a 400 naming the parameter,
unless they carry their neutral value; parameters no OpenAI endpoint knows are a 400 too.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

from secureinfer.models.sampling import SamplingConfig
from secureinfer.strategy import Strategy, StrategyError, from_json

from .errors import bad_request

PRIVACIES = ("secret", "public")
AUTO = "auto"
DEFAULT = "default"
MAX_SEED = 2**63 - 1
# Harmless bookkeeping an OpenAI client may send; nothing here acts on it.
IGNORED = frozenset({"user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key",
                     "prompt_cache_retention", "prompt_cache_options"})
# OpenAI parameters the engine does not do, with the values that ask for nothing (accepted as if absent).
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "n": (1,), "best_of": (1,), "stop": ([], ""), "echo": (False,), "suffix": ("",), "logprobs": (False, 0),
    "top_logprobs": (0,), "presence_penalty": (0,), "frequency_penalty": (0,), "logit_bias": ({},),
    "tools": ([],), "tool_choice": ("none",), "functions": ([],), "function_call": ("none",),
    "parallel_tool_calls": (True, False), "response_format": ({"type": "text"},), "modalities": (["text"],),
    "audio": (), "prediction": (), "reasoning_effort": (), "verbosity": (), "web_search_options": (),
    "moderation": (),
}
Prompt = Union[str, tuple[int, ...]]


@dataclass(frozen=True)
class Routing:
    """Where and how a request runs: its privacy mode, "auto", "default" or an explicit strategy (None: left out,
    see `resolve`), and the accuracy budget."""

    privacy: str = "secret"
    strategy: Strategy | str | None = None
    max_error: float | None = None


def resolve(route: Routing, *, causal: bool) -> Routing:
    """`route` with a left-out strategy decided: "auto", but the nodes' default for a public encoder request."""
    if route.strategy is not None:
        return route
    public_encoder = route.privacy == "public" and not causal
    return dataclasses.replace(route, strategy=DEFAULT if public_encoder else AUTO)


@dataclass(frozen=True)
class Generation:
    """What a chat or text completion asks to generate, and how it is delivered."""

    model: str
    routing: Routing
    sampling: SamplingConfig
    max_tokens: int | None  # None: the gateway's default, within the model's context
    stream: bool = False
    include_usage: bool = False
    return_token_ids: bool = False


@dataclass(frozen=True)
class ChatRequest:
    generation: Generation
    messages: tuple[dict[str, str], ...]  # {"role", "content"} with text content


@dataclass(frozen=True)
class CompletionRequest:
    generation: Generation
    prompt: Prompt  # text, or token ids


@dataclass(frozen=True)
class EmbeddingRequest:
    model: str
    routing: Routing
    inputs: tuple[str, ...] | tuple[tuple[int, ...], ...]
    encoding_format: str = "float"
    dimensions: int | None = None


class Fields:
    """A request body read field by field; `finish` refuses what was left unread (see the module docstring)."""

    def __init__(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        self.body = {k: v for k, v in body.items() if v is not None}  # null is as good as absent
        self.read: set[str] = set()

    def get(self, name: str, check: Callable[[str, Any], Any], default: Any = None) -> Any:
        """The field `name` passed through `check(name, value)`, or `default` when absent."""
        self.read.add(name)
        return check(name, self.body[name]) if name in self.body else default

    def require(self, name: str, check: Callable[[str, Any], Any]) -> Any:
        if name not in self.body:
            raise bad_request(f"missing required parameter: {name!r}", name)
        return self.get(name, check)

    def finish(self) -> None:
        for name, value in self.body.items():
            if name in self.read or name in IGNORED:
                continue
            if name not in UNSUPPORTED:
                raise bad_request(f"unknown parameter: {name!r}", name)
            if value not in UNSUPPORTED[name]:
                raise bad_request(f"{name!r} is not supported by secureinfer's engine (it samples one sequence per "
                                  f"request, with temperature, top_p, top_k and seed only)", name)


# --- value checks ------------------------------------------------------------------------------------------------


def text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise bad_request(f"{name!r} must be a non-empty string", name)
    return value


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise bad_request(f"{name!r} must be true or false", name)
    return value


def integer(low: int, high: int | None = None) -> Callable[[str, Any], int]:
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            upper = f" and <= {high}" if high is not None else ""
            raise bad_request(f"{name!r} must be an integer >= {low}{upper}, got {value!r}", name)
        return value
    return check


def number(low: float, high: float, *, open_low: bool = False) -> Callable[[str, Any], float]:
    def check(name: str, value: Any) -> float:
        inside = isinstance(value, (int, float)) and not isinstance(value, bool) and \
            (low < value if open_low else low <= value) and value <= high
        if not inside:
            raise bad_request(f"{name!r} must be a number in {'(' if open_low else '['}{low}, {high}], got {value!r}",
                              name)
        return float(value)
    return check


def privacy(name: str, value: Any) -> str:
    if value not in PRIVACIES:
        raise bad_request(f"{name!r} must be 'secret' (a committee of three nodes on secret shares) or 'public' (an "
                          f"open model in the clear on one worker), got {value!r}", name)
    return value


def strategy(name: str, value: Any) -> Strategy | str:
    if value in (AUTO, DEFAULT):
        return value
    if not isinstance(value, dict):
        raise bad_request(f"{name!r} must be \"auto\", \"default\" or a strategy object such as {{\"mode\": "
                          f"\"secure\", \"profile\": \"accurate\"}}, got {value!r}", name)
    try:
        return from_json(json.dumps(value))
    except StrategyError as exc:
        raise bad_request(f"{name!r}: {exc}", name) from exc


def token_ids(name: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or \
            not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value):
        raise bad_request(f"{name!r} must be text or a non-empty list of token ids", name)
    return tuple(value)


# --- requests ----------------------------------------------------------------------------------------------------


def routing(fields: Fields) -> Routing:
    """The extension fields that say where and how a request runs."""
    return Routing(privacy=fields.get("privacy", privacy, "secret"), strategy=fields.get("strategy", strategy),
                   max_error=fields.get("max_error", number(0.0, 1e9, open_low=True)))


def generation(fields: Fields, *, chat: bool) -> Generation:
    """The generation settings shared by chat and text completions."""
    model = fields.require("model", text)
    max_tokens = fields.get("max_tokens", integer(1))
    if chat:
        newer = fields.get("max_completion_tokens", integer(1))
        if newer is not None and max_tokens is not None and newer != max_tokens:
            raise bad_request("give max_completion_tokens or max_tokens, not both", "max_completion_tokens")
        max_tokens = newer if newer is not None else max_tokens
    top_k = fields.get("top_k", integer(-1), 0)
    sampling = SamplingConfig(temperature=fields.get("temperature", number(0.0, 2.0), 1.0),
                              top_p=fields.get("top_p", number(0.0, 1.0, open_low=True), 1.0),
                              top_k=max(top_k, 0), seed=fields.get("seed", integer(0, MAX_SEED)))
    stream = fields.get("stream", flag, False)
    options = fields.get("stream_options", _stream_options, {})
    if options and not stream:
        raise bad_request("stream_options is only allowed with stream: true", "stream_options")
    return Generation(model=model, routing=routing(fields), sampling=sampling, max_tokens=max_tokens, stream=stream,
                      include_usage=options.get("include_usage", False),
                      return_token_ids=fields.get("return_token_ids", flag, False))


def _stream_options(name: str, value: Any) -> dict[str, bool]:
    """include_usage; include_obfuscation is accepted and has nothing to do here (the stream is not padded)."""
    if not isinstance(value, dict) or set(value) - {"include_usage", "include_obfuscation"}:
        raise bad_request(f"{name!r} may hold include_usage (and include_obfuscation) only", name)
    flag(f"{name}.include_obfuscation", value.get("include_obfuscation", False))
    return {"include_usage": flag(f"{name}.include_usage", value.get("include_usage", False))}


def chat_request(body: Any) -> ChatRequest:
    """POST /v1/chat/completions."""
    return ChatRequest(*_generation_request(body, "messages", _messages))


def completion_request(body: Any) -> CompletionRequest:
    """POST /v1/completions: one prompt, as text or token ids."""
    return CompletionRequest(*_generation_request(body, "prompt", _prompt))


def _generation_request(body: Any, field: str, check: Callable[[str, Any], Any]) -> tuple[Generation, Any]:
    """The generation settings and the input (`field`, checked by `check`) of a chat or text completion."""
    fields = Fields(body)
    gen = generation(fields, chat=field == "messages")
    given = fields.require(field, check)
    fields.finish()
    return gen, given


def embedding_request(body: Any) -> EmbeddingRequest:
    """POST /v1/embeddings: texts or token ids, as floats or base64."""
    fields = Fields(body)
    model = fields.require("model", text)
    inputs = fields.require("input", _inputs)
    fmt = fields.get("encoding_format", _encoding, "float")
    dims = fields.get("dimensions", integer(1))
    route = routing(fields)
    fields.finish()
    return EmbeddingRequest(model, route, inputs, fmt, dims)


def _messages(name: str, value: Any) -> tuple[dict[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise bad_request(f"{name!r} must be a non-empty list of messages", name)
    return tuple(_message(f"{name}[{i}]", m) for i, m in enumerate(value))


def _message(name: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or "role" not in value:
        raise bad_request(f"{name} must be an object with a role and content", name)
    role = value["role"]
    if role not in ("system", "developer", "user", "assistant"):
        raise bad_request(f"{name}.role {role!r} is not supported (system, developer, user or assistant; tools are "
                          f"not)", name)
    extra = set(value) - {"role", "content", "name"}
    if extra:
        raise bad_request(f"{name} has fields this gateway does not support: {sorted(extra)}", name)
    return {"role": "system" if role == "developer" else role, "content": _content(f"{name}.content",
                                                                                   value.get("content"))}


def _content(name: str, value: Any) -> str:
    """A message's text: a string, or a list of text parts joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(p, dict) and p.get("type") == "text"
                                                 and isinstance(p.get("text"), str) for p in value):
        return "".join(p["text"] for p in value)
    raise bad_request(f"{name} must be text or a list of text parts (images and audio are not supported)", name)


def _prompt(name: str, value: Any) -> Prompt:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], (str, list)):
        value = value[0]  # a batch of one
    if isinstance(value, str):
        return text(name, value)
    if isinstance(value, list) and value and isinstance(value[0], (str, list)):
        raise bad_request(f"{name!r}: one prompt per request (the engine samples one sequence at a time)", name)
    return token_ids(name, value)


def _inputs(name: str, value: Any) -> tuple[str, ...] | tuple[tuple[int, ...], ...]:
    if isinstance(value, str):
        return (text(name, value),)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(text(f"{name}[{i}]", v) for i, v in enumerate(value))
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        return tuple(token_ids(f"{name}[{i}]", v) for i, v in enumerate(value))
    return (token_ids(name, value),)


def _encoding(name: str, value: Any) -> str:
    if value not in ("float", "base64"):
        raise bad_request(f"{name!r} must be 'float' or 'base64', got {value!r}", name)
    return value
