"""Continuous batching: concurrent generate requests share decode steps on one worker thread.

Threads call `submit(prompt, max_new_tokens)` and get a Future. The worker owns the decoder's cache slots (up to
max_batch sequences). At every step boundary it admits waiting requests into free slots (lowest first) with one
right-padded prefill of all newcomers, then runs one decode step of every active slot (a CUDA graph replay of the
smallest captured bucket covering the highest active slot, when the decoder has graphs); a request leaves as soon as
it has its tokens (EOS or max_new_tokens) and its slot is reused at the next boundary. Each request's tokens are
those of running it alone (greedy, per-row positions: no other row is ever attended).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .decoder import FastDecoder


@dataclass
class _Request:
    """One generation request and its progress."""

    prompt: torch.Tensor  # (T,) int64
    max_new_tokens: int
    eos: frozenset[int]
    future: Future
    tokens: list[int] = field(default_factory=list)

    def add(self, token: int) -> bool:
        """Record a token; True when the request is finished."""
        self.tokens.append(token)
        return token in self.eos or len(self.tokens) >= self.max_new_tokens


class BatchingWorker:
    """Serve concurrent greedy generate requests from one FastDecoder with continuous batching."""

    def __init__(self, decoder: FastDecoder, max_batch: int | None = None,
                 eos_token_ids: Sequence[int] | None = None) -> None:
        if decoder.strategy.speculation != "none":
            raise ValueError("the batching worker decodes step by step: use a decoder without speculation")
        self.decoder = decoder
        self.max_batch = decoder.max_batch if max_batch is None else int(max_batch)
        if decoder.graphs is not None and self.max_batch > decoder.max_batch:
            raise ValueError(f"max_batch {self.max_batch} exceeds the decoder's captured {decoder.max_batch}")
        self.eos = frozenset(decoder.cfg.eos_token_ids if eos_token_ids is None else eos_token_ids)
        self._inbox: queue.Queue[_Request | None] = queue.Queue()
        self._closed = False
        self.steps = 0  # decode steps run
        self.max_active = 0  # the most requests decoded together
        self.step_seconds = 0.0  # wall time in decode steps (each ends with the device sync that reads the tokens)
        self.prefill_seconds = 0.0  # wall time in newcomers' prefills
        self._thread = threading.Thread(target=self._run, name="batching-worker", daemon=True)
        self._thread.start()

    def submit(self, prompt: Sequence[int] | torch.Tensor, max_new_tokens: int,
               eos_token_ids: Sequence[int] | None = None) -> Future:
        """Queue a request; the Future resolves to its new tokens (n,) int64 on the CPU (n <= max_new_tokens)."""
        fut: Future = Future()
        ids = torch.as_tensor(prompt, dtype=torch.int64).reshape(-1).cpu()
        eos = self.eos if eos_token_ids is None else frozenset(eos_token_ids)
        if self._closed:
            fut.set_exception(RuntimeError("the batching worker is closed"))
        elif ids.numel() == 0 or max_new_tokens < 1:
            fut.set_exception(ValueError("a request needs a non-empty prompt and max_new_tokens >= 1"))
        elif int(ids.min()) < 0 or int(ids.max()) >= self.decoder.cfg.vocab_size:
            fut.set_exception(ValueError(f"token id outside the vocabulary [0, {self.decoder.cfg.vocab_size})"))
        elif ids.numel() + max_new_tokens - 1 > self.decoder.max_len:
            fut.set_exception(ValueError(f"prompt of {ids.numel()} + {max_new_tokens} new tokens exceeds "
                                         f"max_len={self.decoder.max_len}"))
        else:
            self._inbox.put(_Request(ids, int(max_new_tokens), eos, fut))
        return fut

    def close(self, timeout: float | None = None) -> None:
        """Finish the requests already submitted, then stop the worker thread."""
        self._closed = True
        self._inbox.put(None)
        self._thread.join(timeout)

    def __enter__(self) -> "BatchingWorker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------ worker

    def _run(self) -> None:
        """The worker loop: admit, prefill newcomers, step, retire; until closed and drained."""
        waiting: list[_Request] = []
        active: dict[int, _Request] = {}
        stopping = False
        try:
            if self.decoder.device.type == "cuda" and self.decoder.device.index is not None:
                torch.cuda.set_device(self.decoder.device)  # a new thread starts on the default device
            self.decoder.reset(self.max_batch)
            while True:
                stopping = self._collect(waiting, block=not active and not waiting and not stopping) or stopping
                if stopping and not waiting and not active:
                    return
                free = [s for s in range(self.max_batch) if s not in active]
                joining, waiting[:] = waiting[:len(free)], waiting[len(free):]
                if joining:
                    self._admit(joining, free[:len(joining)], active)
                if active:
                    self._step(active)
        except BaseException as exc:  # noqa: BLE001 - every waiting caller must hear about a failure
            for req in [*waiting, *active.values(), *self._drain()]:
                if not req.future.done():
                    req.future.set_exception(exc)
            raise

    def _collect(self, waiting: list[_Request], block: bool) -> bool:
        """Move queued requests to `waiting` (blocking for the first one when idle); True once close() was called."""
        stop = False
        try:
            item = self._inbox.get(timeout=0.05) if block else self._inbox.get_nowait()
            while True:
                if item is None:
                    stop = True
                else:
                    waiting.append(item)
                item = self._inbox.get_nowait()
        except queue.Empty:
            return stop

    def _drain(self) -> list[_Request]:
        """Everything still queued (after a failure)."""
        out = []
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return out
            if item is not None:
                out.append(item)

    def _admit(self, joining: list[_Request], slots: list[int], active: dict[int, _Request]) -> None:
        """Prefill the newcomers together in their slots and record their first tokens."""
        dec = self.decoder
        start = time.perf_counter()
        ids, lengths = dec.pad([r.prompt for r in joining])
        first = dec.prefill(ids, slots, lengths).argmax(-1)  # (n,)
        dec.load_rows(slots, first)
        tokens = first.tolist()
        self.prefill_seconds += time.perf_counter() - start
        for slot, req, tok in zip(slots, joining, tokens):
            if req.add(tok):
                self._retire(req)
            else:
                active[slot] = req

    def _step(self, active: dict[int, _Request]) -> None:
        """One decode step of every active slot."""
        slots = sorted(active)
        start = time.perf_counter()
        _, nxt = self.decoder.step_rows(slots)
        tokens = nxt.tolist()  # (G,): one device sync per step
        self.step_seconds += time.perf_counter() - start
        self.steps += 1
        self.max_active = max(self.max_active, len(slots))
        for s in slots:
            if active[s].add(tokens[s]):
                self._retire(active.pop(s))

    @staticmethod
    def _retire(req: _Request) -> None:
        """Resolve a finished request's future."""
        req.future.set_result(torch.tensor(req.tokens, dtype=torch.int64))
