"""The gateway's HTTP application (Starlette): the OpenAI endpoints over the SDK, and the status page.

    app = build_app(Backend(client), GatewayConfig())      # then serve it with uvicorn (server.py)

    GET  /v1/models, /v1/models/{id}   hosted models with their modes and committees
    POST /v1/chat/completions          chat through the model's chat template; stream: true for server-sent events
    POST /v1/completions               one text (or token-id) prompt
    POST /v1/embeddings                encoders (BERT family)
    GET  /, /status.json               the status page and its data

Every request runs in a worker thread (runs.py); a caller that hangs up stops its request, and the nodes drop the
session. Errors are answered in the OpenAI format (errors.py).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from secureinfer import __version__
from secureinfer.client import ClientError

from . import board, params
from .auth import BearerAuth
from .backend import Backend, Completed, Embedded
from .config import GatewayConfig
from .errors import ApiError, bad_request, from_client_error
from .events import DONE, EventStream, event, until_disconnect
from .page import status_page
from .runs import Run, Runner, Work
from .shapes import Reply, embeddings

CLIENT_GONE = 499  # the status nginx made common for a caller that hung up: nobody receives it
STATUS_CACHE_S = 1.0


@dataclass(frozen=True)
class Job:
    """A request about to run: which endpoint, model and privacy, and the work its worker thread does."""

    endpoint: str
    model: str
    privacy: str
    work: Work


class Gateway:
    """The handlers, with what they share: the backend, the worker threads, and what the status page shows."""

    def __init__(self, backend: Backend, config: GatewayConfig) -> None:
        self.backend, self.config = backend, config
        self.runner = Runner(config.max_concurrent)
        self.recent = board.RecentRequests(config.recent_requests)
        self.nodes = board.NodeBoard()
        self._status: tuple[float, dict[str, Any]] | None = None
        self._status_lock = anyio.Lock()

    # --- the OpenAI endpoints ----------------------------------------------------------------------------------------

    async def list_models(self, request: Request) -> Response:
        models = await anyio.to_thread.run_sync(self._call, self.backend.models)
        return JSONResponse({"object": "list", "data": [m.as_openai() for m in models]})

    async def get_model(self, request: Request) -> Response:
        model = await anyio.to_thread.run_sync(self._call, lambda: self.backend.model(request.path_params["model"]))
        return JSONResponse(model.as_openai())

    async def chat_completions(self, request: Request) -> Response:
        req = params.chat_request(await _json(request))

        def prompt() -> str:  # in the worker thread: it loads the tokenizer and reads the membership view
            return self.backend.chat_prompt(req.generation.model, req.messages)

        return await self._generate(request, "chat", req.generation, prompt)

    async def completions(self, request: Request) -> Response:
        req = params.completion_request(await _json(request))
        return await self._generate(request, "completions", req.generation, lambda: req.prompt)

    async def embeddings(self, request: Request) -> Response:
        req = params.embedding_request(await _json(request))
        job = Job("embeddings", req.model, req.routing.privacy, lambda stop, emit: self.backend.embed(req))
        kind, value = await self._outcome(request, self._start(job))
        if kind == "error":
            raise value
        return JSONResponse(embeddings(req.model, value, req.encoding_format))

    async def _generate(self, request: Request, endpoint: str, gen: params.Generation,
                        prompt: Callable[[], params.Prompt]) -> Response:
        job = Job(endpoint, gen.model, gen.routing.privacy,
                  lambda stop, emit: self.backend.generate(gen, prompt(), stop, emit))
        run = self._start(job)
        reply = Reply(gen.model, chat=endpoint == "chat", return_token_ids=gen.return_token_ids)
        if not gen.stream:
            kind, value = await self._outcome(request, run)
            if kind == "error":
                raise value
            return JSONResponse(reply.completed(value))
        first = await self._first(request, run)  # wait for it, so an early failure keeps its HTTP status
        if first[0] == "error":
            raise first[1]
        return EventStream(_chunks(reply, run, first, gen.include_usage), on_disconnect=run.cancel)

    def _start(self, job: Job) -> Run:
        """Run the job in a worker thread; its SDK errors become the HTTP errors they mean, and every end is
        recorded for the status page."""
        started, clock = time.time(), time.monotonic()

        def work(stop: threading.Event, emit: Callable[[str], None]) -> Any:
            value, status = None, CLIENT_GONE
            try:
                value = job.work(stop, emit)
                status = 200
                return value
            except ApiError as exc:
                status = exc.status
                raise
            except ClientError as exc:
                error = self.backend.explain(exc, job.model, job.privacy)
                status = error.status
                raise error from exc
            finally:
                self._record(job, value, status, started, time.monotonic() - clock)

        return self.runner.start(work)

    def _record(self, job: Job, value: Any, status: int, started: float, latency_s: float) -> None:
        served = value if isinstance(value, (Completed, Embedded)) else None
        plan = served.plan if served is not None else None
        mode = plan.mode if plan is not None else ("secure" if job.privacy == "secret" else "plaintext")
        self.recent.add(board.Finished(
            at=started + latency_s, endpoint=job.endpoint, model=job.model, mode=mode, status=status,
            latency_s=latency_s, prompt_tokens=served.prompt_tokens if served is not None else 0,
            completion_tokens=len(served.tokens) if isinstance(served, Completed) else 0,
            committee=plan.committee_id if plan is not None else "",
            strategy=plan.strategy.name if plan is not None and plan.strategy is not None else ""))

    async def _outcome(self, request: Request, run: Run) -> tuple[str, Any]:
        """The run's final event, stopping it if the caller hangs up first."""
        return await _watching(request, run, run.outcome)

    async def _first(self, request: Request, run: Run) -> tuple[str, Any]:
        """The run's first event, stopping it if the caller hangs up first."""
        return await _watching(request, run, run.next)

    # --- the status page ---------------------------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        return HTMLResponse(status_page(self.config.refresh_s))

    async def status(self, request: Request) -> Response:
        async with self._status_lock:
            if self._status is None or time.monotonic() - self._status[0] > STATUS_CACHE_S:
                self._status = (time.monotonic(), await anyio.to_thread.run_sync(self._snapshot))
            return JSONResponse(self._status[1])

    def _snapshot(self) -> dict[str, Any]:
        try:
            table, error = self.backend.membership(), None
        except ClientError as exc:
            table, error = None, f"no seed answered: {exc}"
        client = self.backend.client
        gateway = {"client": client.identity.name, "seeds": list(client.connector.seeds), "version": __version__,
                   "in_flight": self.runner.busy, "max_concurrent": self.config.max_concurrent}
        return board.snapshot(table, error, self.nodes, self.recent, gateway)

    @staticmethod
    def _call(fn: Callable[[], Any]) -> Any:
        """`fn()` (in a worker thread), an SDK error turned into its HTTP error."""
        try:
            return fn()
        except ClientError as exc:
            raise from_client_error(exc) from exc


async def _watching(request: Request, run: Run, wait: Callable[[], Any]) -> tuple[str, Any]:
    """`await wait()`, while a hang-up by the caller cancels `run` and ends the wait with a 499."""
    result: tuple[str, Any] = ("error", ApiError(CLIENT_GONE, "the client closed the request", "cancelled"))
    async with anyio.create_task_group() as group:
        async def watch() -> None:
            await until_disconnect(request.receive, run.cancel)
            group.cancel_scope.cancel()

        group.start_soon(watch)
        result = await wait()
        group.cancel_scope.cancel()
    return result


async def _chunks(reply: Reply, run: Run, first: tuple[str, Any], include_usage: bool
                  ) -> AsyncGenerator[bytes, None]:
    """The events of a streamed generation: the opening chunk, one per text piece, the closing chunk (and usage),
    then [DONE]; a failure mid-stream is an error event."""
    finished = False
    try:
        yield event(reply.chunk("" if reply.chat else None, role=reply.chat))
        kind, value = first
        while kind == "piece":
            yield event(reply.chunk(value))
            kind, value = await run.next()
        finished = True
        if kind == "error":
            yield event(value.body())
        else:
            yield event(reply.last_chunk(value))
            if include_usage:
                yield event(reply.usage_chunk(value))
        yield DONE
    finally:
        if not finished:
            run.cancel()


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"the request body is not JSON: {exc}") from exc


async def _api_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ApiError):
        raise exc
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    what = f"{request.method} {request.url.path}"
    message = "no such endpoint" if status == 404 else "method not allowed" if status == 405 else str(exc)
    return await _api_error(request, ApiError(status, f"{what}: {message}", "unknown_url" if status == 404 else
                                              "invalid_request"))


def build_app(backend: Backend, config: GatewayConfig) -> Starlette:
    """The Starlette application serving `backend` as `config` says (auth when it has an API key)."""
    gateway = Gateway(backend, config)
    routes = [Route("/", gateway.page), Route("/status.json", gateway.status),
              Route("/v1/models", gateway.list_models), Route("/v1/models/{model:path}", gateway.get_model),
              Route("/v1/chat/completions", gateway.chat_completions, methods=["POST"]),
              Route("/v1/completions", gateway.completions, methods=["POST"]),
              Route("/v1/embeddings", gateway.embeddings, methods=["POST"])]
    middleware = [Middleware(BearerAuth, key=config.api_key)] if config.api_key else []
    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers={ApiError: _api_error, HTTPException: _http_error})
    app.state.gateway = gateway
    return app
