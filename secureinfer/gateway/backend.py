"""The gateway's side of the SDK: the gateway's certificate as two `Client`s, one planning with a selector (the
requests with strategy "auto") and one without (an explicit strategy, or the nodes' default); both blocking, called
from worker threads.

    backend = Backend.connect(certs_dir, "alice", ["127.0.0.1:7001"])
    done = backend.generate(gen, "Hello", stop, on_piece=print)   # text pieces as the session samples them
    vectors = backend.embed(request)

Text goes through the SDK's text interface and the tokenizer the owner published the model with (`Client.tokenizer`);
pieces of a generation are cut exactly as `Client.stream` cuts them (secureinfer.client.text.TextStream). A request
is stopped by setting its `stop` event: the session is aborted at its next token, so the nodes drop it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from secureinfer.client import Cancelled, Client, ClientError, ModelNotFound, ServedPlan, selector_from_network
from secureinfer.client.text import TextStream, Tokenizer, decode_generation
from secureinfer.models.config import ModelConfig
from secureinfer.net.membership import MembershipTable

from . import catalog, chat
from .errors import ApiError, bad_request, committee_down, from_client_error, model_not_found, unavailable
from .params import AUTO, DEFAULT, EmbeddingRequest, Generation, Prompt, Routing, resolve

STOPPED = "the HTTP client went away"


@dataclass(frozen=True)
class Completed:
    """A finished generation: every sampled token, the text up to the end-of-sequence token, and its plan."""

    tokens: tuple[int, ...]
    text: str
    prompt_tokens: int
    finish_reason: str  # "stop": an end-of-sequence token; "length": max_tokens reached
    plan: ServedPlan


@dataclass(frozen=True)
class Embedded:
    """Embeddings (B, C) of a request's inputs, the tokens they took, and the plan that served them."""

    vectors: torch.Tensor
    prompt_tokens: int
    plan: ServedPlan


class Backend:
    """Requests of the OpenAI endpoints, run through the SDK (see the module docstring): `client` without a
    selector, `auto` with one (None: requests for strategy "auto" are refused)."""

    def __init__(self, client: Client, auto: Client | None, default_max_tokens: int = 16) -> None:
        if client.selector is not None:
            raise ValueError("the gateway's plain client must have no selector: it runs explicit strategies")
        if auto is not None and auto.selector is None:
            raise ValueError("the gateway's auto client needs a selector")
        self.client, self.auto = client, auto
        self.default_max_tokens = default_max_tokens

    @classmethod
    def connect(cls, certs_dir: Path, name: str, seeds: Sequence[str], timeout_s: float,
                default_max_tokens: int = 16) -> "Backend":
        """Both clients of the identity `name` in `certs_dir`, the selector trained on the network's history
        (CertError, or a ClientError when no seed answers)."""
        client = Client.from_dir(certs_dir, name, seeds, timeout_s)
        try:
            auto = Client.from_dir(certs_dir, name, seeds, timeout_s)
            try:
                auto.use_selector(selector_from_network(auto))
            except BaseException:
                auto.close()
                raise
        except BaseException:
            client.close()
            raise
        return cls(client, auto, default_max_tokens)

    def close(self) -> None:
        for client in (self.client, self.auto):
            if client is not None:
                client.close()

    def _sdk(self, route: Routing) -> tuple[Client, dict[str, Any]]:
        """The client that runs a request routed so, and its SDK keyword arguments (privacy, strategy, max_error)."""
        if route.strategy == AUTO:
            if self.auto is None:
                raise bad_request('this gateway plans no requests (it runs no selector): name a strategy, or '
                                  '"default"', "strategy")
            return self.auto, {"privacy": route.privacy, "strategy": AUTO, "max_error": route.max_error}
        strategy = None if route.strategy == DEFAULT else route.strategy
        return self.client, {"privacy": route.privacy, "strategy": strategy, "max_error": route.max_error}

    # --- the network -------------------------------------------------------------------------------------------------

    def membership(self) -> MembershipTable:
        """A seed's membership view, verified against the network CA."""
        return self.client.membership()

    def models(self) -> list[catalog.HostedModel]:
        """Every model a live node hosts."""
        return catalog.hosted_models(self.membership())

    def model(self, model_id: str) -> catalog.HostedModel:
        """The hosted model `model_id`; 404 when no live node lists it."""
        found = catalog.find(self.membership(), model_id)
        if found is None:
            raise model_not_found(model_id)
        return found

    def explain(self, exc: ClientError, model_id: str, privacy: str) -> ApiError:
        """The HTTP error for an SDK error. Where live records still name a committee (or worker) holding the model
        in the privacy asked for, a model the SDK found on no whole committee is a committee that is down (503),
        not an unknown model, and an unreachable network is that committee being unavailable."""
        error = from_client_error(exc)
        if error.status not in (404, 503) or not model_id:
            return error
        try:
            hosted = catalog.find(self.membership(), model_id)
        except ClientError:
            return error
        if hosted is None or not any(p.mode == privacy for p in hosted.placements):
            return error
        if isinstance(exc, ModelNotFound) and privacy not in hosted.modes:
            return committee_down(model_id, str(exc.details))
        return unavailable(error.message, "committee_unavailable") if error.status == 503 else error

    # --- generation --------------------------------------------------------------------------------------------------

    def decoder(self, model_id: str) -> ModelConfig:
        """The public config of a hosted decoder; 404 if it is not hosted, 400 if it does not generate."""
        cfg = self.model(model_id).config
        if cfg is None or not cfg.causal:
            raise bad_request(f"{model_id!r} is not a decoder: it makes embeddings (POST /v1/embeddings)", "model")
        return cfg

    def chat_prompt(self, model_id: str, messages: Sequence[dict[str, str]]) -> str:
        """The prompt text of chat `messages` for `model_id`, through its tokenizer's chat template."""
        self.decoder(model_id)
        return chat.render(self.client.tokenizer(model_id), messages, model_id)

    def generate(self, gen: Generation, prompt: Prompt, stop: threading.Event,
                 on_piece: Callable[[str], None] = lambda _: None) -> Completed:
        """Generate after `prompt` (text, or token ids) as `gen` asks, handing each new text piece to `on_piece`;
        Cancelled once `stop` is set."""
        cfg = self.decoder(gen.model)
        tok = self._tokenizer(gen.model, needed=isinstance(prompt, str))
        ids = tok.encode(prompt) if isinstance(prompt, str) else list(prompt)
        room = cfg.max_positions - len(ids) + 1
        max_new = gen.max_tokens if gen.max_tokens is not None else min(self.default_max_tokens, room)
        if max_new < 1:
            raise bad_request(f"the prompt has {len(ids)} tokens, which fills the context of {gen.model!r} "
                              f"({cfg.max_positions} positions)", "messages")
        pieces = TextStream(tok, cfg.eos_token_ids) if tok is not None else None

        def on_token(token: torch.Tensor) -> None:
            if stop.is_set():
                raise Cancelled(STOPPED)
            if pieces is not None and (piece := pieces.push(int(token[0]))):
                on_piece(piece)

        if stop.is_set():
            raise Cancelled(STOPPED)
        client, options = self._sdk(resolve(gen.routing, causal=True))
        out = client.generate(gen.model, prompt if isinstance(prompt, str) else torch.tensor([ids]), max_new,
                              sampling=gen.sampling, on_token=on_token, **options)
        if pieces is not None and (tail := pieces.flush()):
            on_piece(tail)
        tokens = tuple(int(t) for t in out.tokens[0].tolist())
        text = out.text if out.text is not None else \
            (decode_generation(tok, out.tokens, cfg.eos_token_ids) if tok is not None else "")
        finish = "stop" if any(t in cfg.eos_token_ids for t in tokens) else "length"
        return Completed(tokens, text, len(ids), finish, out.plan)

    def _tokenizer(self, model_id: str, needed: bool) -> Tokenizer | None:
        """The model's published tokenizer; None for a token-id request to a model published without one."""
        try:
            return self.client.tokenizer(model_id)
        except ClientError:
            if needed:
                raise
            return None

    # --- embeddings --------------------------------------------------------------------------------------------------

    def embed(self, req: EmbeddingRequest) -> Embedded:
        """Sentence embeddings (B, C) of texts or token ids, on an encoder (BERT family)."""
        cfg = self.model(req.model).config
        if cfg is None or cfg.causal:
            raise bad_request(f"{req.model!r} is a decoder: embeddings come from encoders (GET /v1/models lists "
                              f"each model's endpoints)", "model")
        if req.dimensions is not None and req.dimensions != cfg.hidden:
            raise bad_request(f"{req.model!r} makes embeddings of {cfg.hidden} dimensions; dimensions cannot change "
                              f"that", "dimensions")
        client, options = self._sdk(resolve(req.routing, causal=False))
        if isinstance(req.inputs[0], str):
            texts = list(req.inputs)
            tok = self.client.tokenizer(req.model)
            used = sum(min(len(tok.encode(t)), cfg.max_positions) for t in texts)
            out = client.embed(req.model, texts, **options)
        else:
            ids, mask = _padded(req.inputs, cfg)
            used = int(mask.sum())
            out = client.embed(req.model, ids, mask, **options)
        return Embedded(out.as_subclass(torch.Tensor), used, out.plan)


def _padded(rows: Sequence[Sequence[int]], cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id rows padded on the right (the model's pad token) and their attention mask; 400 if one is too long."""
    width = max(len(r) for r in rows)
    if width > cfg.max_positions:
        raise bad_request(f"an input has {width} tokens; the model takes at most {cfg.max_positions}", "input")
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else 0
    ids = torch.tensor([list(r) + [pad] * (width - len(r)) for r in rows], dtype=torch.int64)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.int64)
    return ids, mask
