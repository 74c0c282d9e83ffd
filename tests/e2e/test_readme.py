"""README.md as a user runs it: every code block, in document order, in one shell session and one working folder.

- `bash` blocks go to one long-lived bash (`set -euo pipefail`), as if typed into one terminal: a network started in
  the background by one block (`... &`) is there for the next, and `kill %1` stops it.
- `python` blocks run with this interpreter, each in a fresh process, in the same folder.
- `toml` blocks are written to the file their first line names (`# node-a.toml`).

The two set-up commands at the top make a virtual environment and install into it, which is what CI itself does:
the test checks that the versions they pin are the ones installed here, that `.ci/run` runs exactly the second
(this suite), and runs the first one's own job, `secureinfer simulate`.

The long blocks run with small settings, each change listed in SMALL with its reason, and the README's ports (7001,
7101, 8080) become free ones. Any other block fails the test until it is handled here: the README cannot drift.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```\s*$", re.M | re.S)
SETUP = "python3 -m venv .venv && . .venv/bin/activate && "
BLOCK_TIMEOUT_S = 900.0

# (what the README runs, what this test runs instead, why)
SMALL = [
    (', 8, progress=True)', ', 2, progress=True)', "secure SmolLM2 costs ~10 s per token on 2 cores: 2 tokens"),
    ('"Once upon a time", 8)', '"Once upon a time", 2)', "the same"),
    ('"The capital of France is", 8)', '"The capital of France is", 2)', "the same"),
    ('model="smollm2", max_tokens=8,', 'model="smollm2", max_tokens=2,', "the same, through the gateway"),
    ("secureinfer selector eval               #", "secureinfer selector eval --policies random,fixed --passes 1 "
     "--group tiny-gpt2/dev-vm-2cpu/local #", "the full evaluation takes ~5 minutes: one group, two policies"),
    ("secureinfer selector eval --network     #", "secureinfer selector eval --network --policies random,fixed "
     "--passes 1 #", "the same, at network level"),
    ("secureinfer bench anchors --json anchors.json --markdown anchors.md",
     "secureinfer bench anchors --workload minilm --anchor transformers --no-breakdown --no-ops --json anchors.json "
     "--markdown anchors.md", "SPU's and CrypTen's environments take many minutes to build: MiniLM against "
     "transformers only"),
]


@dataclass(frozen=True)
class Block:
    language: str
    text: str
    line: int  # where it starts in README.md


def readme_blocks() -> list[Block]:
    text = README.read_text()
    return [Block(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1) for m in BLOCK.finditer(text)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _small(text: str, ports: dict[str, str]) -> str:
    for old, new, _ in SMALL:
        text = text.replace(old, new)
    for old, new in ports.items():
        text = text.replace(old, new)
    return text


class Shell:
    """One bash session fed block by block; a reader thread keeps its output (background jobs' too) flowing."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=cwd, env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.transcript: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self._send("set -euo pipefail\n")

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _send(self, text: str) -> None:
        self.process.stdin.write(text)
        self.process.stdin.flush()

    def run(self, block: str, timeout_s: float = BLOCK_TIMEOUT_S) -> str:
        """Run one block; its output, or a test failure with the session's transcript if any command failed."""
        marker = f"__README_BLOCK_DONE_{time.monotonic_ns()}__"
        self._send(block + f"\necho {marker}\n")
        out: list[str] = []
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.1))
            except queue.Empty:
                pytest.fail(f"block did not finish in {timeout_s:.0f} s:\n{block}\noutput:\n{''.join(out)}")
            if line is None:
                pytest.fail(f"a command of this block failed (the shell exited {self.process.wait()}):\n{block}\n"
                            f"output:\n{''.join(out)}")
            if line.strip() == marker:
                self.transcript.extend(out)
                return "".join(out)
            out.append(line)

    def close(self) -> None:
        """SIGTERM everything the session started (simulate stops its nodes on SIGTERM), then SIGKILL."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def session(tmp_path: Path) -> Iterator[tuple[Shell, Path, dict[str, str]]]:
    bin_dir = str(Path(sys.executable).parent)  # `secureinfer` and `python` of this environment first
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    shell = Shell(tmp_path, env)
    try:
        yield shell, tmp_path, env
    finally:
        shell.close()


def _pins(command: str) -> dict[str, str]:
    """name -> version of every `name==version` the command installs."""
    return dict(re.findall(r"([A-Za-z0-9_.-]+)==([A-Za-z0-9_.+-]+)", command))


def _check_setup(command: str) -> str | None:
    """Check a set-up command's pins against this environment; return its own job, or None for the test command."""
    if not command.startswith(SETUP):
        pytest.fail(f"a set-up command must start with {SETUP!r}: {command}")
    for name, version in _pins(command).items():
        installed = metadata.version(name)
        assert installed.split("+")[0] == version, f"README pins {name}=={version}, this environment has {installed}"
    job = command.rpartition(" && ")[2]
    if job == "python -m pytest -q":  # the test command: CI runs it, and this test is part of it
        ci = (REPO / ".ci" / "run").read_text()
        assert "grep -E '^python3 -m venv .* pytest' README.md | head -n 1" in ci, ".ci/run must run the README's"
        return None
    return job


@pytest.mark.slow
def test_every_readme_block_runs_as_written(session: tuple[Shell, Path, dict[str, str]]) -> None:
    shell, cwd, env = session
    blocks = readme_blocks()
    assert len(blocks) >= 10, f"README.md has only {len(blocks)} code blocks: did the pattern break?"
    ports = {"7001": str(_free_port()), "7101": str(_free_port()), "8080": str(_free_port())}
    setups = [b for b in blocks if b.language == "bash" and b.text.startswith(SETUP)]
    assert len(setups) == 2, "README.md keeps its two set-up commands at the top"
    ran = 0
    for block in blocks:
        where = f"README.md:{block.line}"
        if block in setups:
            job = _check_setup(block.text.strip())
            if job is not None:
                out = shell.run(job)
                assert "summary:" in out, f"{where}: the main job printed no summary:\n{out}"
        elif block.language == "bash":
            shell.run(_small(block.text, ports))
        elif block.language == "python":
            code = _small(block.text, ports)
            done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=BLOCK_TIMEOUT_S)
            assert done.returncode == 0, f"{where} failed:\n{code}\n{done.stdout}\n{done.stderr}"
        elif block.language == "toml":
            name = re.match(r"# (\S+\.toml)\n", block.text)
            assert name, f"{where}: a TOML block starts with '# FILE.toml', the file it is"
            (cwd / name.group(1)).write_text(_small(block.text, ports))
        else:
            pytest.fail(f"{where}: a {block.language!r} block; run it here, or say why not")
        ran += 1
    assert ran == len(blocks)


def test_readme_blocks_are_all_handled() -> None:
    """Fast: every block's language is one the walkthrough runs, and both set-up commands pin what is installed."""
    blocks = readme_blocks()
    assert {b.language for b in blocks} <= {"bash", "python", "toml"}, [b.language for b in blocks]
    setups = [b.text.strip() for b in blocks if b.language == "bash" and b.text.startswith(SETUP)]
    assert len(setups) == 2
    assert _check_setup(setups[0]) == "secureinfer simulate"
    assert _check_setup(setups[1]) is None
    unused = [old for old, _, _ in SMALL if old not in README.read_text()]
    assert not unused, f"small settings for README text that is no longer there: {unused}"
