"""Builds the CrypTen anchor's own virtual environment (torch 2.13.0 CPU, crypten 0.4.1, import fixes inside it)."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

from benchmarks.anchors.errors import AnchorInstallError

TORCH_REQUIREMENT = "torch==2.13.0"
CRYPTEN_REQUIREMENT = "crypten==0.4.1"
# What `import crypten` really needs beside torch; crypten's declared deps (torchvision, onnx, pandas, scipy, sklearn,
# tensorboard, future) serve only its ONNX/TensorFlow converters, model zoo and tensorboard helpers, which the
# runner does not use (and PyPI's torchvision does not import beside torch 2.13.0 here).
MINIMAL_DEPS = ("numpy==2.4.6", "PyYAML==6.0.3", "omegaconf==2.3.0", "antlr4-python3-runtime==4.9.3")
PATCH_MARKER = "# secureinfer-benchmark-patch"
STEP_TIMEOUT_S = 1800


@dataclass(frozen=True)
class SourcePatch:
    """One textual fix to an installed crypten file: `old` must occur exactly once and becomes `new`."""

    relpath: str
    old: str
    new: str


_ONNX_IMPORT = "from .onnx_converter import from_onnx, from_pytorch, from_tensorflow, TF_AND_TF2ONNX\n"
_ONNX_GUARDED = f"""try:  {PATCH_MARKER}: the ONNX converter imports torch.onnx internals gone from current torch
    from .onnx_converter import from_onnx, from_pytorch, from_tensorflow, TF_AND_TF2ONNX
except ImportError as _onnx_import_error:
    _ONNX_REASON = f"crypten's ONNX converter is unavailable on this torch: {{_onnx_import_error}}"
    TF_AND_TF2ONNX = False

    def from_onnx(*args, **kwargs):
        raise ImportError(_ONNX_REASON)

    def from_pytorch(*args, **kwargs):
        raise ImportError(_ONNX_REASON)

    def from_tensorflow(*args, **kwargs):
        raise ImportError(_ONNX_REASON)
"""

PATCHES: tuple[SourcePatch, ...] = (SourcePatch("crypten/nn/__init__.py", _ONNX_IMPORT, _ONNX_GUARDED),)


def python_path(venv_dir: pathlib.Path) -> pathlib.Path:
    """The venv's python interpreter."""
    return pathlib.Path(venv_dir) / "bin" / "python"


def apply_patch(text: str, patch: SourcePatch) -> str:
    """The file text with `patch` applied; already-patched text comes back unchanged."""
    if PATCH_MARKER in text and patch.new in text:
        return text
    count = text.count(patch.old)
    if count != 1:
        raise AnchorInstallError(
            f"cannot apply the CrypTen import fix to {patch.relpath}: expected its line once, found it {count} times "
            f"(is this crypten {CRYPTEN_REQUIREMENT.split('==')[1]}?)"
        )
    return text.replace(patch.old, patch.new)


def site_packages(venv_dir: pathlib.Path) -> pathlib.Path:
    """The venv's site-packages folder."""
    found = sorted(pathlib.Path(venv_dir).glob("lib/python3*/site-packages"))
    if not found:
        raise AnchorInstallError(f"{venv_dir} is not a virtual environment: it has no lib/python3*/site-packages")
    return found[0]


def apply_patches(venv_dir: pathlib.Path, log: Callable[[str], None]) -> None:
    """Apply every import fix to the crypten installed in the venv (never to anything outside it)."""
    root = site_packages(venv_dir)
    for patch in PATCHES:
        path = root / patch.relpath
        if not path.is_file():
            raise AnchorInstallError(f"crypten is not installed in {venv_dir}: {path} is missing")
        text = path.read_text()
        patched = apply_patch(text, patch)
        if patched != text:
            path.write_text(patched)
            log(f"crypten: patched {patch.relpath}")


def _run(cmd: list[str], what: str, log: Callable[[str], None]) -> None:
    """Run one install step, raising AnchorInstallError with the tail of its output on failure."""
    log(f"crypten: {what}")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AnchorInstallError(f"CrypTen anchor install failed at '{what}': {exc}") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise AnchorInstallError(f"CrypTen anchor install failed at '{what}': {' | '.join(tail)}")


def build(venv_dir: pathlib.Path, log: Callable[[str], None]) -> None:
    """Create the CrypTen venv: torch 2.13.0 first, then crypten 0.4.1 without its deps, its minimal deps, fixes."""
    venv_dir = pathlib.Path(venv_dir)
    python = python_path(venv_dir)
    if not python.exists():
        _run([sys.executable, "-m", "venv", str(venv_dir)], f"creating venv {venv_dir}", log)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    _run(pip + [TORCH_REQUIREMENT], f"installing {TORCH_REQUIREMENT} (CPU wheel)", log)
    _run(pip + list(MINIMAL_DEPS), "installing " + " ".join(MINIMAL_DEPS), log)
    _run(pip + ["--no-deps", CRYPTEN_REQUIREMENT], f"installing {CRYPTEN_REQUIREMENT} --no-deps", log)
    apply_patches(venv_dir, log)
    check = "import crypten, torch; print(crypten.__version__, torch.__version__)"
    _run([str(python), "-c", check], "checking that crypten imports", log)
    log(f"crypten: venv ready at {venv_dir}")
