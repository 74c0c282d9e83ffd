"""Builds the SecretFlow SPU anchor's own virtual environment (spu 0.9.5 with the jax/numpy it was verified on)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
from typing import Callable

from benchmarks.anchors.errors import AnchorInstallError

SPU_VERSION = "0.9.5"
# spu 0.9.5 declares numpy<2, jax[cpu]>=0.4.16,<=0.4.34 and a few small helpers; these exact versions were installed
# together and ran the SPU runner on this machine (torch is not needed: the runner uses numpy, jax and spu only).
REQUIREMENTS = (
    f"spu=={SPU_VERSION}",
    "jax==0.4.34",
    "jaxlib==0.4.34",
    "numpy==1.26.4",
    "scipy==1.17.1",
    "ml_dtypes==0.5.4",
    "opt_einsum==3.4.0",
    "cachetools==8.0.2",
    "cloudpickle==3.1.3",
    "multiprocess==0.70.19",
    "dill==0.4.1",
    "termcolor==3.3.0",
)
# spu 0.9.5 ships wheels for CPython 3.10 and 3.11 only (Requires-Python <3.12); the pins above (scipy 1.17.1 needs
# >= 3.11) were verified on 3.11.
PYTHONS = ((3, 11),)
STEP_TIMEOUT_S = 1800
CHECK = (
    "import spu, jax, numpy; spu.check_cpu_feature(); "
    "print(spu.__version__, jax.__version__, numpy.__version__)"
)


def python_path(venv_dir: pathlib.Path) -> pathlib.Path:
    """The venv's python interpreter."""
    return pathlib.Path(venv_dir) / "bin" / "python"


def _version_of(python: str) -> tuple[int, int] | None:
    """(major, minor) of a python interpreter, or None when it does not run."""
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
            capture_output=True, text=True, timeout=60, check=False,
        )
    except OSError:
        return None
    if done.returncode != 0:
        return None
    major, minor = done.stdout.split()
    return int(major), int(minor)


def find_base_python() -> str:
    """A CPython 3.11 to make the venv with (this one if it is 3.11, else python3.11 or python3 on PATH)."""
    named = [shutil.which(f"python{major}.{minor}") or "" for major, minor in PYTHONS]
    candidates = [sys.executable, *named, shutil.which("python3") or ""]
    for candidate in candidates:
        if candidate and _version_of(candidate) in PYTHONS:
            return candidate
    raise AnchorInstallError(
        f"the SPU anchor needs CPython 3.11 (spu {SPU_VERSION} ships wheels for 3.10 and 3.11 only, and its pinned "
        f"dependencies were verified on 3.11); none found "
        f"(this python is {sys.version_info[0]}.{sys.version_info[1]}; install python3.11 and retry)"
    )


def _run(cmd: list[str], what: str, log: Callable[[str], None]) -> str:
    """Run one build step, raising AnchorInstallError with the tail of its output when it fails."""
    log(f"spu env: {what}")
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, check=False, env=env)
    except subprocess.TimeoutExpired as exc:
        raise AnchorInstallError(f"SPU anchor install: {what} took over {STEP_TIMEOUT_S} s") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
        raise AnchorInstallError(f"SPU anchor install: {what} failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def is_ready(venv_dir: pathlib.Path) -> bool:
    """True when the venv exists and imports exactly the pinned spu."""
    python = python_path(venv_dir)
    if not python.exists():
        return False
    done = subprocess.run([str(python), "-c", CHECK], capture_output=True, text=True, timeout=300, check=False)
    return done.returncode == 0 and done.stdout.split()[:1] == [SPU_VERSION]


def build(venv_dir: pathlib.Path, log: Callable[[str], None]) -> None:
    """Create the SPU venv at `venv_dir` with the pinned packages (kept as is when it is already complete)."""
    venv_dir = pathlib.Path(venv_dir)
    if is_ready(venv_dir):
        log(f"spu env: {venv_dir} already has spu {SPU_VERSION}")
        return
    if venv_dir.exists():
        shutil.rmtree(venv_dir)
    venv_dir.parent.mkdir(parents=True, exist_ok=True)
    base = find_base_python()
    _run([base, "-m", "venv", str(venv_dir)], f"create the venv with {base}", log)
    python = str(python_path(venv_dir))
    _run([python, "-m", "pip", "install", "-q", "--upgrade", "pip"], "upgrade pip", log)
    _run(
        [python, "-m", "pip", "install", "-q", "--only-binary=:all:", *REQUIREMENTS],
        f"pip install {' '.join(REQUIREMENTS)}", log,
    )
    versions = _run([python, "-c", CHECK], "check that spu imports and this CPU has what it needs", log).split()
    if versions[:1] != [SPU_VERSION]:
        raise AnchorInstallError(f"SPU anchor install: expected spu {SPU_VERSION}, the venv has {versions[:1]}")
    log(f"spu env: ready (spu {versions[0]}, jax {versions[1]}, numpy {versions[2]})")
