"""Whole secure sessions on the in-process runtime: model owner, client and three parties as threads.

The model owner publishes `owner_params(cfg, params)` (the checkpoint with public constants pre-folded) with
`weights.publish`; the parties load their shares into a family model (bert.py, gpt2.py, llama.py) and serve the
client's steps with the protocol in serving.py (the same one the gRPC nodes speak).
Entry points: `secure_encode` (BERT: embeddings, hidden states, classifier logits), `secure_logits` (decoders: every
position's logits, optionally fed through the cache in chunks), `secure_generate` / `secure_generate_many`.
Figures: each step's client-observed wall time (control message to reconstructed output), the parties' forward time,
rounds and bytes sent per party in the step, and, with `traced`, a per-party op breakdown (trace.py). Every entry
point takes `link=LinkModel(...)` to simulate link latency and bandwidth between the parties and the client (the
owner's one-time weight publishing is not shaped), and `public_weights=True` for open models
(`SecureStrategy(public_weights=True)`): the owner sends the folded parameters in the clear to each party
(`weights.publish_public`), the parties build the same models on public ring weights (local matmuls, blocks.py),
and the client's tokens and every activation stay secret shares. `recorder=Recorder()` (comm/audit.py, a leakage
audit) records every message each party receives.
Weight loading and the parties' set-up happen before the client's clock starts (the parties send b"ready").
"""

from __future__ import annotations

import contextlib
import ctypes
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from secureinfer.models.config import ModelConfig
from secureinfer.models.sampling import SamplingConfig

from ..approx.profile import ACCURATE, ApproxProfile
from ..comm.audit import Recorder
from .. import runtime
from ..comm import Channel, LinkModel
from ..party import PARTY_NAMES, EngineConfig, Party
from . import serving, trace, weights
from .serving import Generation, build_model, owner_params

__all__ = ["Generation", "SessionReport", "StepReport", "build_model", "owner_params", "secure_encode",
           "secure_generate", "secure_generate_many", "secure_logits"]

_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class StepReport:
    """One step (one forward) of a session."""

    seconds: float  # client-observed: control message sent -> output reconstructed
    party_seconds: float  # slowest party's forward (after its input arrived) including sending its output shares
    rounds: int  # critical-path rounds (max over parties)
    bytes_per_party: tuple[int, int, int]
    tokens: int  # positions processed
    recordings: tuple[trace.Recording | None, ...] = ()  # per party, when traced


@dataclass
class SessionReport:
    """Every step of a session and the parties' load time (weights received and prepared)."""

    steps: list[StepReport]
    load_seconds: float

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.steps)

    @property
    def rounds(self) -> int:
        return sum(s.rounds for s in self.steps)

    @property
    def bytes_per_party(self) -> tuple[int, int, int]:
        return tuple(sum(s.bytes_per_party[i] for s in self.steps) for i in range(3))  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------- plumbing


def release_memory() -> None:
    """Return freed heap memory to the OS (glibc's malloc_trim; a no-op elsewhere).

    The simulated parties are threads: each frees gigabytes of transient weight shares into its own malloc arena,
    which glibc keeps, so without this the process's memory grew by ~2.5 GB per SmolLM2 session (measured)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _party_program(cfg: ModelConfig, profile: ApproxProfile, step: serving.Step, with_meta: bool, traced: bool,
                   public_weights: bool = False):
    """The parties' side: load the weights (shares, or public tensors), then serve steps until the client says stop."""

    def program(party: Party):
        t0 = time.perf_counter()
        if public_weights:
            received = weights.receive_public(party.channel, runtime.OWNER)
        else:
            received = weights.receive(party, runtime.OWNER)
        model = build_model(cfg, received, profile, config=party.config)
        del received
        release_memory()
        load = time.perf_counter() - t0
        served = serving.serve(party, model, step, with_meta, client=runtime.CLIENT, traced=traced)
        return load, served

    return program


def _run(cfg: ModelConfig, params: dict[str, torch.Tensor], client: Callable[[Channel], Any], output: str,
         *, profile: ApproxProfile, config: EngineConfig | None, traced: bool, link: LinkModel | None = None,
         public_weights: bool = False, recorder: Recorder | None = None) -> tuple[Any, SessionReport]:
    """Run one session. `client(channel)` returns (result, [(seconds, tokens) per step]). `link` simulates every
    link's latency and bandwidth (comm/memory.py) except the owner's (publishing is set-up). `public_weights`: the
    owner sends the (folded) parameters in the clear to each party instead of sharing them."""
    config = config or EngineConfig()
    step, with_meta = serving.step_function(cfg, output)
    published = owner_params(cfg, params)

    def owner(channel: Channel) -> int:
        if public_weights:
            return sum(weights.publish_public(channel, published, p) for p in PARTY_NAMES)
        return weights.publish(channel, published, config.fxp)

    ctx = trace.instrument() if traced else contextlib.nullcontext()
    with ctx:
        sim = runtime.simulate(_party_program(cfg, profile, step, with_meta, traced, public_weights),
                               owner=owner, client=client,
                               config=config, link=link, timeout_s=_TIMEOUT_S, recorder=recorder)
    release_memory()
    result, client_steps = sim.client_output
    steps = []
    for i, (seconds, tokens) in enumerate(client_steps):
        party_steps = [o[1][i] for o in sim.outputs]
        steps.append(StepReport(seconds=seconds, party_seconds=max(s.seconds for s in party_steps),
                                rounds=max(s.stats.rounds for s in party_steps),
                                bytes_per_party=tuple(s.stats.bytes_sent for s in party_steps),  # type: ignore[arg-type]
                                tokens=tokens, recordings=tuple(s.recording for s in party_steps)))
    return result, SessionReport(steps, max(o[0] for o in sim.outputs))


# ---------------------------------------------------------------------------------------------------- entry points


def secure_encode(cfg: ModelConfig, params: dict[str, torch.Tensor], input_ids: torch.Tensor,
                  attention_mask: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None, *,
                  output: str = "embedding", profile: ApproxProfile = ACCURATE, config: EngineConfig | None = None,
                  traced: bool = False, link: LinkModel | None = None, public_weights: bool = False,
                  recorder: Recorder | None = None) -> tuple[torch.Tensor, SessionReport]:
    """One secure BERT forward; the client gets `output`: "embedding" (mean-pooled then L2-normalised, (B, C)),
    "pooled" (mean-pooled, unnormalised), "hidden" (last hidden states (B, T, C)) or "logits" (classifier).
    `public_weights` (open models): the weights are in the clear at every party, only activations are secret."""
    if cfg.arch != "bert":
        raise ValueError(f"secure_encode needs a BERT config, got {cfg.arch}")
    if output not in serving.ENCODE_OUTPUTS:
        raise ValueError(f"unknown output {output!r}")
    if input_ids.dim() != 2:
        raise ValueError("input_ids must be (B, T)")
    engine = config or EngineConfig()

    def client(channel: Channel):
        return serving.client_encode(channel, cfg, engine, input_ids, attention_mask, token_type_ids, output)

    return _run(cfg, params, client, output, profile=profile, config=config, traced=traced, link=link,
                public_weights=public_weights, recorder=recorder)


def secure_logits(cfg: ModelConfig, params: dict[str, torch.Tensor], input_ids: torch.Tensor, *,
                  chunks: tuple[int, ...] | None = None, profile: ApproxProfile = ACCURATE,
                  config: EngineConfig | None = None, traced: bool = False, link: LinkModel | None = None,
                  public_weights: bool = False, recorder: Recorder | None = None
                  ) -> tuple[torch.Tensor, SessionReport]:
    """Decoder logits (B, T, V) for every position, opened to the client. `chunks` (lengths summing to T) feeds the
    tokens in several steps through the secret KV cache (e.g. (T - 2, 1, 1): prefill then two decode steps).
    `public_weights` as in `secure_encode`."""
    if not cfg.causal:
        raise ValueError("secure_logits is for decoders (gpt2, llama)")
    chunks = chunks or (input_ids.shape[1],)
    if sum(chunks) != input_ids.shape[1] or min(chunks) < 1:
        raise ValueError(f"chunks {chunks} must be positive and sum to T={input_ids.shape[1]}")
    engine = config or EngineConfig()

    def client(channel: Channel):
        return serving.client_logits(channel, cfg, engine, input_ids, chunks)

    return _run(cfg, params, client, "all", profile=profile, config=config, traced=traced, link=link,
                public_weights=public_weights, recorder=recorder)


def secure_generate_many(cfg: ModelConfig, params: dict[str, torch.Tensor], prompts: list[torch.Tensor],
                         max_new_tokens: int, *, sampling: SamplingConfig = SamplingConfig(),
                         eos_token_ids: tuple[int, ...] | None = None, profile: ApproxProfile = ACCURATE,
                         config: EngineConfig | None = None, traced: bool = False, link: LinkModel | None = None,
                         public_weights: bool = False, recorder: Recorder | None = None, fixed_steps: bool = False
                         ) -> tuple[list[Generation], SessionReport]:
    """Several generations in one session (the weights are published once; b"reset" clears the cache between
    prompts). Each prompt (B, T): prefill, then one token per step with the parties' secret KV cache; the client
    samples each token locally from the opened last-position logits. Rows that emitted an EOS repeat it, and a
    generation stops when every row has (as plaintext.greedy_generate does); at most max_new_tokens forwards, or
    exactly that many with `fixed_steps` (those past the end discarded, so the step count hides the output length).
    Every opened output is cross-checked (reveal.OutputMismatch names a party that altered its share)."""
    serving.check_generation_request(cfg, prompts, max_new_tokens)
    eos = torch.tensor(cfg.eos_token_ids if eos_token_ids is None else eos_token_ids, dtype=torch.int64)
    engine = config or EngineConfig()

    def client(channel: Channel):
        return serving.client_generate_many(channel, cfg, engine, prompts, max_new_tokens, sampling, eos,
                                            io=serving.TokenIO(fixed_steps=fixed_steps))

    return _run(cfg, params, client, "last", profile=profile, config=config, traced=traced, link=link,
                public_weights=public_weights, recorder=recorder)


def secure_generate(cfg: ModelConfig, params: dict[str, torch.Tensor], prompt_ids: torch.Tensor,
                    max_new_tokens: int, **kwargs: Any) -> tuple[Generation, SessionReport]:
    """One generation (see `secure_generate_many` for the flow and the keyword arguments)."""
    results, report = secure_generate_many(cfg, params, [prompt_ids], max_new_tokens, **kwargs)
    return results[0], report
