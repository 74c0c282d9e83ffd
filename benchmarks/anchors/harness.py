"""Run secureinfer and each anchor on the same workloads, in turn, in one run; collect figures, accuracy and ratios.

Every system runs as a subprocess of the same command-line shape (--workload, --out, --output-npy, --repeats), so
each has its own interpreter, its own peak memory and, for the anchors, its own virtual environment. The systems
run one after another per workload (secureinfer first), so they see the same machine at nearly the same time.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import accuracy, projection, workloads
from .errors import AnchorInstallError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent  # the checkout: every runner runs from here
ENV_DIR = ROOT / ".anchors"
WORK_DIR = ENV_DIR / "work"
OURS = "secureinfer"


@dataclass(frozen=True)
class System:
    """One system under test: how to run its runner and, for an anchor, how to build its environment."""

    name: str
    runner: str                      # a module of this package (main venv) or a script file (anchor venv)
    env_module: str | None = None    # a module with build(venv, log) and python_path(venv); None: this interpreter
    secure: bool = True
    what: str = ""


SYSTEMS = {
    OURS: System(OURS, "benchmarks.anchors.secureinfer_runner", what="secureinfer, 3 in-process parties"),
    "spu": System("spu", "spu_runner.py", "benchmarks.anchors.spu_env", what="SecretFlow SPU 0.9.5 running PUMA's recipes (ABY3, FM64, f=18)"),
    "crypten": System("crypten", "crypten_runner.py", "benchmarks.anchors.crypten_env", what="CrypTen 0.4.1, 3 parties"),
    "transformers": System("transformers", "benchmarks.anchors.transformers_runner", secure=False,
                           what="Hugging Face transformers, plaintext fp32"),
}
ANCHORS = tuple(name for name in SYSTEMS if name != OURS)


@dataclass(frozen=True)
class HarnessConfig:
    """What to run and where: workloads, anchors, repeats, folders (made absolute: the runners run from the
    checkout's root, wherever the harness was started), per-run time limit."""

    workloads: tuple[str, ...] = workloads.WORKLOADS
    anchors: tuple[str, ...] = ANCHORS
    repeats: int = 1
    env_dir: Path = ENV_DIR
    work_dir: Path = WORK_DIR
    rebuild: bool = False
    timeout_s: float = 3600.0
    breakdown: bool = True
    profiles: tuple[str, ...] = ("accurate",)  # secureinfer runs once per profile; the first is "secureinfer"
    ops: bool = True

    def __post_init__(self) -> None:
        for name in ("env_dir", "work_dir"):
            object.__setattr__(self, name, Path(getattr(self, name)).absolute())


@dataclass
class Environment:
    """A built (or failed) environment: the interpreter to use, or why the anchor is skipped."""

    python: Path | None
    build_seconds: float | None = None
    skipped: str | None = None
    reused: bool = False


@dataclass
class Outcome:
    """Everything one harness run produced."""

    environments: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # workload -> {"systems": {..}, "ratios": {..}}
    ops: dict[str, Any] | None = None


def prepare_environment(system: System, cfg: HarnessConfig, log: Callable[[str], None]) -> Environment:
    """The interpreter for `system`: this one, an anchor venv built earlier, or one built now (timed)."""
    if system.env_module is None:
        return Environment(Path(sys.executable))
    env = importlib.import_module(system.env_module)
    venv = cfg.env_dir / system.name
    python, marker = env.python_path(venv), venv / ".secureinfer-built"
    if python.exists() and marker.exists() and not cfg.rebuild:
        return Environment(python, json.loads(marker.read_text()).get("seconds"), reused=True)
    log(f"building the {system.name} environment in {venv} "
        "(first run only; on a 2-core box SPU took ~1 min, CrypTen ~2 min) ...")
    start = time.perf_counter()
    try:
        env.build(venv, log)
    except (AnchorInstallError, OSError, subprocess.SubprocessError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        log(f"skipping {system.name}: its environment could not be built ({reason})")
        return Environment(None, time.perf_counter() - start, skipped=f"install failed: {reason}")
    seconds = time.perf_counter() - start
    marker.write_text(json.dumps({"seconds": seconds}) + "\n")
    log(f"built the {system.name} environment in {seconds:.0f} s")
    return Environment(python, seconds)


def runner_command(system: System, env: Environment, workload_json: Path, out: Path, npy: Path,
                   cfg: HarnessConfig) -> list[str]:
    """The runner's command line for one workload."""
    target = ["-m", system.runner] if system.runner.startswith("benchmarks.") else [str(HERE / system.runner)]
    cmd = [str(env.python), *target, "--workload", str(workload_json), "--out", str(out), "--output-npy", str(npy),
           "--repeats", str(cfg.repeats)]
    if system.name.startswith(OURS):
        primary = system.name == OURS
        cmd += ["--profile", cfg.profiles[0] if primary else system.name[len(OURS) + 1:]]
        cmd += ["--breakdown"] if cfg.breakdown and primary else []
    return cmd


class RunnerFailed(Exception):
    """A runner gave no result: why (its last stderr line, or the time limit) and its exit status if it exited."""

    def __init__(self, reason: str, returncode: int | None = None) -> None:
        super().__init__(reason)
        self.returncode = returncode


def run_json(cmd: list[str], out: Path, cfg: HarnessConfig) -> dict[str, Any]:
    """Run a runner (from the repository root, within cfg.timeout_s) that writes its JSON to `out`; that JSON."""
    out.unlink(missing_ok=True)
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=cfg.timeout_s,
                              cwd=ROOT)
    except subprocess.TimeoutExpired:
        raise RunnerFailed(f"no result within {cfg.timeout_s:.0f} s") from None
    if proc.returncode != 0 or not out.exists():
        lines = [ln for ln in (proc.stderr or "").splitlines() if ln.strip()]
        raise RunnerFailed(lines[-1].strip() if lines else f"exit status {proc.returncode}", proc.returncode)
    return json.loads(out.read_text())


def run_system(system: System, env: Environment, workload_json: Path, reference: np.ndarray, kind: str,
               cfg: HarnessConfig, log: Callable[[str], None]) -> dict[str, Any]:
    """Run one system on one workload; its figures, accuracy and projections, or why it has none."""
    if env.python is None:
        return {"skipped": env.skipped}
    name = workload_json.stem
    out, npy = cfg.work_dir / f"{system.name}-{name}.json", cfg.work_dir / f"{system.name}-{name}.npy"
    log(f"[{name}] {system.name} ...")
    start = time.perf_counter()
    try:
        result = run_json(runner_command(system, env, workload_json, out, npy, cfg), out, cfg)
    except RunnerFailed as exc:
        log(f"[{name}] {system.name} failed: {exc}")
        return {"failed": str(exc), **({} if exc.returncode is None else {"returncode": exc.returncode})}
    result["wall_seconds"] = time.perf_counter() - start
    result["accuracy"] = accuracy.compare(np.load(npy, allow_pickle=False), reference, kind)
    if system.secure:
        result["projection"] = projection.project_all(result["seconds"], result.get("rounds"),
                                                      result.get("bytes_per_party"))
    log(f"[{name}] {system.name}: {result['seconds']:.2f} s"
        + (f", {max(result['bytes_per_party']) / 1e6:,.1f} MB/party" if result.get("bytes_per_party") else ""))
    return result


def ours_names(cfg: HarnessConfig) -> list[str]:
    """secureinfer's entries: "secureinfer" for the first profile, "secureinfer-<profile>" for the others."""
    return [OURS] + [f"{OURS}-{p}" for p in cfg.profiles[1:]]


def ratios(results: dict[str, dict[str, Any]], ours_name: str = OURS) -> dict[str, dict[str, Any]]:
    """Per anchor that ran: its time and bytes over secureinfer's (above 1: secureinfer is faster / sends less)."""
    ours = results.get(ours_name, {})
    if "seconds" not in ours:
        return {}
    out = {}
    for name, r in results.items():
        if name.startswith(OURS) or "seconds" not in r:
            continue
        entry: dict[str, Any] = {"time": r["seconds"] / ours["seconds"] if ours["seconds"] else None}
        if r.get("bytes_per_party") and ours.get("bytes_per_party"):
            entry["bytes"] = max(r["bytes_per_party"]) / max(max(ours["bytes_per_party"]), 1)
        entry["at_least_as_accurate"] = accuracy.at_least_as_accurate(ours["accuracy"], r["accuracy"])
        out[name] = entry
    return out


def prepare_all(cfg: HarnessConfig, outcome: Outcome, log: Callable[[str], None]) -> dict[str, Environment]:
    """Every system's environment (built when missing); what happened is recorded in `outcome`."""
    envs = {name: prepare_environment(SYSTEMS[OURS], cfg, log) for name in ours_names(cfg)}
    for name in cfg.anchors:
        envs[name] = prepare_environment(SYSTEMS[name], cfg, log)
        outcome.environments[name] = {"build_seconds": envs[name].build_seconds, "reused": envs[name].reused,
                                      "skipped": envs[name].skipped}
    return envs


def run_workload(w: workloads.Workload, envs: dict[str, Environment], cfg: HarnessConfig,
                 log: Callable[[str], None]) -> dict[str, Any]:
    """Write one workload, run secureinfer then each anchor on it: {"systems": {...}, "ratios": {...}}."""
    log(f"[{w.name}] writing the workload and its float64 plaintext reference ...")
    workload_json = workloads.write(w, cfg.work_dir)
    reference = workloads.reference(w).numpy()
    systems = {name: dataclasses.replace(SYSTEMS[OURS], name=name) for name in ours_names(cfg)}
    systems.update({name: SYSTEMS[name] for name in cfg.anchors})
    per_system = {name: run_system(system, envs[name], workload_json, reference, w.output, cfg, log)
                  for name, system in systems.items()}
    return {"systems": per_system, "ratios": ratios(per_system),
            "ratios_by_profile": {name: ratios(per_system, name) for name in ours_names(cfg)}}


def run(cfg: HarnessConfig, log: Callable[[str], None]) -> Outcome:
    """Build the environments, then run every system on every workload; the ops table last."""
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    outcome = Outcome()
    envs = prepare_all(cfg, outcome, log)
    for name in cfg.workloads:
        outcome.results[name] = run_workload(workloads.load(name), envs, cfg, log)
    if cfg.ops and "crypten" in cfg.anchors:
        from .ops import compare_ops

        outcome.ops = compare_ops(envs.get("crypten"), cfg, log)
    return outcome
