"""Requests whose bytes are not a valid protobuf message end as INVALID_ARGUMENT, not gRPC's UNKNOWN.

gRPC turns an exception raised by a method's request deserializer into UNKNOWN ("Unexpected DecodeError"), which
reads like a node fault although the caller sent corrupt bytes. `MalformedRequests`, a server interceptor, wraps
every method's deserializer: bytes that do not parse become a `Malformed` stand-in. A unary request that is
`Malformed` is refused with INVALID_ARGUMENT before the servicer runs; on a stream the stand-in reaches the servicer,
whose `HasField` checks fail on it, so a bad first message or a bad frame is INVALID_ARGUMENT as well.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
import inspect
from typing import Any

import grpc
from google.protobuf.message import DecodeError


class Malformed:
    """Stands in for a request whose bytes did not parse; it has no fields, so `HasField` is always False."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def HasField(self, name: str) -> bool:  # noqa: N802 - the protobuf message method it stands in for
        """No field is set on a request that did not parse."""
        return False


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`deserializer`, returning `Malformed` instead of raising on corrupt bytes."""
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, ValueError, TypeError) as exc:
            return Malformed(f"{type(exc).__name__}: {exc}")

    return parse


def _refusing(behavior: Callable[..., Any], streaming_reply: bool) -> Callable[..., Any]:
    """A unary-request behavior that answers a `Malformed` request with INVALID_ARGUMENT."""

    async def refuse(request: Malformed, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid message ({request.reason})")

    if streaming_reply and inspect.isasyncgenfunction(behavior):
        async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, Malformed):
                await refuse(request, context)
            async for reply in behavior(request, context):
                yield reply

        return stream

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Malformed):
            await refuse(request, context)
        result = behavior(request, context)  # replies of a streaming one go out through context.write
        return await result if inspect.isawaitable(result) else result

    return call


class MalformedRequests(grpc.aio.ServerInterceptor):
    """Maps requests that do not parse to INVALID_ARGUMENT for every method of the server (module docstring)."""

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        parse = _tolerant(handler.request_deserializer)
        serialize = handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(_refusing(handler.unary_unary, False), parse, serialize)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(_refusing(handler.unary_stream, True), parse, serialize)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(handler.stream_unary, parse, serialize)
        return grpc.stream_stream_rpc_method_handler(handler.stream_stream, parse, serialize)
