"""What the selector conditions on and what it returns: a request, the nodes and links it may use, and a ranked plan.

These are plain frozen dataclasses shared by every part of the selector (cost model, predictor, bandit, evaluation)
and by its callers (the SDK, the simulator, tests). A `Plan` is executable: its strategy is an execution strategy
(secureinfer/strategy.py) and its nodes are node ids of the membership view.

    request = RequestFeatures.for_model(cfg, model="minilm", seq_len=128, task="embed", secret_prompt=True)
    plans = selector.plan(request, [CommitteeOption(...), WorkerOption(...)])   # best first
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from secureinfer.strategy import Strategy

TASKS = ("embed", "generate", "logits")
# Float32 matmul GFLOP/s per CPU core, for a GPU node that reports no CPU speed (measured: 69 on the H200 host's
# 16 cores, 95 on the 2-core dev VM; the lower, as a conservative estimate).
CPU_GFLOPS_PER_CORE = 65.0


class SelectorError(ValueError):
    """No plan satisfies the request's hard constraints, or the selector was given malformed input."""


@dataclass(frozen=True)
class RequestFeatures:
    """One request: the model's shape, the work asked for, and its hard constraints."""

    model: str
    arch: str  # "bert" | "gpt2" | "llama"
    n_params: int
    n_layers: int
    hidden: int
    vocab: int
    seq_len: int  # prompt tokens per row
    batch: int = 1
    gen_tokens: int = 0  # new tokens (0 for encoders)
    task: str = "embed"
    # --- hard constraints, never traded for speed
    secret_prompt: bool = True  # the prompt must never exist in the clear outside the client
    open_model: bool = False  # the owner allows the weights in the clear (plaintext workers, public_weights)
    max_error: float | None = None  # accuracy budget: largest acceptable error vs plaintext (None: any)
    deadline_s: float | None = None  # plans predicted slower than this are dropped (None: no deadline)
    # --- attention and MLP shape (0: unknown; the cost model then assumes head_dim 64 and a 4x MLP)
    n_heads: int = 0
    n_kv_heads: int = 0  # grouped-query attention (LLaMA); 0: n_heads
    intermediate: int = 0  # MLP width

    @classmethod
    def for_model(cls, cfg: Any, *, model: str, seq_len: int, batch: int = 1, gen_tokens: int = 0,
                  task: str | None = None, **constraints: Any) -> "RequestFeatures":
        """The request for a model described by a ModelConfig (secureinfer/models/config.py); `constraints` are the
        hard-constraint fields (secret_prompt, open_model, max_error, deadline_s)."""
        n_params = _config_params(cfg)
        return cls(model=model, arch=cfg.arch, n_params=n_params, n_layers=cfg.n_layers, hidden=cfg.hidden,
                   vocab=cfg.vocab_size, seq_len=seq_len, batch=batch, gen_tokens=gen_tokens,
                   task=task or ("embed" if cfg.arch == "bert" else "generate"), n_heads=cfg.n_heads,
                   n_kv_heads=cfg.n_kv_heads, intermediate=cfg.intermediate, **constraints)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise SelectorError(f"task must be one of {TASKS}; got {self.task!r}")
        for name in ("seq_len", "batch"):
            if getattr(self, name) < 1:
                raise SelectorError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.gen_tokens < 0:
            raise SelectorError(f"gen_tokens must be >= 0; got {self.gen_tokens}")
        for name in ("n_layers", "hidden", "vocab"):
            if getattr(self, name) < 1:
                raise SelectorError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.max_error is not None and not self.max_error > 0:
            raise SelectorError(f"max_error must be > 0 (or None); got {self.max_error}")
        if self.deadline_s is not None and not self.deadline_s > 0:
            raise SelectorError(f"deadline_s must be > 0 (or None); got {self.deadline_s}")


def _config_params(cfg: Any) -> int:
    """Parameter count of a ModelConfig (secureinfer.models.config.parameter_shapes), without loading weights."""
    from secureinfer.models.config import parameter_shapes

    total = 0
    for shape in parameter_shapes(cfg).values():
        n = 1
        for d in shape:
            n *= int(d)
        total += n
    return total


@dataclass(frozen=True)
class NodeFeatures:
    """One node as its signed membership record describes it (nodes/capability.py's measurements)."""

    node_id: str
    device: str  # "cpu" or "cuda:0 (NVIDIA H200)"
    cpu_count: int
    matmul_gflops: float  # float32 matmul speed of `device`
    memory_bytes: int
    host: str = ""
    cpu_gflops: float = 0.0  # the host CPU's float32 matmul speed (0: unknown; cpu_count estimates it on a GPU node)

    def gflops_for(self, kind: str) -> float:
        """Float32 matmul speed for work on device kind `kind` ('cpu' or 'cuda'): a GPU node runs CPU strategies
        at its CPU's speed, not its GPU's."""
        if kind == "cpu" and self.device.startswith("cuda"):
            return self.cpu_gflops if self.cpu_gflops > 0 else CPU_GFLOPS_PER_CORE * max(self.cpu_count, 1)
        return self.matmul_gflops


@dataclass(frozen=True)
class LinkFeatures:
    """The links between the parties of a committee (or client to worker): one-way latency and bandwidth."""

    latency_s: float = 0.0
    bandwidth_bytes_per_s: float | None = None  # None: unlimited


@dataclass(frozen=True)
class CommitteeOption:
    """Three distinct nodes that host the model as secret shares (or public weights, for an open model)."""

    committee_id: str
    nodes: tuple[NodeFeatures, NodeFeatures, NodeFeatures]
    link: LinkFeatures = LinkFeatures()

    def __post_init__(self) -> None:
        if len(self.nodes) != 3 or len({n.node_id for n in self.nodes}) != 3:
            raise SelectorError(f"committee {self.committee_id!r} must have three distinct nodes")


@dataclass(frozen=True)
class WorkerOption:
    """One plaintext worker that hosts an open model."""

    node: NodeFeatures
    link: LinkFeatures = LinkFeatures()


Option = CommitteeOption | WorkerOption


@dataclass(frozen=True)
class Prediction:
    """What a plan is expected to cost: latency (seconds), bytes and rounds per party, error vs plaintext."""

    total_s: float
    bytes_per_party: float = 0.0
    rounds: float = 0.0
    error: float = 0.0
    source: str = "cost_model"  # "cost_model" | "predictor" | "bandit"


@dataclass(frozen=True)
class Plan:
    """An executable choice: the strategy, where it runs, and what it is predicted to cost."""

    strategy: Strategy
    option: Option
    predicted: Prediction
    notes: tuple[str, ...] = field(default=())  # why it ranks where it does (for `selector explain`)
    request: RequestFeatures | None = None  # the request it was planned for (observe records it with the outcome)

    @property
    def mode(self) -> str:
        return self.strategy.mode

    @property
    def node_ids(self) -> tuple[str, ...]:
        if isinstance(self.option, CommitteeOption):
            return tuple(n.node_id for n in self.option.nodes)
        return (self.option.node.node_id,)

    @property
    def arm(self) -> str:
        """The bandit's arm: strategy and placement."""
        return f"{self.strategy.name}@{'+'.join(self.node_ids)}"


@dataclass(frozen=True)
class Outcome:
    """What a served request measured (the bandit's and the store's feedback)."""

    total_s: float
    prefill_s: float | None = None
    per_token_s: float | None = None
    bytes_per_party: float | None = None
    rounds: int | None = None
    error: float | None = None
    ok: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
