"""`secureinfer bench anchors`: the side-by-side benchmarks of benchmarks/anchors, run from any folder.

benchmarks/ is not part of the installed package: it lives in the source checkout secureinfer was installed from
(`pip install -e .`), beside the package's own folder, and is found there. Every argument goes to the anchors'
command line unchanged, so paths keep meaning what they mean where the command is typed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType

PACKAGE_DIR = Path(__file__).resolve().parents[2]  # the secureinfer package's folder (this is lab/bench/anchors.py)
PROG = ("secureinfer", "bench", "anchors")
ENTRY = "benchmarks.anchors.__main__"


class NoCheckout(RuntimeError):
    """secureinfer was not installed from a source checkout, so there are no benchmarks/anchors to run."""


def checkout(package_dir: Path | None = None) -> Path:
    """The source checkout holding `package_dir` (default: this installation's) and benchmarks/anchors beside it, or
    NoCheckout saying what to do."""
    package_dir = package_dir or PACKAGE_DIR
    root = package_dir.parent
    if not (root / "benchmarks" / "anchors" / "__main__.py").is_file():
        raise NoCheckout(f"the anchor benchmarks live in a source checkout (benchmarks/anchors), and secureinfer at "
                         f"{package_dir} was not installed from one: clone the repository and install it with "
                         "`pip install -e .`, then run this from any folder")
    return root


def entry_point(root: Path) -> ModuleType:
    """The anchors' command-line module from the checkout at `root` (added to the end of sys.path, so it shadows
    nothing installed)."""
    if str(root) not in sys.path:
        sys.path.append(str(root))
    module = importlib.import_module(ENTRY)
    if not Path(module.__file__ or "").resolve().is_relative_to(root):
        raise NoCheckout(f"{ENTRY} was imported from {module.__file__}, not from the checkout at {root}: another "
                         "package named 'benchmarks' is installed")
    return module


def main(args: argparse.Namespace) -> int:
    """Entry point of `secureinfer bench anchors`: the checkout's `python -m benchmarks.anchors ARGS`."""
    try:
        anchors = entry_point(checkout())
    except NoCheckout as exc:
        print(f"secureinfer bench anchors: {exc}", file=sys.stderr)
        return 2
    return anchors.main(list(args.anchor_args), prog=PROG)
