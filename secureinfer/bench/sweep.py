"""`secureinfer bench sweep`: measure a grid of requests x strategies x environments into the performance store.

The grid is (model, seq_len, batch, gen_tokens) x strategies x devices x simulated links (secure runs only); each
run writes one row (selector/store.py's RunRecord) with the request's features, the node's (nodes/capability.py's
measure()) and the link's, the strategy (its JSON executes it again), and the measured outcome: prefill, per-token
and total seconds, rounds and bytes per party, peak memory, accuracy against the float64 plaintext reference.

How a run is measured:
  secure     mpc/models/session.py on three in-process parties (plus model owner and client), with the strategy's
             approximation profile, fixed point (EngineConfig(fxp=FixedPoint(frac_bits))) and device, and the link
             simulated by comm/memory.py's LinkModel between parties and client (the owner's weight publishing is
             set-up and is not shaped). Decoders: secure_generate (prefill then one step per new token, greedy,
             no EOS stop); encoders: secure_encode (sentence embedding). Times are the client-observed step times.
  plaintext  decoders run on the fast plaintext engine (`secureinfer.mpc.models.fast.FastDecoder`, through
             `_FastAdapter`) when it is importable: precision, int8, static cache, batching worker, CUDA graphs,
             compile, early-exit speculation. Encoders (and decoders without the fast engine) run plaintext.py's
             forwards, the reference definitions, in the strategy's precision (`_ComputeDtype`). Parameters are
             cast or packed once outside the clock (load_s); one untimed warm-up, then the median of up to five
             timed runs, perf_counter with CUDA synchronised. Strategies no engine here can run are skipped, and
             why goes to the store's meta table (`skipped:NAME`) and the sweep's output.
Accuracy: decoders compare each step's last-position logits with the float64 reference's, teacher-forced on the
run's own tokens (max_abs_err, min over rows of cosine), and the greedy tokens with the reference's greedy tokens
(tokens_equal); encoders compare sentence embeddings. The reference runs once per case, outside every clock.
A run that raises is recorded with status 'error' and the message, and the sweep goes on. Rows whose key is already
in the store are skipped (resumable); a key hashes the case, the strategy, the link, the repeat index and the
environment (host label, device, CPU model), not the measured figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

DEFAULT_STORE = "benchmarks/sweep/sweep.sqlite"
GRIDS = ("small", "medium", "full")
PROFILES = ("accurate", "fast", "lean")
FRAC_BITS = (16, 18)


# ---------------------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelSpec:
    """A model the sweep can run: its loader returns (ModelConfig, float64 params) and inputs come from `inputs`."""

    name: str
    arch: str
    real: bool  # real trained weights (else random weights of a real or tiny shape)
    what: str


def _random_params(cfg: Any, seed: int) -> dict[str, torch.Tensor]:
    """Random float64 weights for `cfg`: matrices N(0, 1/fan_in) (embeddings N(0, 1)), norm gains 1 + N(0, 0.1),
    biases N(0, 0.05). Public benchmark data drawn from a seeded generator."""
    from ..mpc.models.checkpoint import parameter_shapes

    gen = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in parameter_shapes(cfg).items():
        noise = torch.randn(shape, generator=gen, dtype=torch.float64)
        if len(shape) > 1:
            embedding = "embed" in name or name.endswith(("wte.weight", "wpe.weight"))
            fan_in = shape[0] if cfg.arch == "gpt2" and not embedding else shape[1]  # Conv1D is (in, out)
            params[name] = noise if embedding else noise / math.sqrt(fan_in)
        elif name.endswith("weight"):
            params[name] = 1.0 + 0.1 * noise
        else:
            params[name] = 0.05 * noise
    return params


def _tiny_config(arch: str) -> Any:
    from ..mpc.models.checkpoint import ModelConfig

    common = dict(vocab_size=256, hidden=64, n_layers=2, max_positions=256)
    if arch == "gpt2":
        return ModelConfig(arch="gpt2", n_heads=4, n_kv_heads=4, head_dim=16, intermediate=256, norm_eps=1e-5,
                           act="gelu_tanh", tie_word_embeddings=True, **common)
    if arch == "llama":
        return ModelConfig(arch="llama", n_heads=8, n_kv_heads=2, head_dim=8, intermediate=128, norm_eps=1e-5,
                           act="silu", rope_theta=10000.0, attention_bias=False, mlp_bias=False, **common)
    return ModelConfig(arch="bert", n_heads=4, n_kv_heads=4, head_dim=16, intermediate=128, norm_eps=1e-12,
                       act="gelu", type_vocab_size=2, **common)


def _gpt2_base(layers: int) -> tuple[Any, dict[str, torch.Tensor]]:
    """GPT-2-base shape (bench/model.py's random GPT-2-style weights), keeping the first `layers` blocks."""
    from .model import gpt2_base_params

    cfg, params = gpt2_base_params()
    keep = {f"transformer.h.{i}." for i in range(layers)}
    params = {k: v.double() for k, v in params.items()
              if not k.startswith("transformer.h.") or any(k.startswith(p) for p in keep)}
    return dataclasses.replace(cfg, n_layers=layers), params


def _packaged(name: str) -> tuple[Any, dict[str, torch.Tensor]]:
    from ..mpc.models.checkpoint import load_checkpoint, packaged_checkpoint

    return load_checkpoint(packaged_checkpoint(name), torch.float64)


MODELS: dict[str, ModelSpec] = {m.name: m for m in (
    ModelSpec("tiny-gpt2", "gpt2", False, "GPT-2 shape, 2 layers, hidden 64, 4 heads, vocab 256, random weights"),
    ModelSpec("tiny-llama", "llama", False,
              "LLaMA shape, 2 layers, hidden 64, 8 heads / 2 KV heads (GQA), vocab 256, random weights"),
    ModelSpec("tiny-bert", "bert", False, "BERT shape, 2 layers, hidden 64, 4 heads, vocab 256, random weights"),
    ModelSpec("gpt2-base-2L", "gpt2", False,
              "GPT-2-base shape (hidden 768, 12 heads, vocab 50257) cut to its first 2 of 12 layers, random weights"),
    ModelSpec("gpt2-base", "gpt2", False, "GPT-2-base shape, 12 layers, random GPT-2-style weights"),
    ModelSpec("minilm", "bert", True, "all-MiniLM-L6-v2 (real weights), sentence embedding"),
    ModelSpec("smollm2", "llama", True, "SmolLM2-135M-Instruct (real weights, GGUF Q4_1 dequantized)"),
)}
_LOADERS: dict[str, Callable[[], tuple[Any, dict[str, torch.Tensor]]]] = {
    "tiny-gpt2": lambda: (_tiny_config("gpt2"), _random_params(_tiny_config("gpt2"), 11)),
    "tiny-llama": lambda: (_tiny_config("llama"), _random_params(_tiny_config("llama"), 12)),
    "tiny-bert": lambda: (_tiny_config("bert"), _random_params(_tiny_config("bert"), 13)),
    "gpt2-base-2L": lambda: _gpt2_base(2),
    "gpt2-base": lambda: _gpt2_base(12),
    "minilm": lambda: _packaged("all-MiniLM-L6-v2"),
    "smollm2": lambda: _packaged("SmolLM2-135M-Instruct"),
}
_TEXTS = {"minilm": "all-MiniLM-L6-v2", "smollm2": "SmolLM2-135M-Instruct"}


@functools.lru_cache(maxsize=None)
def load_model(name: str) -> tuple[Any, dict[str, torch.Tensor]]:
    """(ModelConfig, float64 params) of a sweep model, loaded once per process."""
    if name not in _LOADERS:
        raise ValueError(f"unknown sweep model {name!r}; known: {', '.join(MODELS)}")
    return _LOADERS[name]()


@functools.lru_cache(maxsize=None)
def _text_tokens(name: str) -> tuple[int, ...]:
    """Token ids of the benchmark text (bench/model.py's), repeated so any sequence length can be cut from it."""
    from ..mpc.models.checkpoint import load_tokenizer, packaged_checkpoint
    from .model import MINILM_TEXT, SMOLLM2_TEXT

    tok = load_tokenizer(packaged_checkpoint(_TEXTS[name]))
    text = MINILM_TEXT if name == "minilm" else SMOLLM2_TEXT
    return tuple(tok((text + " ") * 8, add_special_tokens=False)["input_ids"])


def case_inputs(case: "Case") -> torch.Tensor:
    """(batch, seq_len) token ids: for real models rows are windows of the benchmark text (row r starts r*7 tokens
    in; MiniLM rows start with [CLS]), for random models seeded random ids."""
    cfg, _ = load_model(case.model)
    if case.model in _TEXTS:
        toks = _text_tokens(case.model)
        rows = []
        for r in range(case.batch):
            if case.model == "minilm":
                rows.append([101, *toks[r * 7:r * 7 + case.seq_len - 1]])  # [CLS] + text
            else:
                rows.append(list(toks[r * 7:r * 7 + case.seq_len]))
        return torch.tensor(rows, dtype=torch.int64)
    seed = int.from_bytes(f"{case.model}/{case.seq_len}/{case.batch}".encode()[:8].ljust(8, b"\0"), "little") % 2**31
    return torch.randint(0, cfg.vocab_size, (case.batch, case.seq_len), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------- grid


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
        from ..mpc.comm import LinkModel

        return LinkModel(self.latency_s, self.bandwidth_bytes_per_s)


LINKS: dict[str, Link] = {link.name: link for link in (
    Link("local"),
    Link("lan", 1e-4, 125e6),  # 1 Gbit/s, 0.1 ms one way
    Link("metro", 2e-3, 12.5e6),  # 100 Mbit/s, 2 ms one way
    Link("wan", 2e-2, 12.5e6),  # 100 Mbit/s, 20 ms one way (LinkModel.wan)
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
    links: dict[str, tuple[str, ...]]  # model -> link names for its secure runs (default: ("local",))
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
GRID_SPECS = {"small": _SMALL, "medium": _MEDIUM, "full": _FULL}


def available_devices() -> list[str]:
    """cpu, and cuda where torch sees a GPU."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def fast_engine() -> tuple[Any | None, str]:
    """The fast plaintext engine module (issue 5) if importable, else (None, why)."""
    try:
        from ..mpc.models import fast  # type: ignore[attr-defined]
    except ImportError as exc:
        return None, f"secureinfer.mpc.models.fast is not importable ({exc})"
    return fast, ""


def public_weights_support() -> str:
    """'' if the secure session can run public-weights mode, else why not."""
    from ..mpc.models import session

    for fn in (session.secure_encode, session.secure_generate_many):
        if "public_weights" not in inspect.signature(fn).parameters:
            return f"session.{fn.__name__} has no public_weights argument yet (public-weights mode not implemented)"
    return ""


def _plain_extras(device: str, compile_: bool) -> list[Any]:
    """Plaintext decoder strategies beyond precision that need the fast engine: on the CPU in fp32 (bf16 matmuls
    are slow there), on CUDA in bf16, plus CUDA graphs on CUDA and torch.compile when the grid asks for it."""
    from ..mpc.models.strategy import PlaintextStrategy

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
    from ..mpc.models.strategy import PlaintextStrategy, SecureStrategy

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
                elif (why := _FastAdapter.unsupported(fast, extra)):
                    skipped[extra.name] = why
                else:
                    plain.append(extra)
            case_links = link_names or list(spec.links.get(case.model, ("local",)))
            if link_names is None and cases is not None:
                case_links = ["local"]
            for strategy in secure + plain:
                if filters and not any(f in strategy.name for f in filters):
                    continue
                for link in (case_links if strategy.mode == "secure" else ["local"]):
                    for r in range(repeats):
                        runs.append(Run(case, strategy, LINKS[link], r))
    return runs, skipped


# ---------------------------------------------------------------------------------------------------- environment


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    """The source tree's commit, '+dirty' when it has uncommitted changes (best effort)."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=root).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=root).stdout.strip()
        return (head + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass(frozen=True)
class Node:
    """The node features of one device (nodes/capability.py's measure()) plus the host label and CPU model."""

    device: str  # torch device used ("cpu", "cuda")
    description: str  # "cpu" or "cuda:0 (NVIDIA H200)"
    cpu_count: int
    matmul_gflops: float
    memory_bytes: int
    host: str
    cpu_model: str


def measure_node(device: str, host: str | None = None, seconds_budget: float = 0.3) -> Node:
    """Measure `device` once (float32 matmul GFLOP/s, memory, CPUs)."""
    from ..nodes import capability

    cap = capability.measure(device, seconds_budget)
    return Node(device, cap.device, cap.cpu_count, float(cap.matmul_gflops), int(cap.memory_bytes),
                host or socket.gethostname(), _cpu_model())


def strategy_key(strategy: Any) -> dict[str, Any]:
    """The strategy's part of a run key: its mode and the fields that differ from their defaults, so a field added
    to the strategy later (with a default) leaves the keys of rows already measured unchanged."""
    defaults = dataclasses.asdict(type(strategy)())
    return {"mode": strategy.mode,
            **{k: v for k, v in dataclasses.asdict(strategy).items() if defaults.get(k, object()) != v}}


def key_for(run: Run, node: Node) -> str:
    """The run's store key: case, strategy, link, repeat and environment (host label, device, CPU model and count),
    not the measured node speed, so a re-run on the same machine finds its rows."""
    from ..selector.store import run_key

    return run_key(case=dataclasses.asdict(run.case), strategy=strategy_key(run.strategy),
                   link=[run.link.latency_s, run.link.bandwidth_bytes_per_s] if run.strategy.mode == "secure"
                   else None, repeat=run.repeat,
                   env={"host": node.host, "device": node.description, "cpu": node.cpu_model,
                        "cpus": node.cpu_count})


# ---------------------------------------------------------------------------------------------------- measuring


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class _Peak:
    """Peak resident memory of the process during a block (Linux: VmHWM reset through /proc/self/clear_refs;
    elsewhere the process's lifetime peak) and CUDA peak allocation."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.rss_mb: float | None = None
        self.device_mb: float | None = None

    @staticmethod
    def _hwm_kb() -> int | None:
        try:
            m = re.search(r"^VmHWM:\s+(\d+)\s*kB", Path("/proc/self/status").read_text(), re.MULTILINE)
            return int(m.group(1)) if m else None
        except OSError:
            return None

    def __enter__(self) -> "_Peak":
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: Any) -> None:
        kb = self._hwm_kb()
        if kb is None:
            import resource

            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.rss_mb = kb / 1024
        if self.device.startswith("cuda"):
            self.device_mb = torch.cuda.max_memory_allocated() / 2**20


@dataclass
class Reference:
    """The float64 plaintext answer of a case: greedy tokens and per-step last logits, or the embedding."""

    tokens: torch.Tensor | None  # (B, n)
    logits: torch.Tensor | None  # (n, B, V)
    embedding: torch.Tensor | None  # (B, C)


def _reference_logits(cfg: Any, params: dict, prompt: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """float64 last-position logits of each step, teacher-forced on `tokens` (B, n): (n, B, V)."""
    from ..mpc.models import plaintext

    forward = plaintext.causal_lm_forward(cfg)
    cache = plaintext.KVCache.empty(cfg.n_layers)
    out = [forward(cfg, params, prompt, cache)[:, -1]]
    for i in range(tokens.shape[1] - 1):
        out.append(forward(cfg, params, tokens[:, i:i + 1], cache)[:, -1])
    return torch.stack(out)


@functools.lru_cache(maxsize=8)
def reference(case: Case) -> Reference:
    from ..mpc.models import plaintext

    cfg, params = load_model(case.model)
    ids = case_inputs(case)
    if case.task == "embed":
        return Reference(None, None, plaintext.sentence_embedding(cfg, params, ids, torch.ones_like(ids)))
    tokens = plaintext.greedy_generate(cfg, params, ids, case.gen_tokens, eos_token_ids=())
    return Reference(tokens, _reference_logits(cfg, params, ids, tokens), None)


def _accuracy(case: Case, tokens: torch.Tensor | None, logits: torch.Tensor | None,
              embedding: torch.Tensor | None) -> dict[str, Any]:
    ref = reference(case)
    if case.task == "embed":
        got, want = embedding.double().cpu(), ref.embedding
        equal = None
    else:
        tokens = tokens.cpu()
        equal = bool(tokens.shape == ref.tokens.shape and torch.equal(tokens, ref.tokens))
        if logits is None:  # the engine gives tokens only (speculation, batching worker)
            return {"max_abs_err": None, "min_cosine": None, "tokens_equal": equal}
        if equal:
            want = ref.logits
        else:
            cfg, params = load_model(case.model)
            want = _reference_logits(cfg, params, case_inputs(case), tokens)
        got = logits.double().cpu()
    rows_g, rows_w = got.reshape(-1, got.shape[-1]), want.reshape(-1, want.shape[-1])
    return {"max_abs_err": float((got - want).abs().max()),
            "min_cosine": float(torch.nn.functional.cosine_similarity(rows_g, rows_w, dim=-1).min()),
            "tokens_equal": equal}


def _measure_secure(run: Run) -> dict[str, Any]:
    from ..mpc.approx import profile as profiles
    from ..mpc.models import session
    from ..mpc.party import EngineConfig
    from ..mpc.ring import FixedPoint

    s, case = run.strategy, run.case
    cfg, params = load_model(case.model)
    ids = case_inputs(case)
    config = EngineConfig(fxp=FixedPoint(frac_bits=s.frac_bits), device=s.device)
    kwargs: dict[str, Any] = dict(profile=profiles.get(s.profile), config=config, link=run.link.model())
    if s.public_weights:
        kwargs["public_weights"] = True
    if s.batch_requests:
        raise NotImplementedError("batched secure requests are not measured by the sweep yet")
    if case.task == "embed":
        emb, report = session.secure_encode(cfg, params, ids, torch.ones_like(ids), output="embedding", **kwargs)
        acc = _accuracy(case, None, None, emb)
    else:
        gen, report = session.secure_generate(cfg, params, ids, case.gen_tokens, eos_token_ids=(), **kwargs)
        acc = _accuracy(case, gen.tokens, gen.logits, None)
    steps = report.steps
    bytes_pp = report.bytes_per_party
    return {"prefill_s": steps[0].seconds,
            "per_token_s": (sum(x.seconds for x in steps[1:]) / (len(steps) - 1)) if len(steps) > 1 else None,
            "total_s": report.seconds, "load_s": report.load_seconds, "rounds": report.rounds,
            "prefill_rounds": steps[0].rounds, "bytes_per_party_max": max(bytes_pp),
            "bytes_per_party_sum": sum(bytes_pp),
            "steps": [{"seconds": x.seconds, "party_seconds": x.party_seconds, "rounds": x.rounds,
                       "bytes_per_party": list(x.bytes_per_party), "tokens": x.tokens} for x in steps],
            "engine": "mpc.models.session", **acc}


_DTYPES = {"fp64": torch.float64, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class _ComputeDtype:
    """plaintext.py computes in float64 (its module constant F64, looked up at call time); for a lower-precision
    plaintext strategy the same forwards run with that constant swapped for the strategy's dtype."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    def __enter__(self) -> None:
        from ..mpc.models import plaintext

        if not isinstance(getattr(plaintext, "F64", None), torch.dtype):
            raise RuntimeError("plaintext.py no longer has its F64 compute-dtype constant; update the sweep")
        self.saved = plaintext.F64
        plaintext.F64 = self.dtype

    def __exit__(self, *exc: Any) -> None:
        from ..mpc.models import plaintext

        plaintext.F64 = self.saved


def _plain_generate(cfg: Any, params: dict, ids: torch.Tensor, n: int, device: str
                    ) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Greedy generation with plaintext.py and a KV cache, each step timed: tokens (B, n), logits (n, B, V)."""
    from ..mpc.models import plaintext

    forward = plaintext.causal_lm_forward(cfg)
    cache = plaintext.KVCache.empty(cfg.n_layers)
    tokens, logits, times = [], [], []
    step_ids = ids
    with torch.inference_mode():
        for _ in range(n):
            t0 = time.perf_counter()
            last = forward(cfg, params, step_ids, cache)[:, -1]
            token = last.argmax(-1)
            _sync(device)
            times.append(time.perf_counter() - t0)
            tokens.append(token)
            logits.append(last)
            step_ids = token[:, None]
    return torch.stack(tokens, dim=1), torch.stack(logits), times


def _timed_median(once: Callable[[], tuple[Any, list[float]]], quick_s: float = 2.0, repeats: int = 3
                  ) -> tuple[Any, list[float], float]:
    """One untimed warm-up, then 2 * `repeats` - 1 timed runs if the warm-up took under `quick_s` / 4, `repeats`
    under `quick_s`, else one: the last
    run's output, each step's median time over the runs, and the warm-up's wall time."""
    t0 = time.perf_counter()
    once()
    warm = time.perf_counter() - t0
    n = 2 * repeats - 1 if warm < quick_s / 4 else repeats if warm < quick_s else 1
    runs = [once() for _ in range(n)]
    steps = [sorted(r[1][i] for r in runs)[len(runs) // 2] for i in range(len(runs[0][1]))]
    return runs[-1][0], steps, warm


def _measure_plain(run: Run) -> dict[str, Any]:
    s, case = run.strategy, run.case
    fast, why = fast_engine()
    if case.task == "generate" and fast is not None and not _FastAdapter.unsupported(fast, s):
        return _FastAdapter(fast).measure(run)
    if any((s.quantization != "none", s.static_cache, s.batch_requests, s.cuda_graphs, s.compile,
            s.speculation != "none")):
        raise RuntimeError(why or f"{s.name} needs the fast engine, which runs decoders only")
    from ..mpc.models import plaintext

    cfg, params64 = load_model(case.model)
    dtype = _DTYPES[s.precision]
    ids = case_inputs(case).to(s.device)
    t0 = time.perf_counter()
    params = {k: v.to(device=s.device, dtype=dtype) for k, v in params64.items()}
    _sync(s.device)
    load_s = time.perf_counter() - t0
    with _ComputeDtype(dtype):
        if case.task == "embed":
            mask = torch.ones_like(ids)

            def once() -> tuple[torch.Tensor, list[float]]:
                with torch.inference_mode():
                    t0 = time.perf_counter()
                    emb = plaintext.sentence_embedding(cfg, params, ids, mask)
                    _sync(s.device)
                    return emb, [time.perf_counter() - t0]
        else:
            def once() -> tuple[tuple[torch.Tensor, torch.Tensor], list[float]]:
                tokens, logits, times = _plain_generate(cfg, params, ids, case.gen_tokens, s.device)
                return (tokens, logits), times

        out, times, warm = _timed_median(once)
    if case.task == "embed":
        if out.dtype != dtype:
            raise RuntimeError(f"plaintext forward computed in {out.dtype}, not {dtype}")
        acc = _accuracy(case, None, None, out)
    else:
        if out[1].dtype != dtype:
            raise RuntimeError(f"plaintext forward computed in {out[1].dtype}, not {dtype}")
        acc = _accuracy(case, out[0], out[1], None)
    return {"prefill_s": times[0], "per_token_s": (sum(times[1:]) / (len(times) - 1)) if len(times) > 1 else None,
            "total_s": sum(times), "load_s": load_s,
            "steps": [{"seconds": t, "tokens": int(ids.numel()) if i == 0 else case.batch}
                      for i, t in enumerate(times)],
            "engine": "mpc.models.plaintext", "notes": {"warmup_s": warm}, **acc}


class _FastAdapter:
    """Plaintext decoder strategies on the fast engine (`secureinfer.mpc.models.fast.FastDecoder`, issue 5).

    The decoder is built once per run (packing, int8 quantization, CUDA graph capture: `load_s`), one untimed
    generation warms it up (torch.compile compiles there; its time goes to env_json's warmup_s), then:
      step by step  prefill, then decode_step per new token, each timed and its logits kept (accuracy on logits);
      speculation   `generate` (early-exit drafts) timed whole; prefill timed apart on a fresh cache, per_token_s =
                    (total - prefill) / (n - 1); accuracy on tokens only;
      batching      `batch` concurrent requests (one per row) submitted at once to a BatchingWorker, timed from
                    the first submit to the last result; prefill = the same with one new token (time to first
                    token); per-token as for speculation; accuracy on tokens only.
    """

    def __init__(self, module: Any) -> None:
        self.module = module

    @staticmethod
    def unsupported(module: Any, strategy: Any) -> str:
        if not hasattr(module, "FastDecoder"):
            return "secureinfer.mpc.models.fast has no FastDecoder"
        if strategy.speculation == "draft":
            return "speculation='draft' (a separate draft model) is not implemented by the fast engine"
        if strategy.compile and not strategy.static_cache:
            return "the fast engine compiles only with static_cache"
        return ""

    def measure(self, run: Run) -> dict[str, Any]:
        s, case = run.strategy, run.case
        if case.task != "generate":
            raise RuntimeError("the fast engine runs decoders only")
        why = self.unsupported(self.module, s)
        if why:
            raise RuntimeError(why)
        cfg, params = load_model(case.model)
        n, b = case.gen_tokens, case.batch
        ids = case_inputs(case).to(s.device)
        t0 = time.perf_counter()
        dec = self.module.FastDecoder(cfg, params, s, max_batch=b,
                                      max_len=min(cfg.max_positions, case.seq_len + n))
        _sync(s.device)
        load_s = time.perf_counter() - t0

        def prefill_s() -> float:
            dec.reset(b)
            t0 = time.perf_counter()
            dec.prefill(ids)
            _sync(s.device)
            return time.perf_counter() - t0

        def split(total: float, pre: float) -> list[float]:
            """[prefill, per-token x (n - 1)] summing to the measured total (the split is derived)."""
            return [pre] + [(total - pre) / (n - 1)] * (n - 1) if n > 1 else [total]

        def stepwise() -> tuple[Any, list[float]]:
            dec.reset(b)
            times, tokens, logits = [], [], []
            t0 = time.perf_counter()
            last = dec.prefill(ids)
            token = last.argmax(-1)
            _sync(s.device)
            times.append(time.perf_counter() - t0)
            tokens.append(token)
            logits.append(last)
            for _ in range(n - 1):
                t0 = time.perf_counter()
                last = dec.decode_step(token)
                token = last.argmax(-1)
                _sync(s.device)
                times.append(time.perf_counter() - t0)
                tokens.append(token)
                logits.append(last)
            return (torch.stack(tokens, dim=1), torch.stack(logits)), times

        def speculative() -> tuple[Any, list[float]]:
            pre = prefill_s()
            t0 = time.perf_counter()
            tokens = dec.generate(ids, n, eos_token_ids=())
            _sync(s.device)
            return (tokens, None), split(time.perf_counter() - t0, pre)

        def on_worker(k: int) -> tuple[torch.Tensor, float]:
            with self.module.BatchingWorker(dec, max_batch=b, eos_token_ids=()) as worker:
                t0 = time.perf_counter()
                futures = [worker.submit(ids[r].cpu(), k, eos_token_ids=()) for r in range(b)]
                tokens = torch.stack([f.result() for f in futures])
                return tokens, time.perf_counter() - t0

        def batched() -> tuple[Any, list[float]]:
            # The prefill is the worker's time to first token (requests of one new token), timed on the worker's
            # thread like the generation: a prefill timed on this thread right after a worker ran pays for the
            # other thread's idle OpenMP pool (several times slower on 2 cores).
            _, pre = on_worker(1)
            tokens, total = on_worker(n)
            return (tokens, None), split(total, pre)

        once = batched if s.batch_requests else speculative if s.speculation != "none" else stepwise
        with torch.no_grad():  # not inference_mode: the batching worker's thread updates the same cache in place
            (tokens, logits), times, warm = _timed_median(once)
        acc = _accuracy(case, tokens, logits, None)
        derived = once is not stepwise
        per_token = (sum(times[1:]) / (len(times) - 1)) if n > 1 else None
        if per_token is not None and per_token <= 0:
            per_token = None  # the whole generation was not measurably longer than a prefill alone
        total = sum(times)
        return {"prefill_s": times[0], "per_token_s": per_token, "total_s": total, "load_s": load_s, **acc,
                "steps": [{"seconds": t, "tokens": int(ids.numel()) if i == 0 else b} for i, t in enumerate(times)],
                "engine": "mpc.models.fast", "notes": {"warmup_s": warm, "derived_per_token": derived}}


def _env(node: Node, engine: str | None) -> dict[str, Any]:
    return {"torch": torch.__version__, "python": sys.version.split()[0], "threads": torch.get_num_threads(),
            "platform": platform.platform(), "cpu_model": node.cpu_model, "commit": _git_commit_cached(),
            "engine": engine, "gpu": torch.cuda.get_device_name(0) if node.device.startswith("cuda") else None,
            "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


@functools.lru_cache(maxsize=1)
def _git_commit_cached() -> str | None:
    return _git_commit()


def measure(run: Run, node: Node) -> Any:
    """Run one grid point and return its RunRecord (status 'error' with the message if it raised)."""
    from ..mpc.models.strategy import to_json
    from ..selector.store import RunRecord

    secure = run.strategy.mode == "secure"
    base: dict[str, Any] = dict(
        key=key_for(run, node), model=run.case.model, arch=MODELS[run.case.model].arch, seq_len=run.case.seq_len,
        batch=run.case.batch, gen_tokens=run.case.gen_tokens, task=run.case.task, device=node.description,
        cpu_count=node.cpu_count, matmul_gflops=node.matmul_gflops, memory_bytes=node.memory_bytes, host=node.host,
        latency_s=run.link.latency_s if secure else 0.0,
        bandwidth_bytes_per_s=run.link.bandwidth_bytes_per_s if secure else None, mode=run.strategy.mode,
        strategy_name=run.strategy.name, strategy_json=to_json(run.strategy), repeat=run.repeat,
        n_params=None, n_layers=None, hidden=None, vocab=None)
    peak = _Peak(node.device)
    try:
        cfg, params = load_model(run.case.model)
        base.update(n_params=sum(v.numel() for v in params.values()), n_layers=cfg.n_layers, hidden=cfg.hidden,
                    vocab=cfg.vocab_size)
        reference(run.case)  # the float64 answer, outside the clock and the memory window
        _collect()  # the previous run's garbage (reference cycles, freed arenas) out of this run's peak
        with peak:
            out = (_measure_secure if secure else _measure_plain)(run)
    except Exception as exc:  # noqa: BLE001 - recorded, the sweep goes on
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        return RunRecord(timestamp=time.time(), status="error", error=f"{type(exc).__name__}: {exc}"[:2000],
                         env_json=json.dumps({**_env(node, None), "traceback": "".join(tb[-6:])[-4000:]}), **base)
    finally:
        if node.device.startswith("cuda"):
            torch.cuda.empty_cache()
    steps, engine, notes = out.pop("steps"), out.pop("engine"), out.pop("notes", {})
    return RunRecord(timestamp=time.time(), status="ok", peak_rss_mb=peak.rss_mb, peak_device_mb=peak.device_mb,
                     steps_json=json.dumps(steps), env_json=json.dumps({**_env(node, engine), **notes}), **base,
                     **out)


def _collect() -> None:
    import gc

    from ..mpc.models.session import release_memory

    gc.collect()
    release_memory()


# ---------------------------------------------------------------------------------------------------- driver


def release_models() -> None:
    """Drop the loaded models and references (the next run loads its own) and return the memory to the OS."""
    load_model.cache_clear()
    reference.cache_clear()
    _text_tokens.cache_clear()
    _collect()


def warm_up(device: str) -> None:
    """One small untimed secure session on `device` (thread pools, kernels, first-call costs out of the figures)."""
    from ..mpc.models import session

    cfg = _tiny_config("gpt2")
    ids = torch.zeros(1, 4, dtype=torch.int64)
    from ..mpc.party import EngineConfig

    session.secure_generate(cfg, _random_params(cfg, 0), ids, 2, eos_token_ids=(), config=EngineConfig(device=device))


class Progress:
    """A one-line stderr progress bar with the ETA from the mean time of the runs done so far."""

    def __init__(self, total: int, enabled: bool = True, stream: Any = None) -> None:
        self.total, self.done, self.errors, self.enabled = total, 0, 0, enabled
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()

    def show(self, label: str) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        eta_text = "--:--" if math.isnan(eta) else f"{int(eta // 60):02d}:{int(eta % 60):02d}"
        text = (f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"{int(elapsed // 60):02d}:{int(elapsed % 60):02d} elapsed, ETA {eta_text}"
                f"{f', {self.errors} errors' if self.errors else ''}  {label[:60]:<60}")
        self.stream.write(text)
        self.stream.flush()

    def step(self, ok: bool) -> None:
        self.done += 1
        self.errors += 0 if ok else 1

    def close(self) -> None:
        if self.enabled:
            self.show("done")
            self.stream.write("\n")
            self.stream.flush()


@dataclass
class SweepResult:
    planned: int
    measured: int
    skipped_existing: int
    errors: int
    skipped_strategies: dict[str, str]


def run_sweep(runs: list[Run], store: Any, *, resume: bool = True, limit: int | None = None,
              host: str | None = None, progress: bool = True, skipped: dict[str, str] | None = None,
              nodes: dict[str, Node] | None = None, log: Callable[[str], None] | None = None) -> SweepResult:
    """Measure `runs` into `store` (selector.store.Store): rows already present are skipped when `resume`; at most
    `limit` new rows are measured. Skipped strategies are noted in the store's meta table."""
    for name, why in (skipped or {}).items():
        store.set_meta(f"skipped:{name}", why)
    nodes = dict(nodes or {})
    for device in sorted({r.strategy.device for r in runs}):
        if device not in nodes:
            nodes[device] = measure_node(device, host)
    todo, existing = [], 0
    have = store.keys() if resume else set()
    for run in runs:
        if key_for(run, nodes[run.strategy.device]) in have:
            existing += 1
        else:
            todo.append(run)
    if limit is not None:
        todo = todo[:max(limit, 0)]
    bar = Progress(len(todo), progress)
    errors = 0
    if todo:
        bar.show("warm-up")
        for device in sorted({r.strategy.device for r in todo if r.strategy.mode == "secure"}):
            warm_up(device)
    model = None
    for run in todo:
        if run.case.model != model:  # free the previous model, so peak memory is this model's
            release_models()
            model = run.case.model
        bar.show(run.label())
        record = measure(run, nodes[run.strategy.device])
        store.insert(record, replace=True)
        if record.status != "ok":
            errors += 1
            if log:
                log(f"\n{run.label()}: {record.error}")
        bar.step(record.status == "ok")
    bar.close()
    return SweepResult(len(runs), len(todo), existing, errors, dict(skipped or {}))


def rekey(store: Any) -> int:
    """Recompute every row's key with this version's `key_for` (after a change to the key's recipe), from the row's
    own case, strategy, link, repeat and environment columns; returns how many keys changed."""
    from ..mpc.models.strategy import from_json

    changed = 0
    for r in store.query():
        run = Run(Case(r.model, r.seq_len, r.batch, r.gen_tokens), from_json(r.strategy_json),
                  Link("stored", r.latency_s or 0.0, r.bandwidth_bytes_per_s), r.repeat)
        env = json.loads(r.env_json or "{}")
        node = Node(device="", description=r.device, cpu_count=r.cpu_count, matmul_gflops=r.matmul_gflops,
                    memory_bytes=r.memory_bytes, host=r.host, cpu_model=env.get("cpu_model", ""))
        key = key_for(run, node)
        if key != r.key:
            store.rename_key(r.key, key)
            changed += 1
    return changed


def _print_grid(runs: list[Run], skipped: dict[str, str], stream: Any = sys.stdout) -> None:
    for i, run in enumerate(runs):
        print(f"{i + 1:5d}  {run.label()}", file=stream)
    print(f"{len(runs)} runs", file=stream)
    for name, why in sorted(skipped.items()):
        print(f"skipped strategy {name}: {why}", file=stream)


def main(args: argparse.Namespace) -> int:
    """Entry point of `secureinfer bench sweep`."""
    from ..selector.store import StoreError, open_store

    try:
        cases = [Case.parse(c) for c in args.case] if args.case else None
        models = [m for spec in args.models for m in spec.split(",") if m] if args.models else None
        devices = [d for spec in args.device for d in spec.split(",") if d] if args.device else None
        links = [x for spec in args.link for x in spec.split(",") if x] if args.link else None
        for d in devices or []:
            if d.startswith("cuda") and not torch.cuda.is_available():
                raise ValueError(f"device {d!r} requested but torch sees no CUDA GPU")
        if args.repeat < 1:
            raise ValueError("--repeat must be at least 1")
        runs, skipped = build_grid(args.grid, models=models, devices=devices, cases=cases, links=links,
                                   repeats=args.repeat, strategy_filter=args.strategy)
    except ValueError as exc:
        print(f"secureinfer bench sweep: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        _print_grid(runs, skipped)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        store = open_store(args.store)
    except StoreError as exc:
        print(f"secureinfer bench sweep: {exc}", file=sys.stderr)
        return 2
    with store:
        print(f"sweep grid {args.grid}: {len(runs)} runs, store {args.store} ({len(store)} rows), "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr, flush=True)
        for name, why in sorted(skipped.items()):
            print(f"  skipped strategy {name}: {why}", file=sys.stderr)
        result = run_sweep(runs, store, resume=args.resume, limit=args.limit, host=args.host,
                           progress=not args.quiet, skipped=skipped,
                           log=lambda m: print(m, file=sys.stderr, flush=True))
        print(f"measured {result.measured} runs ({result.errors} errors), {result.skipped_existing} already in the "
              f"store; the store holds {len(store)} rows", file=sys.stderr)
        if args.csv:
            n = store.export_csv(args.csv)
            print(f"exported {n} rows to {args.csv}", file=sys.stderr)
    return 0
