"""`Client`: inference on hosted models (embed, classify, logits, generate, stream) over a network of nodes.

    client = Client.from_dir(certs, "alice", seeds=["127.0.0.1:7001"])
    emb = client.embed("minilm", ["a sentence", "another"])   # only this process sees the texts and the output
    out = client.generate("smollm2", "Once upon a time", 8)    # out.text, out.tokens, out.plan
    for piece in client.stream("smollm2", "Once upon a time", 8):  # text as it is sampled; `break` cancels it
        ...

Models are named OWNER/NAME, OWNER being the certificate name of the owner that published it ("olivia/smollm2"); a
bare NAME means the one owner's model of that name (several owners publishing NAME is InvalidRequest listing them).
`owner=` on any request pins the owner expected (with a bare NAME, or checked against OWNER/NAME). A committee is
used only when each of its nodes carries that owner's valid signature over the model's record (its id, committee,
config digest, tokenizer, precision and privacy mode), from this network's CA and not revoked (`Client(...,
revoked=...)`); a model whose records fail that is ModelNotFound saying why, and nothing is sent there.

Inputs are text or token ids. Text is tokenized here, with the tokenizer the owner named when publishing or one the
request passes (`tokenizer=`, text.py); sampling and the reconstruction of outputs happen here too.
`privacy="secret"` runs on a committee of three secure parties; `"public"` runs an open model in the clear on one
plaintext worker, never anywhere else. A request that fails on one committee because a node died, was busy or ran
out of time is retried on the next committee hosting the model, when there is one (failover.py).
`strategy="auto"` (or a Client made with `selector=`) lets the selector choose placement and strategy per request
within the privacy mode asked for and the default accuracy (unless `max_error=` allows less), and records each
outcome in the network's performance store (auto.py). Every result says which plan served it (results.py): a
Generated's `.plan`; embed, classify and logits return a PlannedTensor, a torch.Tensor with a `.plan`. Every error
is a ClientError with its gRPC status `code` (errors.py).
"""

from __future__ import annotations

import dataclasses
import functools
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Callable

import torch

from secureinfer.models.config import ModelConfig
from secureinfer.models.requests import RequestError
from secureinfer.models.sampling import SamplingConfig
from secureinfer.mpc.comm import Channel
from secureinfer.mpc.models import serving
from secureinfer.net.certs import Identity
from secureinfer.net.membership import CommitteeView, MembershipTable
from secureinfer.strategy import PlaintextStrategy, SecureStrategy, Strategy, to_json as strategy_to_json
from secureinfer.v1 import node_pb2

from .auto import AutoRunner, PlanSource, Program, Work, work_of
from .connection import Cancellation, SessionSpec, session_io
from .errors import InvalidRequest
from .failover import failover
from .member import DEFAULT_TIMEOUT_S, Member, not_hosted, privacy_code
from .resume import Resumable
from .results import Generated, PlannedTensor, ServedPlan, planned
from .text import TextStream, Tokenizer, TokenizerSource, decode_generation, encode_batch, encode_prompt, is_text, \
    tokenizer_for

PUSH_WAIT_S = 2.0  # how long close() waits for performance records still being pushed


@dataclass(frozen=True)
class _Request:
    """A request's resolved settings: where and how it may run, and the model's public config."""

    model_id: str
    privacy: str
    committee: CommitteeView | None
    strategy: Strategy | None  # explicit requests: the strategy sent to the nodes (None: their default)
    auto: bool  # the selector plans it
    max_error: float | None
    membership: MembershipTable
    cfg: ModelConfig


class Client(Member):
    """Runs inference on hosted models; tokens and outputs exist in the clear only in this process (secret).

    With a `selector` (e.g. `client.use_selector(selector_from_network(client))`, both from secureinfer.client),
    requests without an explicit strategy, or with strategy="auto", run where and how the selector plans, and their
    measured outcomes are recorded (see secureinfer/client/auto.py).

    A certificate with the owner role may also run requests (an owner testing its own model); nodes accept both
    client and owner certificates for inference, and only owner certificates for publishing."""

    def __init__(self, identity: Identity, seeds: Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S, *,
                 selector: PlanSource | None = None, revoked: Callable[[bytes], bool] | None = None) -> None:
        super().__init__(identity, seeds, timeout_s, revoked=revoked)
        self._auto = self._runner(selector) if selector is not None else None

    @property
    def selector(self) -> PlanSource | None:
        """The selector that plans this client's requests, or None."""
        return self._auto.selector if self._auto is not None else None

    def use_selector(self, selector: PlanSource) -> None:
        """Plan this client's requests with `selector` from now on (see the class docstring); a selector built
        from no performance records is logged as a warning and flagged on results (plan.no_history)."""
        self._auto = self._runner(selector)

    def _runner(self, selector: PlanSource) -> AutoRunner:
        return AutoRunner(self.connector, self.identity.name, selector)

    def close(self) -> None:
        """Give pending performance-record pushes a moment, then close the connections."""
        if self._auto is not None:
            self._auto.wait_pushes(PUSH_WAIT_S)
        super().close()

    def tokenizer(self, model_id: str, tokenizer: TokenizerSource | None = None, *, owner: str | None = None
                  ) -> Tokenizer:
        """The tokenizer text requests to `model_id` use: `tokenizer` (a packaged model's name, a local path or an
        object), else the one its owner published it with; InvalidRequest saying how to supply one if none."""
        return tokenizer_for(model_id, self.model_config(model_id, owner=owner), tokenizer)

    # --- requests --------------------------------------------------------------------------------------------------

    def _request(self, model_id: str, privacy: str, committee: CommitteeView | None, strategy: Strategy | str | None,
                 max_error: float | None, owner: str | None = None) -> _Request:
        """Check a request's settings (InvalidRequest) and look the model up (ModelNotFound): `model_id` resolved
        to OWNER/NAME with the pinned `owner` (member.py), its config from a record its owner signed."""
        privacy_code(privacy)
        auto = strategy == "auto" or (strategy is None and self._auto is not None)
        if auto and self._auto is None:
            raise InvalidRequest('strategy="auto" needs a selector: Client(..., selector=...) or '
                                 'client.use_selector(secureinfer.client.selector_from_network(client))')
        if not auto and strategy is not None and not isinstance(strategy, (SecureStrategy, PlaintextStrategy)):
            raise InvalidRequest(f'strategy must be a Strategy, "auto" or None; got {strategy!r}')
        if max_error is not None and not auto:
            raise InvalidRequest('max_error is the accuracy budget of strategy="auto"; an explicit strategy (or the '
                                 'nodes\' default) fixes its accuracy itself')
        if max_error is not None and (isinstance(max_error, bool) or not isinstance(max_error, (int, float))
                                      or not max_error > 0):
            raise InvalidRequest(f"max_error must be a number > 0, got {max_error!r}")
        explicit = strategy if isinstance(strategy, (SecureStrategy, PlaintextStrategy)) else None
        membership = self.settled_membership(model_id)
        if committee is not None:
            self.check_members(committee, membership)
        model_id = self.resolve(model_id, owner, view=membership)
        if committee is not None:
            self.check_owned(committee, model_id, membership)
        return _Request(model_id, privacy, committee, explicit, auto, max_error, membership,
                        self.model_config(model_id, view=membership))

    def _run(self, req: _Request, output: str, profile: str, program: Program, work: Work,
             cancel: Cancellation | None = None) -> tuple[Any, ServedPlan]:
        """Run `program` where the request may run (the selector's plans, or the committees of `_views` in turn);
        its value and the plan that served it."""
        # Read the view again now: its records expire (a node re-signs its own every few seconds), and preparing
        # the request (loading a tokenizer, say) may have taken longer than a record lives.
        req = dataclasses.replace(req, membership=self.settled_membership(req.model_id))
        runner = self._auto
        if req.auto and runner is not None:
            return runner.run(req.model_id, req.privacy, output, program, req.committee, work,
                              table=req.membership, cfg=req.cfg, max_error=req.max_error, cancel=cancel)
        spec = SessionSpec(task=node_pb2.TASK_DECODE if req.cfg.causal else node_pb2.TASK_ENCODE,
                           privacy=privacy_code(req.privacy), model_id=req.model_id, output=output,
                           profile=profile if req.strategy is None else "",  # a strategy carries its own profile
                           strategy_json=strategy_to_json(req.strategy) if req.strategy is not None else "")

        def attempt(view: CommitteeView) -> tuple[Any, ServedPlan]:
            io, at = session_io(spec.privacy, view, spec)
            value = self.connector.run_session(view, at, lambda ch: program(ch, req.cfg, io), cancel=cancel)[0]
            return value, ServedPlan.explicit(view, req.strategy, profile)

        return failover([(view, functools.partial(attempt, view)) for view in self._views(req)],
                        none_left=f"no committee for {req.model_id!r}")

    def _views(self, req: _Request) -> list[CommitteeView]:
        """The committees to try a request with an explicit strategy (or none) on, in order: the given one, else
        those hosting the model as the strategy needs it (its weight mode, its fixed point)."""
        model_id, strategy = req.model_id, req.strategy
        views = [req.committee] if req.committee is not None else \
            self.committees(model_id, req.privacy, view=req.membership)
        if not views:
            raise not_hosted(model_id, req.privacy, req.membership.choose_committees(model_id))
        if req.committee is None and getattr(strategy, "public_weights", False):
            views = [v for v in views if v.public_weights]
            if not views:
                raise InvalidRequest(f"no committee holds {model_id!r} with public weights (the model is closed or "
                                     f"was published as secret shares): drop public_weights from the strategy, or "
                                     f"publish it with ModelOwner.publish(..., public_weights=True)")
        if isinstance(strategy, SecureStrategy):  # a given committee: the strategy's precision is what is asked for
            views = _at_precision(views, model_id, strategy.frac_bits) if req.committee is None else \
                [dataclasses.replace(req.committee, frac_bits=strategy.frac_bits)]
        return views

    def _prompt(self, req: _Request, prompt: Any, tokenizer: TokenizerSource | None
                ) -> tuple[torch.Tensor, Tokenizer | None]:
        """A prompt's token ids (B, T), and the tokenizer that encoded it if it was text (one string)."""
        if isinstance(prompt, str):
            tok = tokenizer_for(req.model_id, req.cfg, tokenizer)
            return encode_prompt(tok, prompt), tok
        if is_text(prompt):
            raise InvalidRequest("a text prompt is one string; for several prompts at once pass token ids (B, T)")
        return _ids(prompt), None

    def embed(self, model_id: str, inputs: Any, attention_mask: torch.Tensor | None = None, *,
              output: str = "embedding", privacy: str = "secret", profile: str = "accurate",
              committee: CommitteeView | None = None, strategy: Strategy | str | None = None,
              max_error: float | None = None, tokenizer: TokenizerSource | None = None,
              max_length: int | None = None, owner: str | None = None) -> PlannedTensor:
        """BERT sentence embeddings (B, C) (or "pooled", "hidden", "logits") of `inputs`: token ids (B, T) with an
        optional attention mask, or texts (a string or a list of them; each cut to `max_length` tokens, default the
        model's max_positions, and padded here). `strategy` is sent to the nodes, e.g.
        SecureStrategy(public_weights=True) for an open model published with public weights; "auto": the selector
        plans it (`max_error`: how much error it may trade for speed). Returns a PlannedTensor: a torch.Tensor whose
        `.plan` is the ServedPlan (operations on it give plain tensors)."""
        req = self._request(model_id, privacy, committee, strategy, max_error, owner)
        if is_text(inputs):
            if attention_mask is not None:
                raise InvalidRequest("attention_mask is for token ids; texts get theirs from the tokenizer")
            texts = [inputs] if isinstance(inputs, str) else list(inputs)
            ids, attention_mask = encode_batch(tokenizer_for(model_id, req.cfg, tokenizer), texts,
                                               max_length or req.cfg.max_positions, req.cfg.pad_token_id)
        else:
            ids = _ids(inputs)
        _check_vocab(req.cfg, ids)

        def program(channel: Channel, cfg: ModelConfig, io: serving.TokenIO) -> tuple[torch.Tensor, Any]:
            return serving.client_encode(channel, cfg, io.engine(), ids, attention_mask, None, output, io)

        value, plan = self._run(req, output, profile, program, work_of("embed", ids.shape))
        return planned(value, plan)

    def embed_texts(self, model_id: str, texts: Sequence[str], tokenizer: TokenizerSource, *, max_length: int = 128,
                    **kwargs: Any) -> PlannedTensor:
        """`embed(model_id, texts, tokenizer=tokenizer, max_length=max_length, ...)`: texts tokenized here."""
        if isinstance(texts, str) or not is_text(texts):
            raise InvalidRequest("texts must be a non-empty list of strings")
        return self.embed(model_id, list(texts), tokenizer=tokenizer, max_length=max_length, **kwargs)

    def classify(self, model_id: str, inputs: Any, attention_mask: torch.Tensor | None = None,
                 **kwargs: Any) -> PlannedTensor:
        """Sequence-classification logits (B, num_labels) of a BERT model with a classification head (see
        `embed` for the inputs and options)."""
        return self.embed(model_id, inputs, attention_mask, output="logits", **kwargs)

    def logits(self, model_id: str, inputs: Any, *, chunks: tuple[int, ...] | None = None,
               privacy: str = "secret", profile: str = "accurate", committee: CommitteeView | None = None,
               strategy: Strategy | str | None = None, max_error: float | None = None,
               tokenizer: TokenizerSource | None = None, owner: str | None = None) -> PlannedTensor:
        """Decoder logits (B, T, V) of every position of `inputs` (token ids, or one text); `strategy` is sent to
        the nodes, which check it (every position's logits are computed by the standard forward whatever the
        strategy). Returns a PlannedTensor (see `embed`)."""
        req = self._request(model_id, privacy, committee, strategy, max_error, owner)
        ids, _ = self._prompt(req, inputs, tokenizer)
        _check_vocab(req.cfg, ids)
        parts = chunks or (ids.shape[1],)

        def program(channel: Channel, cfg: ModelConfig, io: serving.TokenIO) -> tuple[torch.Tensor, Any]:
            return serving.client_logits(channel, cfg, io.engine(), ids, parts, io)

        value, plan = self._run(req, "all", profile, program, work_of("logits", ids.shape))
        return planned(value, plan)

    def generate(self, model_id: str, prompt: Any, max_new_tokens: int, *,
                 sampling: SamplingConfig = SamplingConfig(), privacy: str = "secret", profile: str = "accurate",
                 committee: CommitteeView | None = None, on_token: Callable[[torch.Tensor], None] | None = None,
                 progress: bool = False, strategy: Strategy | str | None = None, max_error: float | None = None,
                 tokenizer: TokenizerSource | None = None, owner: str | None = None, fixed_steps: bool = False
                 ) -> Generated:
        """Generate up to `max_new_tokens` tokens after `prompt`: token ids (B, T), or one text (then the result's
        `text` is the new tokens decoded, up to the first end-of-sequence token); `on_token` sees each step's
        tokens. The result also carries the plan that served it (`.plan`).

        `strategy`: how the nodes execute it, e.g. PlaintextStrategy(precision="bf16", static_cache=True) for a
        public request (the worker then decodes on its fast plaintext decoder); nodes refuse one that does not fit
        the request (a PlaintextStrategy for a secret prompt) with INVALID_ARGUMENT. "auto" (the default when the
        client has a selector): the selector picks the committee (privacy="secret") or worker ("public") and the
        strategy, no less accurate than the default profile unless `max_error` allows it, and the outcome is
        recorded.

        `fixed_steps=True`: the nodes run exactly `max_new_tokens` decode steps whatever tokens are sampled (the
        steps after every row's end-of-sequence are computed and discarded here), so the number of steps, and the
        session's duration, no longer reveal the output's length; it costs those discarded steps' full time and
        traffic."""
        req = self._request(model_id, privacy, committee, strategy, max_error, owner)
        ids, tok = self._prompt(req, prompt, tokenizer)
        return self._generate(req, ids, tok, max_new_tokens, sampling, profile, on_token, progress,
                              fixed_steps=fixed_steps)

    def _generate(self, req: _Request, ids: torch.Tensor, tok: Tokenizer | None, max_new_tokens: int,
                  sampling: SamplingConfig, profile: str, on_token: Callable[[torch.Tensor], None] | None,
                  progress: bool, cancel: Cancellation | None = None, fixed_steps: bool = False) -> Generated:
        try:
            serving.check_generation_request(req.cfg, [ids], max_new_tokens)
        except RequestError as exc:
            raise InvalidRequest(str(exc)) from exc
        bar = _Progress(max_new_tokens) if progress else None

        def seen(token: torch.Tensor) -> None:
            if bar is not None:
                bar.update(resumable.emitted)
            if on_token is not None:
                on_token(token)

        # A committee that fails mid-generation hands over to the next one, which continues after the tokens
        # already sampled (resume.py): none is computed twice at the client or shown twice.
        resumable = Resumable(ids, max_new_tokens, sampling, seen)

        def program(channel: Channel, cfg: ModelConfig, io: serving.TokenIO) -> tuple[Any, Any]:
            return resumable.program(channel, cfg, dataclasses.replace(io, fixed_steps=fixed_steps))

        try:
            gen, plan = self._run(req, "last", profile, program,
                                  work_of("generate", ids.shape, max_new_tokens), cancel=cancel)
        finally:
            if bar is not None:
                bar.close()
        text = decode_generation(tok, gen.tokens, req.cfg.eos_token_ids) if tok is not None else None
        return Generated(tokens=gen.tokens, logits=gen.logits, plan=plan, text=text)

    def stream(self, model_id: str, prompt: Any, max_new_tokens: int, *,
               sampling: SamplingConfig = SamplingConfig(), privacy: str = "secret", profile: str = "accurate",
               committee: CommitteeView | None = None, progress: bool = False,
               strategy: Strategy | str | None = None, max_error: float | None = None,
               tokenizer: TokenizerSource | None = None, owner: str | None = None, fixed_steps: bool = False
               ) -> Iterator[Any]:
        """Yield the generation as it is sampled: for one text prompt, the new text piece by piece (str); for
        token ids, each step's tokens (B,). Leaving the loop early (`break`, or closing the iterator) cancels the
        session: the nodes drop it at once instead of computing the remaining tokens. Options as in `generate`."""
        req = self._request(model_id, privacy, committee, strategy, max_error, owner)
        ids, tok = self._prompt(req, prompt, tokenizer)
        items: queue.Queue[Any] = queue.Queue()
        done, cancel = object(), Cancellation()

        def run() -> None:
            try:
                self._generate(req, ids, tok, max_new_tokens, sampling, profile, items.put, progress, cancel,
                               fixed_steps)
                items.put(done)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
                items.put(exc)

        threading.Thread(target=run, name="secureinfer-stream", daemon=True).start()
        pieces = TextStream(tok, req.cfg.eos_token_ids) if tok is not None else None
        finished = False
        try:
            while not finished:
                item = items.get()
                finished = item is done
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                if finished:
                    tail = pieces.flush() if pieces is not None else ""
                    if tail:
                        yield tail
                elif pieces is None:
                    yield item
                elif piece := pieces.push(int(item[0])):
                    yield piece
        finally:
            if not finished:  # the caller stopped early: stop the nodes too
                cancel.cancel()


def _at_precision(views: list[CommitteeView], model_id: str, frac_bits: int) -> list[CommitteeView]:
    """The committees of `views` holding the model at fixed point `frac_bits`; InvalidRequest naming those held if
    none."""
    kept = [v for v in views if v.frac_bits == frac_bits]
    if not kept:
        held = sorted({v.frac_bits for v in views})
        raise InvalidRequest(f"no committee holds {model_id!r} at frac_bits={frac_bits} (held at: "
                             f"{', '.join(map(str, held))}): use a strategy with one of those, or publish it with "
                             f"ModelOwner.publish(..., frac_bits={frac_bits})")
    return kept


def _ids(x: Any) -> torch.Tensor:
    """Token ids as a (B, T) int64 tensor (a single row may be given as (T,)); InvalidRequest for anything else."""
    try:
        ids = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InvalidRequest(f"inputs must be text or token ids, got {type(x).__name__}") from exc
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32) or 0 in ids.shape:
        raise InvalidRequest(f"token ids must be a non-empty (B, T) integer tensor, got {tuple(ids.shape)} "
                             f"{ids.dtype}")
    return ids.long()


def _check_vocab(cfg: ModelConfig, ids: torch.Tensor) -> None:
    """InvalidRequest unless every id is in the model's vocabulary."""
    if int(ids.min()) < 0 or int(ids.max()) >= cfg.vocab_size:
        raise InvalidRequest(f"token ids must lie in [0, {cfg.vocab_size}) for this model")


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
