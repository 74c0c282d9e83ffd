"""Optional bearer-token auth for everything the gateway serves: `Authorization: Bearer KEY`, or `?key=KEY` on the
status page and its data (a browser cannot add a header to a link). Written as plain ASGI, so streams and the
detection of callers that hang up pass through untouched."""

from __future__ import annotations

import hmac
import json
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import ApiError

PAGE_PATHS = ("/", "/status.json")


class BearerAuth:
    """Refuses HTTP requests without the key with a 401 in the OpenAI error format."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        error = ApiError(401, "a valid API key is needed: send `Authorization: Bearer KEY`", "invalid_api_key")
        body = json.dumps(error.body()).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})

    def _allowed(self, scope: Scope) -> bool:
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"")
        if given[:7].lower() == b"bearer " and hmac.compare_digest(given[7:].strip(), self.key):
            return True
        if scope.get("path") in PAGE_PATHS:
            keys = parse_qs(scope.get("query_string", b"").decode(errors="replace")).get("key", [])
            return any(hmac.compare_digest(k.encode(), self.key) for k in keys)
        return False
