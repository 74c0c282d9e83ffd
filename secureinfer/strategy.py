"""Execution strategies: named, serializable configurations a node executes for one request.

A request runs either secure (three parties on secret shares) or plaintext (one worker in the clear); each mode has
its own knobs. Strategies travel as JSON (`to_json` / `from_json`) and are checked on construction. `misfit` is the
one check of whether a strategy may serve a request where it would run (`Hosting`): the selector filters its
candidates with it, the SDK its plans, and every node the strategy a request names.

    SecureStrategy(profile="lean", public_weights=True, device="cuda")
    PlaintextStrategy(precision="bf16", static_cache=True, cuda_graphs=True)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Union

from secureinfer.mpc.approx.profile import PROFILES as _APPROX_PROFILES
from secureinfer.mpc.ring import DEFAULT_FRAC_BITS

PROFILES = tuple(_APPROX_PROFILES)  # the engine's approximation profiles, by name
PRECISIONS = ("fp64", "fp32", "bf16", "fp16")
QUANTIZATIONS = ("none", "int8")
SPECULATION = ("none", "early_exit", "draft")
FRAC_BITS_RANGE = (12, 24)  # the fixed-point precisions a secure strategy (and a hosted model) may use


class StrategyError(ValueError):
    """A strategy that is malformed, or not allowed for the request it was chosen for."""


def _one_of(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise StrategyError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def _device(value: Any) -> None:
    if not isinstance(value, str) or not (value == "cpu" or value == "cuda" or value.startswith("cuda:")):
        raise StrategyError(f"device must be 'cpu', 'cuda' or 'cuda:N'; got {value!r}")


def check_frac_bits(value: Any) -> None:
    """StrategyError unless `value` is a fixed-point precision secure sessions may use (FRAC_BITS_RANGE)."""
    low, high = FRAC_BITS_RANGE
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise StrategyError(f"frac_bits must be an integer in [{low}, {high}]; got {value!r}")


@dataclass(frozen=True)
class SecureStrategy:
    """Three parties on replicated shares: approximation profile, fixed point, weight mode, batching, device."""

    profile: str = "accurate"
    frac_bits: int = DEFAULT_FRAC_BITS
    public_weights: bool = False  # open models only: weights in the clear at every party, activations secret
    batch_requests: bool = False  # concurrent requests to the same model share one MPC run
    device: str = "cpu"

    mode = "secure"

    def __post_init__(self) -> None:
        _one_of("profile", self.profile, PROFILES)
        check_frac_bits(self.frac_bits)
        _device(self.device)

    @property
    def name(self) -> str:
        extras = [f"f{self.frac_bits}"] + (["pubw"] if self.public_weights else []) + \
                 (["batched"] if self.batch_requests else [])
        return "-".join(["secure", self.profile, *extras, self.device.replace(":", "")])

    def session_options(self) -> dict[str, Any]:
        """Keyword arguments of the in-process sessions (session.secure_encode / secure_logits / secure_generate*)
        that execute this strategy: approximation profile, engine configuration (fractional bits, device) and weight
        mode. `batch_requests` is about how a node groups concurrent requests, not one session's options."""
        from secureinfer.mpc.approx import profile as profiles
        from secureinfer.mpc.party import EngineConfig
        from secureinfer.mpc.ring import FixedPoint

        return {"profile": profiles.get(self.profile),
                "config": EngineConfig(fxp=FixedPoint(self.frac_bits), device=self.device),
                "public_weights": self.public_weights}


@dataclass(frozen=True)
class PlaintextStrategy:
    """One worker in the clear: precision, weight quantization, KV cache, batching, graphs, speculative decoding."""

    precision: str = "fp32"
    quantization: str = "none"  # "int8": weight-only int8 with per-channel scales
    static_cache: bool = False  # preallocated KV buffers (needed for CUDA graphs)
    batch_requests: bool = False  # dynamic batching of concurrent requests on the worker
    cuda_graphs: bool = False  # capture the decode step (CUDA only, needs static_cache)
    compile: bool = False  # torch.compile the decode step
    speculation: str = "none"  # "early_exit" (draft = first layers of the same model) or "draft" (a smaller model)
    speculation_tokens: int = 4
    device: str = "cpu"

    mode = "plaintext"

    def __post_init__(self) -> None:
        _one_of("precision", self.precision, PRECISIONS)
        _one_of("quantization", self.quantization, QUANTIZATIONS)
        _one_of("speculation", self.speculation, SPECULATION)
        _device(self.device)
        if self.cuda_graphs and not self.device.startswith("cuda"):
            raise StrategyError("cuda_graphs needs a CUDA device")
        if self.cuda_graphs and not self.static_cache:
            raise StrategyError("cuda_graphs needs static_cache (graph replays need fixed buffers)")
        if self.precision == "fp16" and self.device == "cpu":
            raise StrategyError("fp16 matmuls are not supported on the CPU; use bf16 or fp32")
        if not isinstance(self.speculation_tokens, int) or not 1 <= self.speculation_tokens <= 16:
            raise StrategyError(f"speculation_tokens must be in [1, 16]; got {self.speculation_tokens!r}")

    @property
    def name(self) -> str:
        parts = ["plain", self.precision]
        parts += [self.quantization] if self.quantization != "none" else []
        parts += ["static"] if self.static_cache else []
        parts += ["batched"] if self.batch_requests else []
        parts += ["graphs"] if self.cuda_graphs else []
        parts += ["compiled"] if self.compile else []
        parts += [f"spec-{self.speculation}{self.speculation_tokens}"] if self.speculation != "none" else []
        return "-".join(parts + [self.device.replace(":", "")])


Strategy = Union[SecureStrategy, PlaintextStrategy]
_KINDS = {"secure": SecureStrategy, "plaintext": PlaintextStrategy}


def to_json(strategy: Strategy) -> str:
    """The strategy as a JSON object with its mode."""
    return json.dumps({"mode": strategy.mode, **dataclasses.asdict(strategy)}, sort_keys=True)


def from_json(text: str) -> Strategy:
    """Parse `to_json` output; raises StrategyError on anything else."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StrategyError(f"strategy is not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("mode") not in _KINDS:
        raise StrategyError("strategy must be a JSON object with mode 'secure' or 'plaintext'")
    kind = _KINDS[data.pop("mode")]
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise StrategyError(f"unknown {kind.mode} strategy fields: {unknown}")
    try:
        return kind(**data)
    except TypeError as exc:
        raise StrategyError(str(exc)) from exc


def check_allowed(strategy: Strategy, *, secret_prompt: bool, open_model: bool) -> None:
    """Refuse strategies the request may not use: plaintext for a secret prompt or a closed model, public weights
    for a closed model."""
    if isinstance(strategy, PlaintextStrategy):
        if secret_prompt:
            raise StrategyError("a request whose prompt is secret never runs in plaintext")
        if not open_model:
            raise StrategyError("a closed model's weights are secret: it runs only on a secure committee")
    elif strategy.public_weights and not open_model:
        raise StrategyError("public_weights is only for open models: this model's weights are secret")


@dataclass(frozen=True)
class Hosting:
    """Where a strategy would run, as far as `misfit` needs to know: a committee of secure parties or one plaintext
    worker, its nodes and their devices, and how it holds the model. None: not known here (not checked)."""

    secure: bool  # a secure committee (else a plaintext worker)
    node_ids: tuple[str, ...]
    devices: tuple[str, ...]  # each node's compute device ("cpu", "cuda", "cuda:N"); () if not known
    frac_bits: int | None = None  # the fixed point a committee holds the model at
    public_weights: bool | None = None  # whether a committee holds the open weights in the clear at every party
    batching: bool | None = None  # whether the nodes run concurrent requests' steps in shared batches


def _kind(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def misfit(strategy: Strategy, *, secret_prompt: bool, open_model: bool, hosting: Hosting) -> str | None:
    """Why `strategy` may not serve this request on `hosting`, or None if it may: the one strategy check.

    The reason starts with what it is about ("privacy: ...", "placement: ...", "device: ...", "fractional bits: ...",
    "public weights: ...", "batching: ..."); privacy comes first and is never traded for anything."""
    try:
        check_allowed(strategy, secret_prompt=secret_prompt, open_model=open_model)
    except StrategyError as exc:
        return f"privacy: {exc}"
    secure = isinstance(strategy, SecureStrategy)
    if secure and (not hosting.secure or len(set(hosting.node_ids)) < 3):
        return "privacy: a secure strategy runs only on a committee of three distinct secure parties"
    if not secure and hosting.secure:
        return f"placement: {strategy.name} runs in the clear on one plaintext worker, not on a secure committee"
    wrong = [d for d in hosting.devices if _kind(d) != _kind(strategy.device)]
    if wrong:
        return f"device: {strategy.name} asks for {strategy.device!r}, but the nodes compute on {', '.join(wrong)}"
    if strategy.batch_requests and hosting.batching is False:
        return f"batching: the nodes do not batch requests; drop batch_requests from {strategy.name}"
    if not secure:
        return None
    if hosting.frac_bits is not None and strategy.frac_bits != hosting.frac_bits:
        return (f"fractional bits: {strategy.name} asks for frac_bits={strategy.frac_bits}, but the committee holds "
                f"the model at frac_bits={hosting.frac_bits} (its weights are encoded at that precision)")
    if strategy.public_weights and hosting.public_weights is False:
        return (f"public weights: {strategy.name} needs the model's weights in the clear at every party, but the "
                f"committee holds them as secret shares")
    return None


def check(strategy: Strategy, *, secret_prompt: bool, open_model: bool, hosting: Hosting) -> None:
    """StrategyError with `misfit`'s reason unless the strategy may serve this request on `hosting`."""
    reason = misfit(strategy, secret_prompt=secret_prompt, open_model=open_model, hosting=hosting)
    if reason is not None:
        raise StrategyError(reason)
