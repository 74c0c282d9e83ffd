"""The strategy space: every executable candidate for a request on an option, and the hard constraints that filter it.

Candidates (`enumerate_candidates`):
  committee (three distinct nodes): SecureStrategy over profiles x frac_bits x public_weights (open models only)
      x device (cpu; cuda when all three nodes have a GPU);
  worker (one node): PlaintextStrategy over precisions, int8 weights, static cache, CUDA graphs, batching and
      speculation (decoders), on cpu or the node's GPU, only for an open model AND a public prompt.
Hard constraints (`check`), never traded for speed; each removed candidate keeps the reason (for `explain`):
  privacy   the strategy check (secureinfer/strategy.py's misfit, on a `hosting` built from the option): a secret
            prompt never runs in plaintext nor on fewer than three distinct parties; a closed model never runs in
            plaintext nor with public weights; a secure strategy runs only on three distinct parties (the check's
            placement and device reasons are constraints of their own, which enumerated candidates never meet);
  policy    the model owner's `Policy` (allowed modes, devices, profiles, nodes; public weights forbidden);
  accuracy  the strategy's expected error (`AccuracyTable`: measured max_abs_err per (arch, strategy) in the store,
            else a stated prior) must not exceed the request's max_error;
  deadline  applied by the selector on the predicted latency (plans predicted slower than deadline_s are dropped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from secureinfer import strategy as strategy_check
from secureinfer.perfstore import RunRecord
from secureinfer.strategy import PROFILES, PlaintextStrategy, SecureStrategy, Strategy

from .cost import device_kind, variant
from .features import CommitteeOption, Option, RequestFeatures, SelectorError, WorkerOption

FRAC_BITS = (16, 18)
MODES = ("secure", "plaintext")
DEVICE_KINDS = ("cpu", "cuda")

# Prior max |error| vs the float64 plaintext (logits or embeddings), used where the store has no measurement for
# (arch, strategy). Secure: the largest max_abs_err the small sweep measured for the profile over all architectures
# at 18 bits, doubled (a margin for unseen models); 16 bits: x4 (two fewer fractional bits: 4x coarser).
# Plaintext: float64 exact; fp32 ~1e-5; bf16/fp16 and int8 weights as measured on the tiny models, doubled.
SECURE_PRIOR_ERROR = {"accurate": 4e-3, "fast": 0.2, "lean": 5e-2}
PLAIN_PRIOR_ERROR = {"fp64": 1e-9, "fp32": 1e-4, "bf16": 0.5, "fp16": 0.1}
INT8_PRIOR_ERROR = 0.5


@dataclass(frozen=True)
class Policy:
    """The model owner's rules for its model (all hard constraints; None means no restriction)."""

    allowed_modes: tuple[str, ...] = MODES
    allowed_devices: tuple[str, ...] = DEVICE_KINDS  # device kinds: "cpu", "cuda"
    allowed_profiles: tuple[str, ...] | None = None
    forbid_public_weights: bool = False
    allowed_nodes: frozenset[str] | None = None  # node ids that may host the model (None: any)
    min_frac_bits: int = 0

    def __post_init__(self) -> None:
        if not set(self.allowed_modes) <= set(MODES):
            raise SelectorError(f"allowed_modes must be a subset of {MODES}; got {self.allowed_modes}")
        if not set(self.allowed_devices) <= set(DEVICE_KINDS):
            raise SelectorError(f"allowed_devices must be a subset of {DEVICE_KINDS}; got {self.allowed_devices}")
        if self.allowed_profiles is not None and not set(self.allowed_profiles) <= set(PROFILES):
            raise SelectorError(f"allowed_profiles must be a subset of {PROFILES}; got {self.allowed_profiles}")

    def violation(self, strategy: Strategy, option: Option) -> str | None:
        """Why the policy forbids this candidate, or None."""
        if strategy.mode not in self.allowed_modes:
            return f"policy: mode {strategy.mode} not allowed (allowed: {', '.join(self.allowed_modes)})"
        if device_kind(strategy.device) not in self.allowed_devices:
            return f"policy: device {strategy.device} not allowed (allowed: {', '.join(self.allowed_devices)})"
        if isinstance(strategy, SecureStrategy):
            if self.allowed_profiles is not None and strategy.profile not in self.allowed_profiles:
                return f"policy: profile {strategy.profile} not allowed"
            if strategy.public_weights and self.forbid_public_weights:
                return "policy: the owner forbids public weights"
            if strategy.frac_bits < self.min_frac_bits:
                return f"policy: frac_bits {strategy.frac_bits} < {self.min_frac_bits}"
        if self.allowed_nodes is not None:
            outside = [n for n in node_ids(option) if n not in self.allowed_nodes]
            if outside:
                return f"policy: node(s) {', '.join(outside)} may not host this model"
        return None


@dataclass(frozen=True)
class Candidate:
    """One strategy on one option."""

    strategy: Strategy
    option: Option


@dataclass(frozen=True)
class Rejected:
    """A candidate removed by a hard constraint, with the constraint's name and why."""

    candidate: Candidate
    constraint: str  # "privacy" | "placement" | "device" | "policy" | "accuracy" | "deadline"
    reason: str


def node_ids(option: Option) -> tuple[str, ...]:
    if isinstance(option, CommitteeOption):
        return tuple(n.node_id for n in option.nodes)
    return (option.node.node_id,)


def _all_cuda(option: Option) -> bool:
    nodes = option.nodes if isinstance(option, CommitteeOption) else (option.node,)
    return all(n.device.startswith("cuda") for n in nodes)


def secure_strategies(open_model: bool, device_kinds: Iterable[str]) -> list[SecureStrategy]:
    """Profiles x frac_bits x weight mode (public only for open models) x devices."""
    out = []
    for dev in device_kinds:
        for profile in PROFILES:
            for bits in FRAC_BITS:
                out.append(SecureStrategy(profile=profile, frac_bits=bits, device=dev))
                if open_model:
                    out.append(SecureStrategy(profile=profile, frac_bits=bits, public_weights=True, device=dev))
    return out


def plaintext_strategies(decoder: bool, device_kinds: Iterable[str]) -> list[PlaintextStrategy]:
    """Precisions (+ fp16 on CUDA), and for decoders the fast engine's variants (int8, static cache, batching,
    early-exit speculation, CUDA graphs) in the device's working precision (fp32 on CPU, bf16 on CUDA)."""
    out: list[PlaintextStrategy] = []
    for dev in device_kinds:
        cuda = dev == "cuda"
        out += [PlaintextStrategy(precision=p, device=dev) for p in ("fp64", "fp32", "bf16")]
        if cuda:
            out.append(PlaintextStrategy(precision="fp16", device=dev))
        if not decoder:
            continue
        p = "bf16" if cuda else "fp32"
        out += [PlaintextStrategy(precision=p, quantization="int8", device=dev),
                PlaintextStrategy(precision=p, static_cache=True, device=dev),
                PlaintextStrategy(precision=p, batch_requests=True, device=dev),
                PlaintextStrategy(precision=p, speculation="early_exit", device=dev)]
        if cuda:
            out += [PlaintextStrategy(precision=p, static_cache=True, cuda_graphs=True, device=dev),
                    PlaintextStrategy(precision=p, quantization="int8", static_cache=True, cuda_graphs=True,
                                      device=dev),
                    PlaintextStrategy(precision=p, static_cache=True, cuda_graphs=True, batch_requests=True,
                                      device=dev)]
    return out


def enumerate_candidates(request: RequestFeatures, options: Iterable[Option]) -> list[Candidate]:
    """Every executable strategy on every option, before any constraint (secure on committees, plaintext on
    workers; GPU strategies only where every node of the option has a GPU)."""
    out: list[Candidate] = []
    decoder = request.arch != "bert"
    for option in options:
        kinds = ["cpu"] + (["cuda"] if _all_cuda(option) else [])
        if isinstance(option, CommitteeOption):
            out += [Candidate(s, option) for s in secure_strategies(True, kinds)]
        elif isinstance(option, WorkerOption):
            out += [Candidate(s, option) for s in plaintext_strategies(decoder, kinds)]
        else:
            raise SelectorError(f"an option must be a CommitteeOption or WorkerOption, got {type(option).__name__}")
    return out


@dataclass
class AccuracyTable:
    """Expected max |error| per (arch, strategy variant): the worst measured in the store, else the prior."""

    measured: dict[tuple[str, str], float] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: Iterable[RunRecord]) -> "AccuracyTable":
        table: dict[tuple[str, str], float] = {}
        for r in records:
            if r.status == "ok" and r.max_abs_err is not None:
                k = (r.arch, r.strategy_name.rsplit("-", 1)[0])
                table[k] = max(table.get(k, 0.0), float(r.max_abs_err))
        return cls(table)

    def expected_error(self, arch: str, strategy: Strategy) -> float:
        measured = self.measured.get((arch, variant(strategy)))
        if measured is not None:
            return measured
        return prior_error(strategy)


def prior_error(strategy: Strategy) -> float:
    """The stated prior error of a strategy (module constants)."""
    if isinstance(strategy, SecureStrategy):
        return SECURE_PRIOR_ERROR[strategy.profile] * (4.0 ** max(0, (18 - strategy.frac_bits) / 2))
    base = PLAIN_PRIOR_ERROR[strategy.precision]
    return max(base, INT8_PRIOR_ERROR) if strategy.quantization == "int8" else base


def hosting(option: Option, strategy: Strategy) -> strategy_check.Hosting:
    """Where `strategy` would run on `option`, as the strategy check sees it: a committee of secure parties or one
    plaintext worker, its nodes, and the device each computes the strategy on (a GPU node runs CPU strategies on its
    CPU). An option does not say how a committee holds the model nor whether its nodes batch: those are not checked."""
    nodes = option.nodes if isinstance(option, CommitteeOption) else (option.node,)
    on_cpu = device_kind(strategy.device) == "cpu"
    return strategy_check.Hosting(secure=isinstance(option, CommitteeOption), node_ids=node_ids(option),
                                  devices=tuple("cpu" if on_cpu else n.device for n in nodes))


def misfit(request: RequestFeatures, c: Candidate) -> str | None:
    """Why this candidate may not serve the request, or None: secureinfer.strategy.misfit where it would run, whose
    reason starts with its kind ("privacy: ...", "placement: ...", "device: ..."); a secret prompt offered to a
    plaintext worker is refused in the selector's own words, the ones `explain` prints."""
    if request.secret_prompt and c.strategy.mode == "plaintext" and not isinstance(c.option, CommitteeOption):
        return "privacy: a secret prompt never runs on fewer than three distinct parties"  # a worker is one party
    return strategy_check.misfit(c.strategy, secret_prompt=request.secret_prompt, open_model=request.open_model,
                                 hosting=hosting(c.option, c.strategy))


def check(request: RequestFeatures, c: Candidate, policy: Policy, accuracy: AccuracyTable
          ) -> tuple[Rejected | None, float]:
    """(the first constraint the candidate violates or None, its expected error). Order: the strategy check
    (privacy first), policy, accuracy (the deadline needs a latency prediction and is checked by the selector)."""
    error = accuracy.expected_error(request.arch, c.strategy)
    why = misfit(request, c)
    if why:
        return Rejected(c, why.split(":", 1)[0], why), error
    why = policy.violation(c.strategy, c.option)
    if why:
        return Rejected(c, "policy", why), error
    if request.max_error is not None and error > request.max_error:
        return Rejected(c, "accuracy", f"accuracy: expected error {error:.3g} > budget {request.max_error:.3g}"), error
    return None, error


def feasible(request: RequestFeatures, options: Iterable[Option], policy: Policy, accuracy: AccuracyTable
             ) -> tuple[list[tuple[Candidate, float]], list[Rejected]]:
    """Candidates that satisfy privacy, policy and accuracy (with their expected error), and the rejected ones."""
    kept, rejected = [], []
    for c in enumerate_candidates(request, options):
        rej, error = check(request, c, policy, accuracy)
        if rej is None:
            kept.append((c, error))
        else:
            rejected.append(rej)
    return kept, rejected
