"""The SDK: `Client` (embed, classify, logits, generate) and `ModelOwner` (publish), over a network of nodes.

    owner = ModelOwner.from_dir(certs, "owner", seeds=["127.0.0.1:7001"])
    owner.publish("minilm", cfg, params)                      # secret shares to a committee of three nodes
    client = Client.from_dir(certs, "alice", seeds=["127.0.0.1:7001"])
    emb = client.embed("minilm", input_ids, attention_mask)   # only this process sees the tokens and the output
    for token in client.stream("smollm2", prompt_ids, 8):     # tokens as they are sampled, here
        ...

Tokenization happens at the client (pass token ids, or texts with a tokenizer); so do sampling and the
reconstruction of outputs. `privacy="secret"` runs on a committee of three secure parties; `"public"` runs an open
model in the clear on one plaintext worker. A request that fails on one committee because a node died, was busy or
ran out of time is retried on the next committee hosting the model, when there is one. `strategy="auto"` (or a
Client made with `selector=`) lets the selector choose mode, placement and strategy per request and records each
outcome in the network's performance store (secureinfer/autoselect.py).
"""

from __future__ import annotations

import dataclasses
import queue
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable

import torch

from secureinfer.models.config import ModelConfig
from secureinfer.models.sampling import SamplingConfig
from secureinfer.mpc.comm import Channel
from secureinfer.mpc.models import serving, weights
from secureinfer.mpc.models.serving import Generation
from secureinfer.mpc.party import PARTY_NAMES
from secureinfer.mpc.ring import FixedPoint
from secureinfer.mpc.ring import DEFAULT_FRAC_BITS
from secureinfer.net.certs import Identity
from secureinfer.net.membership import CommitteeView, MembershipTable, pick_secure_nodes
from secureinfer.net.wire import config_from_json, config_to_json
from secureinfer.strategy import SecureStrategy, Strategy, StrategyError, check_frac_bits, to_json as strategy_to_json
from secureinfer.v1 import node_pb2

from .auto import AutoRunner, PlanSource, Work, work_of
from .connection import Connector, NetworkError, RequestFailed, SessionSpec, session_io

_PRIVACY = {"secret": node_pb2.PRIVACY_SECRET, "public": node_pb2.PRIVACY_PUBLIC}
DEFAULT_TIMEOUT_S = 600.0
PUSH_WAIT_S = 2.0  # how long close() waits for performance records still being pushed


def _privacy(name: str) -> int:
    if name not in _PRIVACY:
        raise ValueError(f"privacy must be 'secret' or 'public', got {name!r}")
    return _PRIVACY[name]


class _Member:
    """What Client and ModelOwner share: a connector, the membership view, committee lookup."""

    def __init__(self, identity: Identity, seeds: Sequence[str], timeout_s: float) -> None:
        self.identity = identity
        self.connector = Connector(identity, seeds, timeout_s)
        self.timeout_s = timeout_s

    @classmethod
    def from_dir(cls, certs_dir: str | Path, name: str, seeds: Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S,
                 **kwargs: Any):
        """Load the identity `name` ({name}.pem, {name}.key, ca.pem) from `certs_dir` (kwargs: e.g. a Client's
        selector)."""
        return cls(Identity.load(Path(certs_dir), name), seeds, timeout_s, **kwargs)

    def close(self) -> None:
        self.connector.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _view(self) -> MembershipTable:
        """A seed's membership view, its signed records verified here against the network CA (one Status call)."""
        table = MembershipTable(self.identity.ca_pem, self_id="")
        table.merge(list(self.connector.status().records))
        return table

    def nodes(self) -> list[node_pb2.NodeRecord]:
        """The live node records a seed knows (signed; verified here against the network CA)."""
        return self._view().live()

    def committees(self, model_id: str, privacy: str = "secret", *, view: MembershipTable | None = None
                   ) -> list[CommitteeView]:
        """The committees (or, public, the workers) hosting `model_id`, fastest first (in `view`, else a fresh one)."""
        wanted = _privacy(privacy)
        return [c for c in (view or self._view()).choose_committees(model_id) if c.privacy == wanted]

    def wait_for_model(self, model_id: str, privacy: str = "secret", timeout_s: float = 30.0) -> list[CommitteeView]:
        """Wait until the membership view shows a committee hosting `model_id` (records spread by gossip)."""
        deadline = time.monotonic() + timeout_s
        while True:
            views = self.committees(model_id, privacy)
            if views or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        if not views:
            raise NetworkError(f"no {privacy} committee hosts {model_id!r} after {timeout_s:.0f} s")
        return views

    def model_config(self, model_id: str, *, view: MembershipTable | None = None) -> ModelConfig:
        """The public architecture of a hosted model, from any node's record (in `view`, else a fresh one)."""
        for record in (view or self._view()).live():
            for hosted in record.models:
                if hosted.model_id == model_id and hosted.config_json:
                    return config_from_json(hosted.config_json)
        raise NetworkError(f"no node hosts a model named {model_id!r}")


class ModelOwner(_Member):
    """Publishes models: secret shares to committees of three secure nodes, or open weights to plaintext workers."""

    def publish(self, model_id: str, cfg: ModelConfig, params: dict[str, torch.Tensor], *, privacy: str = "secret",
                committees: int = 1, nodes: Sequence[str] = (), wait_s: float = 30.0, public_weights: bool = False,
                frac_bits: int | None = None) -> list[CommitteeView]:
        """Publish to `committees` disjoint committees (or the given node ids) and wait up to `wait_s` until the
        membership view shows them all (so clients find the model right away); returns them.

        `public_weights` (an open model, privacy "secret"): send the weights in the clear to every party of each
        committee instead of sharing them; requests with SecureStrategy(public_weights=True) run there, with the
        prompt and every activation still secret shares.

        `frac_bits` (privacy "secret", in [12, 24]; None: 18): the fixed point the weights are encoded at and every
        session of the model runs with; requests then need SecureStrategy(frac_bits=...) equal to it, or none."""
        if public_weights and privacy != "secret":
            raise ValueError("public_weights is for secure committees (privacy='secret'); a plaintext worker holds "
                             "the weights in the clear anyway")
        if frac_bits is not None and privacy != "secret":
            raise ValueError("frac_bits is for secure committees (privacy='secret'); a plaintext worker computes in "
                             "floating point")
        try:
            check_frac_bits(DEFAULT_FRAC_BITS if frac_bits is None else frac_bits)
        except StrategyError as exc:
            raise ValueError(str(exc)) from exc
        records = self.nodes()
        chosen = self._choose(records, privacy, committees, nodes)
        spec = SessionSpec(task=node_pb2.TASK_PUBLISH, privacy=_privacy(privacy), model_id=model_id,
                           model_config_json=config_to_json(cfg), public_weights=public_weights,
                           fractional_bits=frac_bits or 0)
        published = serving.owner_params(cfg, params) if privacy == "secret" else params
        fxp = FixedPoint(frac_bits or DEFAULT_FRAC_BITS)
        for view in chosen:
            def program(channel: Channel, view: CommitteeView = view) -> None:
                if privacy == "secret" and public_weights:
                    for p in PARTY_NAMES:
                        weights.publish_public(channel, published, p)
                    parties = PARTY_NAMES
                elif privacy == "secret":
                    weights.publish(channel, published, fxp)
                    parties = PARTY_NAMES
                else:
                    weights.publish_public(channel, published, serving.PUBLIC_WORKER)
                    parties = (serving.PUBLIC_WORKER,)
                for p in parties:
                    if channel.recv(p, "stored") != b"stored":
                        raise NetworkError(f"{p} did not confirm the model was stored")

            self.connector.run_session(view, spec, program)
        deadline = time.monotonic() + wait_s
        wanted = {view.committee_id for view in chosen}
        while wanted - {view.committee_id for view in self.committees(model_id, privacy)}:
            if time.monotonic() > deadline:
                raise NetworkError(f"published {model_id!r}, but the nodes' records do not show it after {wait_s} s")
            time.sleep(0.2)
        return chosen

    def _choose(self, records: list[node_pb2.NodeRecord], privacy: str, committees: int, nodes: Sequence[str]
                ) -> list[CommitteeView]:
        by_id = {r.node_id: r for r in records}
        size = 3 if privacy == "secret" else 1
        if nodes:
            missing = [n for n in nodes if n not in by_id]
            if missing or len(nodes) % size:
                raise NetworkError(f"nodes must be live and a multiple of {size}; unknown: {missing}")
            groups = [list(nodes[i:i + size]) for i in range(0, len(nodes), size)]
        else:
            groups, used = [], set()
            for _ in range(committees):
                if privacy == "secret":
                    picked = pick_secure_nodes(records, 3, exclude=tuple(used))
                else:
                    picked = [r for r in records if "plaintext" in r.roles and r.node_id not in used][:1]
                    if not picked:
                        raise NetworkError("no live plaintext worker is free for this model")
                groups.append([r.node_id for r in picked])
                used.update(groups[-1])
        return [CommitteeView(committee_id=secrets.token_hex(6), node_ids=tuple(g),
                              addresses=tuple(by_id[n].address for n in g), privacy=_privacy(privacy))
                for g in groups]


class Client(_Member):
    """Runs inference on hosted models; tokens and outputs exist in the clear only in this process (secret).

    With a `selector` (e.g. `autoselect.selector_from_network(client)`), requests without an explicit strategy, or
    with strategy="auto", run where and how the selector plans, and their measured outcomes are recorded (see
    secureinfer/autoselect.py)."""

    def __init__(self, identity: Identity, seeds: Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S, *,
                 selector: PlanSource | None = None) -> None:
        super().__init__(identity, seeds, timeout_s)
        self._auto = AutoRunner(self, selector) if selector is not None else None

    @property
    def selector(self) -> PlanSource | None:
        """The selector that plans this client's requests, or None."""
        return self._auto.selector if self._auto is not None else None

    def use_selector(self, selector: PlanSource) -> None:
        """Plan this client's requests with `selector` from now on (see the class docstring)."""
        self._auto = AutoRunner(self, selector)

    def close(self) -> None:
        """Give pending performance-record pushes a moment, then close the connections."""
        if self._auto is not None:
            self._auto.wait_pushes(PUSH_WAIT_S)
        super().close()

    def _run(self, model_id: str, privacy: str, output: str, profile: str,
             program: Callable[[Channel, ModelConfig, serving.TokenIO], tuple[Any, serving.ClientSteps]],
             committee: CommitteeView | None, retry: Callable[[], bool] = lambda: True,
             strategy: Strategy | str | None = None, work: Work | None = None) -> Any:
        _privacy(privacy)
        if strategy == "auto" or (strategy is None and self._auto is not None):
            if self._auto is None or work is None:
                raise ValueError('strategy="auto" needs a selector: Client(..., selector=...) or '
                                 'client.use_selector(secureinfer.client.auto.selector_from_network(client))')
            return self._auto.run(model_id, privacy, output, program, committee, retry, work)
        if isinstance(strategy, str):
            raise ValueError(f'strategy must be a Strategy, "auto" or None; got {strategy!r}')
        membership = self._view()
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
        cfg = self.model_config(model_id, view=membership)
        spec = SessionSpec(task=node_pb2.TASK_DECODE if cfg.causal else node_pb2.TASK_ENCODE,
                           privacy=_privacy(privacy), model_id=model_id, output=output,
                           profile=profile if strategy is None else "",  # a strategy carries its own profile
                           strategy_json=strategy_to_json(strategy) if strategy is not None else "")
        last: RequestFailed | None = None
        for view in views:
            io, at = session_io(_privacy(privacy), view, spec)
            try:
                return self.connector.run_session(view, at, lambda ch: program(ch, cfg, io))[0]
            except RequestFailed as exc:
                last = exc
                if not (exc.retryable and retry()):
                    raise
        raise last if last is not None else NetworkError(f"no committee for {model_id!r}")

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


__all__ = ["Client", "ModelOwner", "NetworkError", "RequestFailed"]
