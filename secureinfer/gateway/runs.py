"""Requests run in worker threads (the SDK blocks); their events reach the event loop through a queue.

    runner = Runner(max_concurrent=4)
    run = runner.start(lambda stop, emit: backend.generate(gen, prompt, stop, emit))   # 429 when all are busy
    kind, value = await run.next()      # ("piece", text) ... then ("done", result) or ("error", ApiError)
    run.cancel()                        # the request stops at its next token; the nodes drop its session

Work raises the ApiError its caller gets (anything else is logged and answered with a 500).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .errors import ApiError, overloaded

logger = logging.getLogger(__name__)
Work = Callable[[threading.Event, Callable[[str], None]], Any]  # (stop, emit piece) -> result


class Run:
    """One request in a worker thread: its stop switch and its events in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.stop = threading.Event()
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def emit(self, kind: str, value: Any) -> None:
        """Called from the worker thread; dropped once the event loop has closed (the server stopped)."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))
        except RuntimeError:
            pass

    async def next(self) -> tuple[str, Any]:
        """The next event: ("piece", text), then ("done", result) or ("error", ApiError)."""
        return await self.queue.get()

    async def outcome(self) -> tuple[str, Any]:
        """The final event, skipping pieces."""
        while True:
            kind, value = await self.next()
            if kind != "piece":
                return kind, value

    def cancel(self) -> None:
        """Stop the request at its next token (its session is aborted, and the nodes drop it)."""
        self.stop.set()


class Runner:
    """A fixed number of worker threads; a request beyond them is refused with 429 rather than queued."""

    def __init__(self, max_concurrent: int) -> None:
        self.max_concurrent = max_concurrent
        self._pool = ThreadPoolExecutor(max_concurrent, thread_name_prefix="secureinfer-gateway")
        self._busy = 0
        self._runs: set[Run] = set()
        self._lock = threading.Lock()

    @property
    def busy(self) -> int:
        """Requests running now."""
        with self._lock:
            return self._busy

    def start(self, work: Work) -> Run:
        """Run `work(stop, emit)` in a worker thread (see the module docstring); 429 when every worker is busy."""
        with self._lock:
            if self._busy >= self.max_concurrent:
                raise overloaded(f"the gateway is running its maximum of {self.max_concurrent} requests; retry shortly")
            self._busy += 1
            run = Run(asyncio.get_running_loop())
            self._runs.add(run)
        self._pool.submit(self._work, run, work)
        return run

    def _work(self, run: Run, work: Work) -> None:
        try:
            final: tuple[str, Any] = ("done", work(run.stop, lambda piece: run.emit("piece", piece)))
        except ApiError as exc:
            final = ("error", exc)
        except Exception as exc:  # noqa: BLE001 - the caller gets a 500; the log keeps the trace
            logger.exception("request failed")
            final = ("error", ApiError(500, f"internal error ({type(exc).__name__}); see the gateway's log",
                                       "internal"))
        with self._lock:  # free the slot before the caller hears the end, so its next request finds it free
            self._busy -= 1
            self._runs.discard(run)
        run.emit(*final)

    def close(self) -> None:
        """Stop every running request at its next token and take no more."""
        with self._lock:
            runs = list(self._runs)
        for run in runs:
            run.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)

