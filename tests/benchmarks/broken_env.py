"""An anchor environment whose build really fails: a venv made without pip is asked to pip-install (test helper)."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from typing import Callable

from benchmarks.anchors.errors import AnchorInstallError


def python_path(venv_dir: pathlib.Path) -> pathlib.Path:
    """The venv's interpreter."""
    return venv_dir / "bin" / "python"


def build(venv_dir: pathlib.Path, log: Callable[[str], None]) -> None:
    """Create a venv without pip, then try to install into it; raises AnchorInstallError."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv_dir)], check=True)
    proc = subprocess.run([str(python_path(venv_dir)), "-m", "pip", "install", "nothing-at-all==0"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise AnchorInstallError(f"pip install failed: {proc.stderr.strip().splitlines()[-1]}")
