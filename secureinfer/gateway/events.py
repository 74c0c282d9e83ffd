"""Server-sent events, and noticing a caller that hangs up: both end a request's session on the nodes.

`EventStream` sends `data: {...}` events as a generation yields them and, whatever the ASGI server's version, listens
for the caller's disconnect while it does; `until_disconnect` does the listening for a request that answers at once
at the end. Either calls `on_disconnect` (a Run's cancel) as soon as the caller is gone.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable
from typing import Any

import anyio
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

DONE = b"data: [DONE]\n\n"


def event(data: Any) -> bytes:
    """One server-sent event carrying `data` as JSON."""
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


async def until_disconnect(receive: Receive, on_disconnect: Callable[[], None]) -> None:
    """Wait for the caller to hang up (its request body already read), then call `on_disconnect`."""
    while (await receive())["type"] != "http.disconnect":
        pass
    on_disconnect()


class EventStream(Response):
    """A text/event-stream response of the byte events of `events`; `on_disconnect` runs if the caller leaves
    before the last one."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes, None], on_disconnect: Callable[[], None]) -> None:
        self.events = events
        self.on_disconnect = on_disconnect
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            async with anyio.create_task_group() as group:
                async def watch() -> None:
                    await until_disconnect(receive, self.on_disconnect)
                    group.cancel_scope.cancel()

                group.start_soon(watch)
                try:
                    async for chunk in self.events:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                except (OSError, ClientDisconnect):
                    self.on_disconnect()
                group.cancel_scope.cancel()
        finally:
            await self.events.aclose()
