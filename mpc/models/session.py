"""Whole secure sessions on the in-process runtime: model owner, client and three parties.

The model owner publishes `owner_params(cfg, params)` (the checkpoint with public constants pre-folded) with
`weights.publish`; the parties load their shares into a family model (bert.py, gpt2.py, llama.py). The client
tokenizes locally, and for each step:
  1. sends a control message b"step" to every party (public: that a step happens), and for BERT the public padding
     mask and token types (they reveal the sequence lengths, as the shapes do);
  2. shares the one-hot rows of its tokens (ring 0/1 integers) with `sharing.send_input`;
  3. receives the output shares (`reveal.reveal_to_owner` on the parties' side) and alone reconstructs them with
     `reveal.reveal_at_owner`: only the last position's logits during generation;
  4. generation: samples the next token locally (`sampling.next_token`) and repeats with that one token, the
     parties extending their secret KV cache; b"reset" starts a new sequence (empty cache) in the same session,
     b"stop" ends the session.
Entry points: `secure_encode` (BERT: embeddings, hidden states, classifier logits), `secure_logits` (decoders: every
position's logits, optionally fed through the cache in chunks), `secure_generate` / `secure_generate_many`.
Figures: each step's client-observed wall time (control message to reconstructed output), the parties' forward time,
rounds and bytes sent per party in the step, and, with `traced`, a per-party op breakdown (trace.py).
Weight loading and the parties' set-up happen before the client's clock starts (the parties send b"ready").
"""

from __future__ import annotations

import contextlib
import ctypes
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .. import runtime
from ..approx.profile import ACCURATE, ApproxProfile
from ..comm import Channel, CommError
from ..nn.embedding import one_hot
from ..party import PARTY_NAMES, EngineConfig, Party
from ..protocols import reveal, sharing
from . import bert, gpt2, llama, trace, weights
from .blocks import SecretKVCache
from .checkpoint import ModelConfig
from .sampling import SamplingConfig, next_token

_FAMILIES = {"bert": (bert.SecureBert, bert.owner_params), "gpt2": (gpt2.SecureGPT2, gpt2.owner_params),
             "llama": (llama.SecureLlama, llama.owner_params)}
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


def build_model(cfg: ModelConfig, shares: dict, profile: ApproxProfile):
    """The family's secure model on one party's weight shares (the dict is consumed)."""
    return _FAMILIES[cfg.arch][0](cfg, shares, profile)


def owner_params(cfg: ModelConfig, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the model owner publishes: the checkpoint with the family's public constants folded in."""
    return _FAMILIES[cfg.arch][1](cfg, params)


# ---------------------------------------------------------------------------------------------------- plumbing


def release_memory() -> None:
    """Return freed heap memory to the OS (glibc's malloc_trim; a no-op elsewhere).

    The simulated parties are threads: each frees gigabytes of transient weight shares into its own malloc arena,
    which glibc keeps, so without this the process's memory grew by ~2.5 GB per SmolLM2 session (measured)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _party_program(cfg: ModelConfig, profile: ApproxProfile, step: Callable, with_meta: bool, traced: bool):
    """The parties' side: load weights, say ready, then serve steps until the client says stop."""

    def program(party: Party):
        t0 = time.perf_counter()
        model = build_model(cfg, weights.receive(party, runtime.OWNER), profile)
        release_memory()
        load = time.perf_counter() - t0
        party.channel.send(runtime.CLIENT, b"ready", "ready")
        cache = SecretKVCache.empty(cfg.n_layers) if cfg.causal else None
        steps: list[tuple[float, Any, trace.Recording | None]] = []
        while True:
            ctrl = party.channel.recv(runtime.CLIENT, "ctrl")
            if ctrl == b"stop":
                break
            if ctrl == b"reset":  # a new sequence: forget the cached keys and values
                cache = SecretKVCache.empty(cfg.n_layers) if cfg.causal else None
                continue
            if ctrl != b"step":
                raise CommError(f"{party.name}: unexpected control message from the client")
            meta = party.channel.recv(runtime.CLIENT, "meta") if with_meta else None
            onehot = sharing.receive_input(party, runtime.CLIENT, "tokens")
            with trace.recording() if traced else contextlib.nullcontext() as rec:
                start, before = time.perf_counter(), party.channel.stats.snapshot()
                out = step(party, model, onehot, meta, cache)
                with trace.op(party, "output"):
                    reveal.reveal_to_owner(party, out, runtime.CLIENT, tag="output")
                steps.append((time.perf_counter() - start, party.channel.stats.since(before), rec))
        return load, steps

    return program


def _wait_ready(channel: Channel) -> None:
    """Client: wait until every party has loaded its weight shares."""
    for p in PARTY_NAMES:
        if channel.recv(p, "ready") != b"ready":
            raise CommError(f"client: {p} did not report ready")


def _client_step(channel: Channel, cfg: ModelConfig, config: EngineConfig, ids: torch.Tensor,
                 meta: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """Client: one step's control message, public metadata and one-hot shares; returns the opened output, time."""
    start = time.perf_counter()
    for p in PARTY_NAMES:
        channel.send(p, b"step", "ctrl")
        if meta is not None:
            channel.send(p, meta, "meta")
    sharing.send_input(channel, one_hot(ids, cfg.vocab_size).to(config.torch_device), "tokens")
    out = config.fxp.decode(reveal.reveal_at_owner(channel, tag="output").cpu())
    return out, time.perf_counter() - start


def _stop(channel: Channel) -> None:
    for p in PARTY_NAMES:
        channel.send(p, b"stop", "ctrl")


def _run(cfg: ModelConfig, params: dict[str, torch.Tensor], client: Callable[[Channel], Any], step: Callable,
         *, with_meta: bool, profile: ApproxProfile, config: EngineConfig | None, traced: bool
         ) -> tuple[Any, SessionReport]:
    """Run one session. `client(channel)` returns (result, [(seconds, tokens) per step])."""
    config = config or EngineConfig()
    published = owner_params(cfg, params)
    ctx = trace.instrument() if traced else contextlib.nullcontext()
    with ctx:
        sim = runtime.simulate(_party_program(cfg, profile, step, with_meta, traced),
                               owner=lambda ch: weights.publish(ch, published, config.fxp), client=client,
                               config=config, timeout_s=_TIMEOUT_S)
    release_memory()
    result, client_steps = sim.client_output
    steps = []
    for i, (seconds, tokens) in enumerate(client_steps):
        party_steps = [o[1][i] for o in sim.outputs]
        steps.append(StepReport(seconds=seconds, party_seconds=max(s[0] for s in party_steps),
                                rounds=max(s[1].rounds for s in party_steps),
                                bytes_per_party=tuple(s[1].bytes_sent for s in party_steps),  # type: ignore[arg-type]
                                tokens=tokens, recordings=tuple(s[2] for s in party_steps)))
    return result, SessionReport(steps, max(o[0] for o in sim.outputs))


# ---------------------------------------------------------------------------------------------------- BERT


def _bert_meta(ids: torch.Tensor, attention_mask: torch.Tensor | None, token_type_ids: torch.Tensor | None
               ) -> torch.Tensor:
    """The public metadata of a BERT step: (2, B, T) int64 = padding mask and token types."""
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask
    types = torch.zeros_like(ids) if token_type_ids is None else token_type_ids
    return torch.stack([mask.long(), types.long()])


def secure_encode(cfg: ModelConfig, params: dict[str, torch.Tensor], input_ids: torch.Tensor,
                  attention_mask: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None, *,
                  output: str = "embedding", profile: ApproxProfile = ACCURATE, config: EngineConfig | None = None,
                  traced: bool = False) -> tuple[torch.Tensor, SessionReport]:
    """One secure BERT forward; the client gets `output`: "embedding" (mean-pooled then L2-normalised, (B, C)),
    "pooled" (mean-pooled, unnormalised), "hidden" (last hidden states (B, T, C)) or "logits" (classifier)."""
    if cfg.arch != "bert":
        raise ValueError(f"secure_encode needs a BERT config, got {cfg.arch}")
    if output not in ("embedding", "pooled", "hidden", "logits"):
        raise ValueError(f"unknown output {output!r}")
    if input_ids.dim() != 2:
        raise ValueError("input_ids must be (B, T)")
    meta = _bert_meta(input_ids, attention_mask, token_type_ids)

    def step(party: Party, model: bert.SecureBert, onehot, m: torch.Tensor, cache) -> Any:
        if not isinstance(m, torch.Tensor) or m.shape != (2, *onehot.shape[:2]):
            raise CommError(f"{party.name}: malformed step metadata from the client")
        mask, types = m[0], m[1]
        if output == "logits":
            return model.classify(party, onehot, mask, types)
        h = model.hidden(party, onehot, mask, types)
        return h if output == "hidden" else model.mean_pool(party, h, mask)

    def client(channel: Channel):
        _wait_ready(channel)
        out, seconds = _client_step(channel, cfg, config or EngineConfig(), input_ids, meta)
        _stop(channel)
        if output == "embedding":
            out = out / torch.clamp(torch.linalg.vector_norm(out, dim=-1, keepdim=True), min=1e-12)
        return out, [(seconds, int(input_ids.numel()))]

    return _run(cfg, params, client, step, with_meta=True, profile=profile, config=config, traced=traced)


# ---------------------------------------------------------------------------------------------------- decoders


def _decoder_step(last_only: bool) -> Callable:
    def step(party: Party, model, onehot, meta, cache: SecretKVCache) -> Any:
        return model.forward(party, onehot, cache, last_only=last_only)

    return step


def secure_logits(cfg: ModelConfig, params: dict[str, torch.Tensor], input_ids: torch.Tensor, *,
                  chunks: tuple[int, ...] | None = None, profile: ApproxProfile = ACCURATE,
                  config: EngineConfig | None = None, traced: bool = False) -> tuple[torch.Tensor, SessionReport]:
    """Decoder logits (B, T, V) for every position, opened to the client. `chunks` (lengths summing to T) feeds the
    tokens in several steps through the secret KV cache (e.g. (T - 2, 1, 1): prefill then two decode steps)."""
    if not cfg.causal:
        raise ValueError("secure_logits is for decoders (gpt2, llama)")
    chunks = chunks or (input_ids.shape[1],)
    if sum(chunks) != input_ids.shape[1] or min(chunks) < 1:
        raise ValueError(f"chunks {chunks} must be positive and sum to T={input_ids.shape[1]}")

    def client(channel: Channel):
        _wait_ready(channel)
        outs, times, start = [], [], 0
        for n in chunks:
            out, seconds = _client_step(channel, cfg, config or EngineConfig(), input_ids[:, start:start + n])
            outs.append(out)
            times.append((seconds, int(input_ids.shape[0] * n)))
            start += n
        _stop(channel)
        return torch.cat(outs, dim=1), times

    return _run(cfg, params, client, _decoder_step(False), with_meta=False, profile=profile, config=config,
                traced=traced)


@dataclass(frozen=True)
class Generation:
    """What the client got from a secure generation: new token ids and each step's last-position logits."""

    tokens: torch.Tensor  # (B, n) int64
    logits: torch.Tensor  # (n, B, V) float64: the logits each token was chosen from


def _generate(channel: Channel, cfg: ModelConfig, config: EngineConfig, prompt_ids: torch.Tensor,
              max_new_tokens: int, sampling: SamplingConfig, gen: torch.Generator, eos: torch.Tensor
              ) -> tuple[Generation, list[tuple[float, int]]]:
    """Client: one generation (prefill, then one token per step) against parties with an empty cache."""
    ids, tokens, logits, times = prompt_ids, [], [], []
    done = torch.zeros(prompt_ids.shape[0], dtype=torch.bool)
    for _ in range(max_new_tokens):
        out, seconds = _client_step(channel, cfg, config, ids)
        times.append((seconds, int(ids.numel())))
        last = out[:, -1]  # (B, V)
        token = torch.tensor([next_token(row, sampling, gen) for row in last], dtype=torch.int64)
        if tokens:
            token = torch.where(done, tokens[-1], token)
        tokens.append(token)
        logits.append(last)
        done |= torch.isin(token, eos)
        if bool(done.all()):
            break
        ids = token[:, None]
    return Generation(torch.stack(tokens, dim=1), torch.stack(logits)), times


def secure_generate_many(cfg: ModelConfig, params: dict[str, torch.Tensor], prompts: list[torch.Tensor],
                         max_new_tokens: int, *, sampling: SamplingConfig = SamplingConfig(),
                         eos_token_ids: tuple[int, ...] | None = None, profile: ApproxProfile = ACCURATE,
                         config: EngineConfig | None = None, traced: bool = False
                         ) -> tuple[list[Generation], SessionReport]:
    """Several generations in one session (the weights are published once; b"reset" clears the cache between
    prompts). Each prompt (B, T): prefill, then one token per step with the parties' secret KV cache; the client
    samples each token locally from the opened last-position logits. Rows that emitted an EOS repeat it, and a
    generation stops when every row has (as plaintext.greedy_generate does); at most max_new_tokens forwards."""
    if not cfg.causal:
        raise ValueError("secure generation is for decoders (gpt2, llama)")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if any(p.dim() != 2 or p.shape[1] == 0 for p in prompts) or not prompts:
        raise ValueError("prompts must be non-empty (B, T) token id tensors")
    eos = torch.tensor(cfg.eos_token_ids if eos_token_ids is None else eos_token_ids, dtype=torch.int64)
    engine = config or EngineConfig()

    def client(channel: Channel):
        _wait_ready(channel)
        gen = sampling.generator()
        results, times = [], []
        for i, prompt in enumerate(prompts):
            if i:
                for p in PARTY_NAMES:
                    channel.send(p, b"reset", "ctrl")
            result, t = _generate(channel, cfg, engine, prompt, max_new_tokens, sampling, gen, eos)
            results.append(result)
            times.extend(t)
        _stop(channel)
        return results, times

    return _run(cfg, params, client, _decoder_step(True), with_meta=False, profile=profile, config=config,
                traced=traced)


def secure_generate(cfg: ModelConfig, params: dict[str, torch.Tensor], prompt_ids: torch.Tensor,
                    max_new_tokens: int, **kwargs: Any) -> tuple[Generation, SessionReport]:
    """One generation (see `secure_generate_many` for the flow and the keyword arguments)."""
    results, report = secure_generate_many(cfg, params, [prompt_ids], max_new_tokens, **kwargs)
    return results[0], report
