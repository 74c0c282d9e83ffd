"""The session protocol between a client and three parties, on any `Channel` (in-process threads or gRPC nodes).

Party side (`serve`): with its model built, a party says b"ready" to the client, then serves steps until b"stop":
  1. control message b"step" (public: that a step happens), b"reset" (forget the KV cache) or b"stop";
  2. for BERT, the public padding mask and token types (they reveal the sequence lengths, as the shapes do);
  3. the one-hot rows of the client's tokens as shares (ring 0/1 integers, `sharing.send_input`);
  4. the output's shares go to the client alone (`reveal.reveal_to_owner`: each party's first component and the
     digest of its second, so every component arrives from both its holders), which cross-checks and reconstructs
     them; each party also vouches for its components to their other holders (`reveal.Witness`) and, at stop,
     forwards the vouchers it got to the client, which names a party that sent it a component it did not vouch for
     (`reveal.OutputMismatch`).
Client side (`client_encode`, `client_logits`, `client_generate_many`): the mirror image; for generation the client
samples each next token locally from the opened last-position logits and feeds it back as a fresh one-hot share.
Malformed requests (wrong vocabulary width, too many positions or rows, bad metadata) raise `RequestError` on every
party alike, since all three see the same public shapes. A step's token shares are checked against the model and the
session's `StepLimits` from the shapes their messages declare, before a seed is expanded (`sharing.receive_input`).
"""

from __future__ import annotations

import contextlib
import copy
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from secureinfer.models.config import ModelConfig
from secureinfer.models.requests import CLIENT, DECODE_OUTPUTS, ENCODE_OUTPUTS, PUBLIC_WORKER, RequestError
from secureinfer.models.sampling import SamplingConfig, next_token

from ..approx.profile import ApproxProfile
from ..nn.embedding import one_hot
from ..comm import Channel, CommError, CommStats
from ..party import PARTY_NAMES, EngineConfig, Party
from ..protocols import reveal, sharing
from ..ring import FixedPoint
from ..shares import AShare
from . import bert, gpt2, llama, trace, weights
from .blocks import SecretKVCache

_FAMILIES = {"bert": (bert.SecureBert, bert.owner_params), "gpt2": (gpt2.SecureGPT2, gpt2.owner_params),
             "llama": (llama.SecureLlama, llama.owner_params)}


def build_model(cfg: ModelConfig, shares: dict, profile: ApproxProfile, *, config: EngineConfig | None = None):
    """The family's secure model on one party's weights (the dict is consumed): its secret shares (AShare values,
    from `weights.receive`), or, for an open model in public-weights mode, the parameters in the clear as the owner
    publishes them (`owner_params` output, floating-point tensors, from `weights.receive_public`), encoded here in
    `config`'s fixed point on its device. Public weights make the matmuls local; activations stay secret."""
    values = list(shares.values())
    if values and all(isinstance(v, torch.Tensor) for v in values):
        shares = weights.encode_public(shares, config or EngineConfig())
    elif not all(isinstance(v, AShare) for v in values):
        raise ValueError("a model's weights must be all secret shares or all public tensors")
    return _FAMILIES[cfg.arch][0](cfg, shares, profile)


def owner_params(cfg: ModelConfig, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the model owner publishes: the checkpoint with the family's public constants folded in."""
    return _FAMILIES[cfg.arch][1](cfg, params)


def with_profile(model: Any, profile: ApproxProfile) -> Any:
    """A view of a built model that computes its nonlinearities under another profile (weights are shared)."""
    if model.profile == profile:
        return model
    view = copy.copy(model)
    view.profile = profile
    if isinstance(model, gpt2.SecureGPT2):
        view.gelu = gpt2.gelu_spec(model.cfg.act, profile)
    return view


# ---------------------------------------------------------------------------------------------------- party side


Step = Callable[[Party, Any, Any, Any, SecretKVCache | None], Any]


def step_function(cfg: ModelConfig, output: str) -> tuple[Step, bool]:
    """The parties' computation for one step, and whether steps carry public metadata (BERT masks)."""
    if not cfg.causal:
        if output not in ENCODE_OUTPUTS:
            raise RequestError(f"unknown encoder output {output!r}; choose from {', '.join(ENCODE_OUTPUTS)}")
        return _encode_step(output), True
    if output not in DECODE_OUTPUTS:
        raise RequestError(f"unknown decoder output {output!r}; choose from {', '.join(DECODE_OUTPUTS)}")
    last_only = output == "last"

    def step(party: Party, model, onehot, meta, cache: SecretKVCache | None) -> Any:
        return model.forward(party, onehot, cache, last_only=last_only)

    return step, False


def _encode_step(output: str) -> Step:
    def step(party: Party, model: bert.SecureBert, onehot, meta, cache) -> Any:
        if not isinstance(meta, torch.Tensor) or meta.shape != (2, *onehot.shape[:2]):
            raise RequestError(f"{party.name}: malformed step metadata from the client")
        mask, types = meta[0], meta[1]
        if output == "logits":
            if model.classifier is None:
                raise RequestError("this model has no classification head")
            return model.classify(party, onehot, mask, types)
        h = model.hidden(party, onehot, mask, types)
        return h if output == "hidden" else model.mean_pool(party, h, mask)

    return step


@dataclass(frozen=True)
class ServedStep:
    """What one party measured of one step."""

    seconds: float
    stats: CommStats
    recording: trace.Recording | None


MAX_ROWS = 64  # default: the most rows (sequences) one step may carry
MAX_INPUT_BYTES = 1 << 30  # default: the most memory one step's token shares may take once expanded


@dataclass(frozen=True)
class StepLimits:
    """What one step of a session may declare, checked before its token shares are expanded: how many rows
    (sequences), and how much memory the shares take (two ring components of 8 bytes per one-hot element)."""

    max_rows: int = MAX_ROWS
    max_input_bytes: int = MAX_INPUT_BYTES

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.max_input_bytes < 1:
            raise ValueError(f"step limits must be >= 1, got {self}")


def check_tokens(cfg: ModelConfig, shape: tuple[int, ...], cache: SecretKVCache | None,
                 limits: StepLimits = StepLimits()) -> None:
    """RequestError unless `shape` is that of (B, T, V) token shares of this vocabulary that fit after the cached
    positions and within `limits` (called on the declared shape, before anything is expanded)."""
    shape = tuple(shape)
    if len(shape) != 3 or shape[-1] != cfg.vocab_size or shape[0] < 1 or shape[1] < 1:
        raise RequestError(f"token one-hots must be (B, T, {cfg.vocab_size}), got {shape}")
    seen = cache.length if cache is not None else 0
    if seen + shape[1] > cfg.max_positions:
        raise RequestError(f"{seen} cached + {shape[1]} new positions exceed max_positions={cfg.max_positions}")
    if shape[0] > limits.max_rows:
        raise RequestError(f"a step of {shape[0]} rows exceeds this session's limit of {limits.max_rows} rows")
    size = 2 * 8 * shape[0] * shape[1] * shape[2]
    if size > limits.max_input_bytes:
        raise RequestError(f"a step of {shape[0]} x {shape[1]} tokens takes {size} bytes as shares, over this "
                           f"session's limit of {limits.max_input_bytes} bytes")


# Runs one checked step: (token shares, metadata, cache) -> the cache to keep; it opens the step's output to the
# client alone (reveal_to_owner), nothing else.
StepRunner = Callable[[Any, Any, SecretKVCache | None], SecretKVCache | None]


def serve_steps(party: Party, cfg: ModelConfig, with_meta: bool, run: StepRunner, *, client: str = CLIENT,
                limits: StepLimits = StepLimits(), witness: reveal.Witness | None = None) -> None:
    """The party's side of the step protocol: say ready, then answer the client's control messages until it says
    stop; `reset` starts a new sequence (empty cache), `step` receives the step's metadata (with `with_meta`) and token
    shares, checked (their declared shapes, against the model and `limits`) before they are expanded, and hands them
    to `run`. At stop, the `witness` (the one `run` opens outputs with) forwards its last vouchers to the client."""
    party.channel.send(client, b"ready", "ready")
    cache = SecretKVCache.empty(cfg.n_layers) if cfg.causal else None
    while True:
        ctrl = party.channel.recv(client, "ctrl")
        if ctrl == b"stop":
            if witness is not None:
                witness.finish(party)
            return
        if ctrl == b"reset":  # a new sequence: forget the cached keys and values
            cache = SecretKVCache.empty(cfg.n_layers) if cfg.causal else None
            continue
        if ctrl != b"step":
            raise RequestError(f"{party.name}: unexpected control message from the client")
        meta = party.channel.recv(client, "meta") if with_meta else None
        onehot = sharing.receive_input(party, client, "tokens",
                                       check=lambda shape: check_tokens(cfg, shape, cache, limits))
        if witness is not None:
            witness.collect(party)
        cache = run(onehot, meta, cache)


def serve(party: Party, model: Any, step: Step, with_meta: bool, *, client: str = CLIENT,
          traced: bool = False, limits: StepLimits = StepLimits()) -> list[ServedStep]:
    """Serve the client's steps on `model` until it says stop, opening each step's output to the client alone (each
    step within `limits`); returns what each step cost this party."""
    steps: list[ServedStep] = []
    witness = reveal.Witness(client)

    def run(onehot: Any, meta: Any, cache: SecretKVCache | None) -> SecretKVCache | None:
        with trace.recording() if traced else contextlib.nullcontext() as rec:
            start, before = time.perf_counter(), party.channel.stats.snapshot()
            out = step(party, model, onehot, meta, cache)  # appends to the cache in place
            with trace.op(party, "output"):
                reveal.reveal_to_owner(party, out, client, tag="output", witness=witness)
            steps.append(ServedStep(time.perf_counter() - start, party.channel.stats.since(before), rec))
        return cache

    serve_steps(party, model.cfg, with_meta, run, client=client, limits=limits, witness=witness)
    return steps


# ---------------------------------------------------------------------------------------------------- client side


ClientSteps = list[tuple[float, int]]  # per step: client-observed seconds, positions processed


@dataclass(frozen=True)
class TokenIO:
    """How a client's tokens go in and outputs come back: secret shares with three parties, or in the clear; `fxp`
    is the fixed point the parties compute in (a hosted model's precision), which the client decodes outputs with;
    `fixed_steps`: a generation sends exactly its budget of decode steps, whatever tokens are sampled (those after
    every row's end-of-sequence are computed and discarded), so their number does not reveal the output's length,
    at the cost of the discarded steps' full compute and traffic."""

    secret: bool = True
    fxp: FixedPoint = field(default_factory=FixedPoint)
    fixed_steps: bool = False

    @property
    def parties(self) -> tuple[str, ...]:
        return PARTY_NAMES if self.secret else (PUBLIC_WORKER,)

    def engine(self) -> EngineConfig:
        """The client's engine configuration for this session (its fixed point)."""
        return EngineConfig(fxp=self.fxp)

    def send_tokens(self, channel: Channel, cfg: ModelConfig, config: EngineConfig, ids: torch.Tensor) -> None:
        if self.secret:  # one-hot rows as fresh shares
            sharing.send_input(channel, one_hot(ids, cfg.vocab_size).to(config.torch_device), "tokens")
        else:
            channel.send(PUBLIC_WORKER, ids.to(torch.int64).contiguous(), "tokens")

    def receive_output(self, channel: Channel, config: EngineConfig) -> torch.Tensor:
        if self.secret:  # only the client reconstructs, each component checked against its second copy
            check = _CHECKS.get(channel)
            return config.fxp.decode(reveal.reveal_at_owner(channel, tag="output", check=check).cpu())
        out = channel.recv(PUBLIC_WORKER, "output")
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            raise CommError("client: malformed output from the worker")
        return out.to(torch.float64)


SECRET, PUBLIC = TokenIO(secret=True), TokenIO(secret=False)


# The output cross-check of each secret session's client channel: made by wait_ready, used by every step of the
# session (whatever TokenIO wraps the exchange), weighed and dropped by stop.
_CHECKS: weakref.WeakKeyDictionary[Channel, reveal.OutputCheck] = weakref.WeakKeyDictionary()


def wait_ready(channel: Channel, io: TokenIO = SECRET) -> None:
    """Client: wait until every party has its model ready; a secret session's outputs are cross-checked from now."""
    for p in io.parties:
        if channel.recv(p, "ready") != b"ready":
            raise CommError(f"client: {p} did not report ready")
    if io.secret:
        _CHECKS[channel] = reveal.OutputCheck(io.parties)


def client_step(channel: Channel, cfg: ModelConfig, config: EngineConfig, ids: torch.Tensor,
                meta: torch.Tensor | None = None, io: TokenIO = SECRET) -> tuple[torch.Tensor, float]:
    """Client: one step's control message, public metadata and tokens (and, on the first, each party's voucher key);
    returns the output (cross-checked, in a secret session) and the step's time."""
    start = time.perf_counter()
    for p in io.parties:
        channel.send(p, b"step", "ctrl")
        if meta is not None:
            channel.send(p, meta, "meta")
    io.send_tokens(channel, cfg, config, ids)
    check = _CHECKS.get(channel)
    if check is not None:
        check.send_keys(channel)
    out = io.receive_output(channel, config)
    return out, time.perf_counter() - start


def stop(channel: Channel, io: TokenIO = SECRET) -> None:
    """Client: end the session; a secret one's client weighs the vouchers the parties forward (OutputMismatch if
    one contradicts an output)."""
    for p in io.parties:
        channel.send(p, b"stop", "ctrl")
    check = _CHECKS.pop(channel, None)
    if check is not None:
        check.finish(channel)


@contextlib.contextmanager
def _settling(channel: Channel, io: TokenIO) -> Iterator[None]:
    """Client: on an output whose copies disagree, stop the session at once and raise the verdict the vouchers
    give (which names the deviating party where they can)."""
    try:
        yield
    except reveal.OutputMismatch as exc:
        if exc.settled or channel not in _CHECKS:
            raise
        stop(channel, io)  # raises the settled OutputMismatch
        raise


def bert_meta(ids: torch.Tensor, attention_mask: torch.Tensor | None, token_type_ids: torch.Tensor | None
              ) -> torch.Tensor:
    """The public metadata of a BERT step: (2, B, T) int64 = padding mask and token types."""
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask
    types = torch.zeros_like(ids) if token_type_ids is None else token_type_ids
    return torch.stack([mask.long(), types.long()])


def client_encode(channel: Channel, cfg: ModelConfig, config: EngineConfig, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                  output: str = "embedding", io: TokenIO = SECRET) -> tuple[torch.Tensor, ClientSteps]:
    """Client: one BERT forward; "embedding" is mean-pooled then L2-normalised here, at the client."""
    wait_ready(channel, io)
    meta = bert_meta(input_ids, attention_mask, token_type_ids)
    with _settling(channel, io):
        out, seconds = client_step(channel, cfg, config, input_ids, meta, io)
    stop(channel, io)
    if output == "embedding":
        out = out / torch.clamp(torch.linalg.vector_norm(out, dim=-1, keepdim=True), min=1e-12)
    return out, [(seconds, int(input_ids.numel()))]


def client_logits(channel: Channel, cfg: ModelConfig, config: EngineConfig, input_ids: torch.Tensor,
                  chunks: tuple[int, ...], io: TokenIO = SECRET) -> tuple[torch.Tensor, ClientSteps]:
    """Client: decoder logits of every position, fed in `chunks` through the parties' KV cache."""
    wait_ready(channel, io)
    outs, times, start = [], [], 0
    with _settling(channel, io):
        for n in chunks:
            out, seconds = client_step(channel, cfg, config, input_ids[:, start:start + n], io=io)
            outs.append(out)
            times.append((seconds, int(input_ids.shape[0] * n)))
            start += n
    stop(channel, io)
    return torch.cat(outs, dim=1), times


@dataclass(frozen=True)
class Generation:
    """What the client got from a secure generation: new token ids and each step's last-position logits."""

    tokens: torch.Tensor  # (B, n) int64
    logits: torch.Tensor  # (n, B, V) float64: the logits each token was chosen from


OnToken = Callable[[int, torch.Tensor], None]  # (prompt index, (B,) token ids) after each sampled step


@dataclass(frozen=True)
class Decoding:
    """How a client decodes: its sampling, end-of-sequence ids, and whether it runs a fixed budget of steps
    (`TokenIO.fixed_steps`)."""

    sampling: SamplingConfig
    eos: torch.Tensor
    fixed_steps: bool = False


def _generate(channel: Channel, cfg: ModelConfig, config: EngineConfig, prompt_ids: torch.Tensor,
              max_new_tokens: int, decoding: Decoding, gen: torch.Generator,
              on_token: Callable[[torch.Tensor], None] | None, io: TokenIO) -> tuple[Generation, ClientSteps]:
    """Client: one generation (prefill, then one token per step) against parties with an empty cache."""
    ids, tokens, logits, times = prompt_ids, [], [], []
    done = torch.zeros(prompt_ids.shape[0], dtype=torch.bool)
    for _ in range(max_new_tokens):
        out, seconds = client_step(channel, cfg, config, ids, io=io)
        times.append((seconds, int(ids.numel())))
        if bool(done.all()):  # a fixed budget's step past the end: computed, checked and discarded
            continue
        last = out[:, -1]  # (B, V)
        token = torch.tensor([next_token(row, decoding.sampling, gen) for row in last], dtype=torch.int64)
        if tokens:
            token = torch.where(done, tokens[-1], token)
        tokens.append(token)
        logits.append(last)
        if on_token is not None:
            on_token(token)
        done |= torch.isin(token, decoding.eos)
        if bool(done.all()) and not decoding.fixed_steps:
            break
        ids = token[:, None]
    return Generation(torch.stack(tokens, dim=1), torch.stack(logits)), times


def check_generation_request(cfg: ModelConfig, prompts: list[torch.Tensor], max_new_tokens: int) -> None:
    """Raise RequestError unless the prompts and length suit this decoder."""
    if not cfg.causal:
        raise RequestError("secure generation is for decoders (gpt2, llama)")
    if max_new_tokens < 1:
        raise RequestError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not prompts or any(p.dim() != 2 or p.shape[1] == 0 for p in prompts):
        raise RequestError("prompts must be non-empty (B, T) token id tensors")
    for p in prompts:
        if p.shape[1] + max_new_tokens - 1 > cfg.max_positions:
            raise RequestError(f"prompt of {p.shape[1]} tokens + {max_new_tokens} new exceeds max_positions={cfg.max_positions}")
        if int(p.min()) < 0 or int(p.max()) >= cfg.vocab_size:
            raise RequestError(f"token ids must lie in [0, {cfg.vocab_size})")


def client_generate_many(channel: Channel, cfg: ModelConfig, config: EngineConfig, prompts: list[torch.Tensor],
                         max_new_tokens: int, sampling: SamplingConfig, eos: torch.Tensor,
                         on_token: OnToken | None = None, io: TokenIO = SECRET
                         ) -> tuple[list[Generation], ClientSteps]:
    """Client: several generations in one session (b"reset" clears the parties' cache between prompts); with
    `io.fixed_steps`, each runs exactly max_new_tokens forwards whatever tokens are sampled."""
    wait_ready(channel, io)
    gen = sampling.generator()
    decoding = Decoding(sampling, eos, io.fixed_steps)
    results, times = [], []
    with _settling(channel, io):
        for i, prompt in enumerate(prompts):
            if i:
                for p in io.parties:
                    channel.send(p, b"reset", "ctrl")
            callback = None if on_token is None else (lambda t, i=i: on_token(i, t))
            result, t = _generate(channel, cfg, config, prompt, max_new_tokens, decoding, gen, callback, io)
            results.append(result)
            times.extend(t)
    stop(channel, io)
    return results, times
