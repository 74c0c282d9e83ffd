"""The sweep's grid: request shapes (Case), simulated links, runs, the small / medium / full grid specs and the
strategies each case runs (build_grid), with the strategies no engine here can run set aside with the reason."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from .models import MODELS, token_inputs

GRIDS = ("small", "medium", "full", "selector")
PROFILES = ("accurate", "fast", "lean")
FRAC_BITS = (16, 18)


@dataclass(frozen=True)
class Case:
    """One request shape: model, prompt tokens per row, rows, new tokens (0 for encoders)."""

    model: str
    seq_len: int
    batch: int
    gen_tokens: int

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown sweep model {self.model!r}; known: {', '.join(MODELS)}")
        if self.seq_len < 1 or self.batch < 1 or self.gen_tokens < 0:
            raise ValueError(f"bad case {self}")
        if MODELS[self.model].arch == "bert" and self.gen_tokens:
            raise ValueError(f"{self.model} is an encoder: gen_tokens must be 0")
        if MODELS[self.model].arch != "bert" and not self.gen_tokens:
            raise ValueError(f"{self.model} is a decoder: gen_tokens must be >= 1")

    @property
    def task(self) -> str:
        return "embed" if MODELS[self.model].arch == "bert" else "generate"

    def inputs(self) -> torch.Tensor:
        """The case's (batch, seq_len) token ids (models.token_inputs)."""
        return token_inputs(self.model, self.seq_len, self.batch)

    @classmethod
    def parse(cls, text: str) -> "Case":
        """MODEL:SEQ:BATCH:GEN, e.g. tiny-gpt2:8:1:4 (GEN 0 for encoders)."""
        parts = text.split(":")
        if len(parts) != 4:
            raise ValueError(f"a case is MODEL:SEQ_LEN:BATCH:GEN_TOKENS, got {text!r}")
        return cls(parts[0], int(parts[1]), int(parts[2]), int(parts[3]))

    def __str__(self) -> str:
        return f"{self.model}:{self.seq_len}:{self.batch}:{self.gen_tokens}"


@dataclass(frozen=True)
class Link:
    """A simulated link between the parties and the client (secure runs); `local` is no shaping."""

    name: str
    latency_s: float = 0.0
    bandwidth_bytes_per_s: float | None = None

    def model(self) -> Any:
        from secureinfer.mpc.comm import LinkModel

        return LinkModel(self.latency_s, self.bandwidth_bytes_per_s)


LINKS: dict[str, Link] = {link.name: link for link in (
    Link("local"),
    Link("lan", 1e-4, 125e6),  # 1 Gbit/s, 0.1 ms one way
    Link("metro", 2e-3, 12.5e6),  # 100 Mbit/s, 2 ms one way
    Link("wan", 2e-2, 12.5e6),  # 100 Mbit/s, 20 ms one way (LinkModel.wan)
    Link("slow", 5e-2, 2.5e6),  # 20 Mbit/s, 50 ms one way (a congested long-haul path)
)}


@dataclass(frozen=True)
class Run:
    """One row to measure: a case, an executable strategy, a link and a repetition index."""

    case: Case
    strategy: Any  # SecureStrategy | PlaintextStrategy
    link: Link
    repeat: int = 0

    def label(self) -> str:
        link = f" @{self.link.name}" if self.strategy.mode == "secure" else ""
        rep = f" #{self.repeat}" if self.repeat else ""
        return f"{self.case} {self.strategy.name}{link}{rep}"


@dataclass(frozen=True)
class GridSpec:
    """Cases per model, which models also run secure, the links secure runs use, the plaintext precisions."""

    cases: dict[str, tuple[tuple[int, int, int], ...]]
    secure_models: tuple[str, ...]
    # model (or one case, "MODEL:SEQ:BATCH:GEN", which wins) -> link names for its secure runs (default: ("local",))
    links: dict[str, tuple[str, ...]]
    secure_profiles: tuple[str, ...] = PROFILES
    frac_bits: tuple[int, ...] = FRAC_BITS
    # Secure variants that only some models run (e.g. frac_bits 16 on the big ones is left out to save time).
    secure_limited: dict[str, tuple[tuple[str, int], ...]] = dataclasses.field(default_factory=dict)
    precisions: tuple[str, ...] = ("fp64", "fp32", "bf16")
    public_weights: tuple[str, ...] = ("accurate", "lean")  # profiles (f18) also run with public weights
    compile: bool = False  # torch.compile strategies (slow to compile on a small CPU)


_TINY = ("tiny-gpt2", "tiny-llama", "tiny-bert")
_SMALL = GridSpec(
    cases={"tiny-gpt2": ((8, 1, 4), (32, 2, 2)), "tiny-llama": ((8, 1, 4), (32, 2, 2)),
           "tiny-bert": ((16, 1, 0), (64, 2, 0)), "gpt2-base-2L": ((16, 1, 2),), "minilm": ((32, 1, 0),),
           "smollm2": ((16, 1, 4),)},
    secure_models=(*_TINY, "gpt2-base-2L", "minilm"),
    links={m: ("local", "lan", "metro") for m in _TINY},
    secure_limited={"gpt2-base-2L": (("accurate", 18), ("fast", 18), ("lean", 18), ("lean", 16)),
                    "minilm": (("accurate", 18), ("fast", 18), ("lean", 18), ("lean", 16))},
)
_MEDIUM = GridSpec(
    cases={"tiny-gpt2": ((8, 1, 4), (32, 1, 4), (32, 4, 2), (64, 1, 8)),
           "tiny-llama": ((8, 1, 4), (32, 1, 4), (32, 4, 2), (64, 1, 8)),
           "tiny-bert": ((16, 1, 0), (64, 1, 0), (64, 4, 0), (128, 1, 0)),
           "gpt2-base-2L": ((16, 1, 2), (64, 1, 4)), "gpt2-base": ((32, 1, 2),),
           "minilm": ((32, 1, 0), (128, 1, 0)), "smollm2": ((16, 1, 4), (32, 1, 8), (32, 4, 4))},
    secure_models=(*_TINY, "gpt2-base-2L", "gpt2-base", "minilm", "smollm2"),
    links={**{m: ("local", "lan", "metro", "wan") for m in _TINY}, "gpt2-base-2L": ("local", "metro"),
           "minilm": ("local", "metro")},
    secure_limited={"gpt2-base": (("accurate", 18), ("lean", 18)), "smollm2": (("accurate", 18), ("lean", 18))},
    compile=True,
)
_FULL = GridSpec(
    cases={"tiny-gpt2": tuple((s, b, g) for s in (8, 32, 128) for b in (1, 4) for g in (1, 4, 16)),
           "tiny-llama": tuple((s, b, g) for s in (8, 32, 128) for b in (1, 4) for g in (1, 4, 16)),
           "tiny-bert": tuple((s, b, 0) for s in (8, 32, 128) for b in (1, 4, 16)),
           "gpt2-base-2L": ((16, 1, 2), (64, 1, 4), (64, 4, 2)), "gpt2-base": ((32, 1, 2), (128, 1, 4)),
           "minilm": ((32, 1, 0), (128, 1, 0), (128, 4, 0)), "smollm2": ((16, 1, 4), (32, 1, 8), (32, 4, 4))},
    secure_models=(*_TINY, "gpt2-base-2L", "gpt2-base", "minilm", "smollm2"),
    links={**{m: tuple(LINKS) for m in _TINY}, "gpt2-base-2L": tuple(LINKS), "gpt2-base": ("local", "metro"),
           "minilm": tuple(LINKS), "smollm2": ("local", "lan")},
    compile=True,
)
_SMALLER = ("small-gpt2", "small-llama", "small-bert")
_ALL_LINKS = tuple(LINKS)
# Variety for the selector's held-out evaluation on a small CPU: the small grid's cases again (already measured),
# new shapes (batch 4, 64-128 tokens, a single forward), the 4-layer small models, and the long-latency links
# (wan, slow) on single-forward cases only, since a 2-layer forward is ~370 rounds (7 s at 20 ms, 18 s at 50 ms).
_SELECTOR = GridSpec(
    cases={"tiny-gpt2": ((8, 1, 4), (32, 2, 2), (8, 1, 1), (16, 4, 2), (64, 1, 1)),
           "tiny-llama": ((8, 1, 4), (32, 2, 2), (8, 1, 1), (16, 4, 2), (64, 1, 1)),
           "tiny-bert": ((16, 1, 0), (64, 2, 0), (32, 4, 0), (128, 1, 0)),
           "small-gpt2": ((16, 1, 2),), "small-llama": ((16, 1, 2),), "small-bert": ((32, 1, 0),)},
    secure_models=(*_TINY, *_SMALLER),
    links={**{m: ("local", "lan", "metro") for m in (*_TINY, *_SMALLER)},
           "tiny-gpt2:16:4:2": ("local", "metro"), "tiny-gpt2:64:1:1": ("local", "metro"),
           "tiny-llama:16:4:2": ("local", "metro"), "tiny-llama:64:1:1": ("local", "metro"),
           "tiny-bert:32:4:0": ("local", "metro"), "tiny-bert:128:1:0": ("local", "metro"),
           "tiny-gpt2:8:1:1": _ALL_LINKS, "tiny-llama:8:1:1": _ALL_LINKS, "tiny-bert:16:1:0": _ALL_LINKS,
           "tiny-bert:64:2:0": _ALL_LINKS},
    secure_limited={m: (("accurate", 18), ("fast", 18), ("lean", 18), ("lean", 16)) for m in (*_TINY, *_SMALLER)},
)
GRID_SPECS = {"small": _SMALL, "medium": _MEDIUM, "full": _FULL, "selector": _SELECTOR}


def available_devices() -> list[str]:
    """cpu, and cuda where torch sees a GPU."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def fast_engine() -> tuple[Any | None, str]:
    """The fast plaintext engine module (secureinfer.plaintext.fast) if importable, else (None, why)."""
    try:
        from secureinfer.plaintext import fast  # type: ignore[attr-defined]
    except ImportError as exc:
        return None, f"secureinfer.plaintext.fast is not importable ({exc})"
    return fast, ""


def fast_unsupported(module: Any, strategy: Any) -> str:
    """'' if the fast engine `module` can run the plaintext `strategy`, else why not."""
    if not hasattr(module, "FastDecoder"):
        return "secureinfer.plaintext.fast has no FastDecoder"
    if strategy.speculation == "draft":
        return "speculation='draft' (a separate draft model) is not implemented by the fast engine"
    if strategy.compile and not strategy.static_cache:
        return "the fast engine compiles only with static_cache"
    return ""


def public_weights_support() -> str:
    """'' if the secure session can run public-weights mode, else why not."""
    from secureinfer.mpc.models import session

    for fn in (session.secure_encode, session.secure_generate_many):
        if "public_weights" not in inspect.signature(fn).parameters:
            return f"session.{fn.__name__} has no public_weights argument yet (public-weights mode not implemented)"
    return ""


def _plain_extras(device: str, compile_: bool) -> list[Any]:
    """Plaintext decoder strategies beyond precision that need the fast engine: on the CPU in fp32 (bf16 matmuls
    are slow there), on CUDA in bf16, plus CUDA graphs on CUDA and torch.compile when the grid asks for it."""
    from secureinfer.strategy import PlaintextStrategy

    cuda = device.startswith("cuda")
    p = "bf16" if cuda else "fp32"
    out = [PlaintextStrategy(precision=p, quantization="int8", device=device),
           PlaintextStrategy(precision=p, static_cache=True, device=device),
           PlaintextStrategy(precision=p, batch_requests=True, device=device),
           PlaintextStrategy(precision=p, speculation="early_exit", device=device)]
    if cuda:
        out.append(PlaintextStrategy(precision=p, static_cache=True, cuda_graphs=True, device=device))
        out.append(PlaintextStrategy(precision=p, quantization="int8", static_cache=True, cuda_graphs=True,
                                     device=device))
        out.append(PlaintextStrategy(precision=p, static_cache=True, cuda_graphs=True, batch_requests=True,
                                     device=device))
    if compile_:
        out.append(PlaintextStrategy(precision=p, static_cache=True, compile=True, device=device))
    return out


def build_grid(grid: str = "small", *, models: Iterable[str] | None = None, devices: Iterable[str] | None = None,
               cases: Iterable[Case] | None = None, links: Iterable[str] | None = None, repeats: int = 1,
               strategy_filter: Iterable[str] | None = None) -> tuple[list[Run], dict[str, str]]:
    """The runs of a grid and the strategies skipped (name -> why). `cases` replaces the grid's cases (their models
    must be in `models` if that is given); `links` restricts the secure runs' links; `strategy_filter` keeps only
    strategies whose name contains one of the strings."""
    from secureinfer.strategy import PlaintextStrategy, SecureStrategy

    if grid not in GRID_SPECS:
        raise ValueError(f"unknown grid {grid!r}; known: {', '.join(GRIDS)}")
    spec = GRID_SPECS[grid]
    devices = list(devices) if devices is not None else available_devices()
    chosen = list(cases) if cases is not None else [Case(m, *c) for m, cs in spec.cases.items() for c in cs]
    if models is not None:
        wanted = set(models)
        unknown = wanted - set(MODELS)
        if unknown:
            raise ValueError(f"unknown sweep models {sorted(unknown)}; known: {', '.join(MODELS)}")
        chosen = [c for c in chosen if c.model in wanted]
    link_names = list(links) if links is not None else None
    if link_names is not None:
        bad = set(link_names) - set(LINKS)
        if bad:
            raise ValueError(f"unknown links {sorted(bad)}; known: {', '.join(LINKS)}")
    filters = list(strategy_filter or [])
    skipped: dict[str, str] = {}
    fast, why_not_fast = fast_engine()
    why_not_pubw = public_weights_support()
    runs: list[Run] = []
    for case in chosen:
        for device in devices:
            secure: list[Any] = []
            if case.model in spec.secure_models or cases is not None:
                variants = spec.secure_limited.get(case.model) if cases is None else None
                variants = variants or tuple((p, f) for p in spec.secure_profiles for f in spec.frac_bits)
                secure = [SecureStrategy(profile=p, frac_bits=f, device=device) for p, f in variants]
                for p in spec.public_weights:
                    pubw = SecureStrategy(profile=p, frac_bits=18, public_weights=True, device=device)
                    if why_not_pubw:
                        skipped[pubw.name] = why_not_pubw
                    else:
                        secure.append(pubw)
            plain = [PlaintextStrategy(precision=p, device=device) for p in spec.precisions]
            if device.startswith("cuda"):
                plain.append(PlaintextStrategy(precision="fp16", device=device))
            for extra in _plain_extras(device, spec.compile) if case.task == "generate" else []:
                if fast is None:
                    skipped[extra.name] = why_not_fast
                elif (why := fast_unsupported(fast, extra)):
                    skipped[extra.name] = why
                else:
                    plain.append(extra)
            case_links = link_names or list(spec.links.get(str(case), spec.links.get(case.model, ("local",))))
            if link_names is None and cases is not None:
                case_links = ["local"]
            for strategy in secure + plain:
                if filters and not any(f in strategy.name for f in filters):
                    continue
                for link in (case_links if strategy.mode == "secure" else ["local"]):
                    for r in range(repeats):
                        runs.append(Run(case, strategy, LINKS[link], r))
    return runs, skipped
