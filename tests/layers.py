"""Run the layer contracts (import-linter, configured in pyproject.toml) over the installed package layout.

The import namespace `secureinfer.*` is spread over several top-level folders (setup.py's PACKAGE_ROOTS), while
import-linter finds a package's modules by walking one directory. So this builds that directory in a temporary
folder, `secureinfer/` made of symbolic links to every mapped folder, and runs `lint-imports` against it.

    python -m tests.layers          # prints the contracts and exits non-zero if one is broken
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def package_roots() -> dict[str, str]:
    """setup.py's PACKAGE_ROOTS: import name -> folder (read, not executed: setup.py calls setup())."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "PACKAGE_ROOTS":
            return ast.literal_eval(node.value)
    raise RuntimeError("setup.py defines no PACKAGE_ROOTS")


def build_tree(root: Path) -> Path:
    """`root/secureinfer`: the package as one directory of symbolic links to the repository's folders."""
    roots = package_roots()
    package = root / "secureinfer"
    package.mkdir()
    for entry in (REPO / roots["secureinfer"]).iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, folder in roots.items():
        if name != "secureinfer":
            link = package.joinpath(*name.split(".")[1:])
            if link.exists():
                raise RuntimeError(f"{name} ({folder}) clashes with {link}")
            link.symlink_to(REPO / folder)
    return package


def run_contracts() -> subprocess.CompletedProcess:
    """`lint-imports` over the assembled tree; returns the finished process (its stdout has the report)."""
    with tempfile.TemporaryDirectory() as tmp:
        build_tree(Path(tmp))
        env = {**os.environ, "PYTHONPATH": tmp}
        lint = Path(sys.executable).with_name("lint-imports")
        return subprocess.run([str(lint), str(REPO / "pyproject.toml"), "--no-cache"], cwd=tmp, env=env,
                              capture_output=True, text=True, timeout=300)


if __name__ == "__main__":
    result = run_contracts()
    print(result.stdout + result.stderr)
    sys.exit(result.returncode)
