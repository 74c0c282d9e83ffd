"""`Client`: inference on hosted models (embed, classify, logits, generate, stream) over a network of nodes.

    client = Client.from_dir(certs, "alice", seeds=["127.0.0.1:7001"])
    emb = client.embed("minilm", input_ids, attention_mask)   # only this process sees the tokens and the output
    for token in client.stream("smollm2", prompt_ids, 8):     # tokens as they are sampled, here
        ...

Tokenization happens at the client (pass token ids, or texts with a tokenizer); so do sampling and the
reconstruction of outputs. `privacy="secret"` runs on a committee of three secure parties; `"public"` runs an open
model in the clear on one plaintext worker. A request that fails on one committee because a node died, was busy or
ran out of time is retried on the next committee hosting the model, when there is one (failover.py).
`strategy="auto"` (or a Client made with `selector=`) lets the selector choose mode, placement and strategy per
request and records each outcome in the network's performance store (auto.py).
"""

from __future__ import annotations

import dataclasses
import functools
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Callable

import torch

from secureinfer.models.config import ModelConfig
from secureinfer.models.sampling import SamplingConfig
from secureinfer.mpc.comm import Channel
from secureinfer.mpc.models import serving
from secureinfer.mpc.models.serving import Generation
from secureinfer.net.certs import Identity
from secureinfer.net.membership import CommitteeView, MembershipTable
from secureinfer.strategy import SecureStrategy, Strategy, to_json as strategy_to_json
from secureinfer.v1 import node_pb2

from .auto import AutoRunner, PlanSource, Program, Work, work_of
from .connection import NetworkError, SessionSpec, session_io
from .failover import failover
from .member import DEFAULT_TIMEOUT_S, Member, privacy_code

PUSH_WAIT_S = 2.0  # how long close() waits for performance records still being pushed


class Client(Member):
    """Runs inference on hosted models; tokens and outputs exist in the clear only in this process (secret).

    With a `selector` (e.g. `client.use_selector(selector_from_network(client))`, both from secureinfer.client),
    requests without an explicit strategy, or with strategy="auto", run where and how the selector plans, and their
    measured outcomes are recorded (see secureinfer/client/auto.py)."""

    def __init__(self, identity: Identity, seeds: Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S, *,
                 selector: PlanSource | None = None) -> None:
        super().__init__(identity, seeds, timeout_s)
        self._auto = self._runner(selector) if selector is not None else None

    @property
    def selector(self) -> PlanSource | None:
        """The selector that plans this client's requests, or None."""
        return self._auto.selector if self._auto is not None else None

    def use_selector(self, selector: PlanSource) -> None:
        """Plan this client's requests with `selector` from now on (see the class docstring)."""
        self._auto = self._runner(selector)

    def _runner(self, selector: PlanSource) -> AutoRunner:
        return AutoRunner(self.connector, self.identity.name, selector)

    def close(self) -> None:
        """Give pending performance-record pushes a moment, then close the connections."""
        if self._auto is not None:
            self._auto.wait_pushes(PUSH_WAIT_S)
        super().close()

    def _run(self, model_id: str, privacy: str, output: str, profile: str, program: Program,
             committee: CommitteeView | None, retry: Callable[[], bool] = lambda: True,
             strategy: Strategy | str | None = None, work: Work | None = None) -> Any:
        privacy_code(privacy)
        if strategy == "auto" or (strategy is None and self._auto is not None):
            if self._auto is None or work is None:
                raise ValueError('strategy="auto" needs a selector: Client(..., selector=...) or '
                                 'client.use_selector(secureinfer.client.selector_from_network(client))')
            membership = self.membership()
            return self._auto.run(model_id, privacy, output, program, committee, retry, work, table=membership,
                                  cfg=self.model_config(model_id, view=membership))
        if isinstance(strategy, str):
            raise ValueError(f'strategy must be a Strategy, "auto" or None; got {strategy!r}')
        membership = self.membership()
        views = self._views(model_id, privacy, committee, strategy, membership)
        cfg = self.model_config(model_id, view=membership)
        spec = SessionSpec(task=node_pb2.TASK_DECODE if cfg.causal else node_pb2.TASK_ENCODE,
                           privacy=privacy_code(privacy), model_id=model_id, output=output,
                           profile=profile if strategy is None else "",  # a strategy carries its own profile
                           strategy_json=strategy_to_json(strategy) if strategy is not None else "")

        def attempt(view: CommitteeView) -> Any:
            io, at = session_io(spec.privacy, view, spec)
            return self.connector.run_session(view, at, lambda ch: program(ch, cfg, io))[0]

        return failover([(view, functools.partial(attempt, view)) for view in views], retry,
                        none_left=f"no committee for {model_id!r}")

    def _views(self, model_id: str, privacy: str, committee: CommitteeView | None, strategy: Strategy | None,
               membership: MembershipTable) -> list[CommitteeView]:
        """The committees to try a request with an explicit strategy (or none) on, in order: the given one, else
        those hosting the model as the strategy needs it (its weight mode, its fixed point)."""
        views = [committee] if committee is not None else self.committees(model_id, privacy, view=membership)
        if not views:
            raise NetworkError(f"no {privacy} committee hosts a model named {model_id!r} (see `secureinfer network "
                               f"status`)")
        if committee is None and getattr(strategy, "public_weights", False):
            views = [v for v in views if v.public_weights]
            if not views:
                raise NetworkError(f"no committee holds {model_id!r} with public weights (the model is closed or "
                                   f"was published as secret shares): drop public_weights from the strategy, or "
                                   f"publish it with ModelOwner.publish(..., public_weights=True)")
        if isinstance(strategy, SecureStrategy):  # a given committee: the strategy's precision is what is asked for
            views = _at_precision(views, model_id, strategy.frac_bits) if committee is None else \
                [dataclasses.replace(committee, frac_bits=strategy.frac_bits)]
        return views

    def embed(self, model_id: str, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
              output: str = "embedding", privacy: str = "secret", profile: str = "accurate",
              committee: CommitteeView | None = None, strategy: Strategy | str | None = None) -> torch.Tensor:
        """BERT sentence embeddings (B, C) (or "pooled", "hidden", "logits"); `strategy` is sent to the nodes, e.g.
        SecureStrategy(public_weights=True) for an open model published with public weights."""
        ids = _ids(input_ids)

        def program(channel: Channel, cfg: ModelConfig, io: serving.TokenIO) -> torch.Tensor:
            _check_vocab(cfg, ids)
            return serving.client_encode(channel, cfg, io.engine(), ids, attention_mask, None, output, io)

        return self._run(model_id, privacy, output, profile, program, committee, strategy=strategy,
                         work=work_of("embed", ids.shape))

    def embed_texts(self, model_id: str, texts: Sequence[str], tokenizer: Any, *, max_length: int = 128,
                    **kwargs: Any) -> torch.Tensor:
        """Tokenize `texts` here, with the model's Hugging Face tokenizer, and embed them (see `embed`)."""
        if isinstance(texts, str) or not texts:
            raise ValueError("texts must be a non-empty list of strings")
        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return self.embed(model_id, enc["input_ids"], enc["attention_mask"], **kwargs)

    def classify(self, model_id: str, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 **kwargs: Any) -> torch.Tensor:
        """Sequence-classification logits (B, num_labels) of a BERT model with a classification head."""
        return self.embed(model_id, input_ids, attention_mask, output="logits", **kwargs)

    def logits(self, model_id: str, input_ids: torch.Tensor, *, chunks: tuple[int, ...] | None = None,
               privacy: str = "secret", profile: str = "accurate", committee: CommitteeView | None = None,
               strategy: Strategy | str | None = None) -> torch.Tensor:
        """Decoder logits (B, T, V) of every position; `strategy` is sent to the nodes, which check it (every
        position's logits are computed by the standard forward whatever the strategy)."""
        ids = _ids(input_ids)
        parts = chunks or (ids.shape[1],)

        def program(channel: Channel, cfg: ModelConfig, io: serving.TokenIO) -> torch.Tensor:
            _check_vocab(cfg, ids)
            return serving.client_logits(channel, cfg, io.engine(), ids, parts, io)

        return self._run(model_id, privacy, "all", profile, program, committee, strategy=strategy,
                         work=work_of("logits", ids.shape))

    def generate(self, model_id: str, prompt_ids: torch.Tensor, max_new_tokens: int, *,
                 sampling: SamplingConfig = SamplingConfig(), privacy: str = "secret", profile: str = "accurate",
                 committee: CommitteeView | None = None, on_token: Callable[[torch.Tensor], None] | None = None,
                 progress: bool = False, strategy: Strategy | str | None = None) -> Generation:
        """Generate up to `max_new_tokens` tokens after `prompt_ids` (B, T); `on_token` sees each step's tokens.

        `strategy`: how the nodes execute it, e.g. PlaintextStrategy(precision="bf16", static_cache=True) for a
        public request (the worker then decodes on its fast plaintext decoder); nodes refuse one that does not fit
        the request (a PlaintextStrategy for a secret prompt) with INVALID_ARGUMENT. "auto" (the default when the
        client has a selector): the selector picks committee or worker and strategy (privacy="secret" allows only
        secure plans; "public" also plaintext workers), and the outcome is recorded."""
        ids = _ids(prompt_ids)
        emitted = [0]
        bar = _Progress(max_new_tokens) if progress else None

        def seen(_: int, token: torch.Tensor) -> None:
            emitted[0] += 1
            if bar is not None:
                bar.update(emitted[0])
            if on_token is not None:
                on_token(token)

        def program(channel: Channel, cfg: ModelConfig, io: serving.TokenIO) -> Generation:
            serving.check_generation_request(cfg, [ids], max_new_tokens)
            eos = torch.tensor(cfg.eos_token_ids, dtype=torch.int64)
            results, steps = serving.client_generate_many(channel, cfg, io.engine(), [ids], max_new_tokens,
                                                          sampling, eos, seen, io)
            return results[0], steps

        try:  # a retry after tokens were shown would show them twice: retry only before the first token
            return self._run(model_id, privacy, "last", profile, program, committee, retry=lambda: emitted[0] == 0,
                             strategy=strategy, work=work_of("generate", ids.shape, max_new_tokens))
        finally:
            if bar is not None:
                bar.close()

    def stream(self, model_id: str, prompt_ids: torch.Tensor, max_new_tokens: int, **kwargs: Any
               ) -> Iterator[torch.Tensor]:
        """Yield each step's sampled tokens (B,) as soon as the client has them."""
        tokens: queue.Queue[Any] = queue.Queue()
        done = object()

        def run() -> None:
            try:
                self.generate(model_id, prompt_ids, max_new_tokens, on_token=tokens.put, **kwargs)
                tokens.put(done)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
                tokens.put(exc)

        threading.Thread(target=run, name="secureinfer-stream", daemon=True).start()
        while True:
            item = tokens.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def _at_precision(views: list[CommitteeView], model_id: str, frac_bits: int) -> list[CommitteeView]:
    """The committees of `views` holding the model at fixed point `frac_bits`; NetworkError naming those held if
    none."""
    kept = [v for v in views if v.frac_bits == frac_bits]
    if not kept:
        held = sorted({v.frac_bits for v in views})
        raise NetworkError(f"no committee holds {model_id!r} at frac_bits={frac_bits} (held at: "
                           f"{', '.join(map(str, held))}): use a strategy with one of those, or publish it with "
                           f"ModelOwner.publish(..., frac_bits={frac_bits})")
    return kept


def _ids(x: Any) -> torch.Tensor:
    ids = torch.as_tensor(x)
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32) or 0 in ids.shape:
        raise ValueError(f"token ids must be a non-empty (B, T) integer tensor, got {tuple(ids.shape)} {ids.dtype}")
    return ids.long()


def _check_vocab(cfg: ModelConfig, ids: torch.Tensor) -> None:
    if int(ids.min()) < 0 or int(ids.max()) >= cfg.vocab_size:
        raise ValueError(f"token ids must lie in [0, {cfg.vocab_size}) for this model")


class _Progress:
    """A one-line progress bar on stderr for long generations."""

    def __init__(self, total: int) -> None:
        import sys

        self.total, self.stream, self.start = total, sys.stderr, time.monotonic()

    def update(self, n: int) -> None:
        rate = n / max(time.monotonic() - self.start, 1e-9)
        filled = int(20 * n / self.total)
        self.stream.write(f"\r[{'#' * filled}{'.' * (20 - filled)}] {n}/{self.total} tokens, {rate:.2f} tok/s")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


__all__ = ["Client"]
