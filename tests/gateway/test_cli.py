"""`secureinfer gateway` as a user meets it before it serves: listed in the help, loud about an address beyond
loopback, and one clear line (exit 2, no traceback) for a bad address, a taken port, a bad key file, missing
certificates or a network that does not answer. Serving itself is tested in test_status_page.py."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from secureinfer.net import certs


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "secureinfer", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    certs.create_ca(directory, common_name="gateway test CA")
    certs.issue(directory, "alice", "client")
    return directory


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something already listens on."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def gateway(certs_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return cli("gateway", "--certs", str(certs_dir), "--name", "alice", "--seed", "127.0.0.1:1", "--timeout", "5",
               *args)


def one_line_failure(out: subprocess.CompletedProcess, says: str) -> None:
    assert out.returncode == 2, out
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("secureinfer gateway: ") and says in last, out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_the_help_lists_the_gateway_and_explains_privacy_and_exposure() -> None:
    top = cli("--help")
    assert "gateway" in top.stdout and "secureinfer gateway --seed" in top.stdout
    own = cli("gateway", "--help")
    assert own.returncode == 0 and "127.0.0.1 by default" in own.stdout and '"privacy": "secret"' in own.stdout


def test_an_address_beyond_loopback_is_warned_about_loudly(certs_dir: Path, taken_port: int) -> None:
    """Warned before anything else happens (here the port is taken, so nothing is ever bound)."""
    out = gateway(certs_dir, "--listen", f"0.0.0.0:{taken_port}")
    lines = out.stderr.splitlines()
    assert lines[0].startswith("WARNING: the gateway listens on 0.0.0.0") and "in the clear" in lines[0]
    assert lines[1].startswith("WARNING: no API key is set")
    one_line_failure(out, f"cannot listen on 0.0.0.0:{taken_port}")


def test_an_api_key_quiets_the_second_warning(certs_dir: Path, taken_port: int, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("a-long-enough-key\n")
    out = gateway(certs_dir, "--listen", f"0.0.0.0:{taken_port}", "--api-key-file", str(key))
    assert out.stderr.count("WARNING") == 1 and "in the clear" in out.stderr
    one_line_failure(out, "cannot listen")


def test_loopback_is_not_warned_about_and_a_taken_port_is_one_line(certs_dir: Path, taken_port: int) -> None:
    out = gateway(certs_dir, "--listen", f"127.0.0.1:{taken_port}")
    assert "WARNING" not in out.stderr
    one_line_failure(out, f"cannot listen on 127.0.0.1:{taken_port}: Address already in use")


@pytest.mark.parametrize("args,says", [
    (("--listen", "8080"), "--listen must be HOST:PORT"),
    (("--listen", "::1:8080"), "an IPv6 host goes in brackets"),
    (("--listen", "127.0.0.1:70000"), "port must be in 0..65535"),
    (("--max-tokens", "0"), "default_max_tokens must be an integer >= 1"),
    (("--api-key-file", "/nonexistent/key"), "No such file"),
])
def test_bad_settings_are_one_line(certs_dir: Path, args: tuple[str, ...], says: str) -> None:
    one_line_failure(gateway(certs_dir, *args), says)


def test_a_short_api_key_is_refused(certs_dir: Path, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("short\n")
    one_line_failure(gateway(certs_dir, "--api-key-file", str(key)), "at least 8 characters")


def test_missing_certificates_and_a_silent_network_are_one_line(certs_dir: Path) -> None:
    missing = cli("gateway", "--certs", str(certs_dir), "--name", "bob", "--seed", "127.0.0.1:1",
                  "--listen", "127.0.0.1:0")
    one_line_failure(missing, "certificate of 'bob' not found")
    one_line_failure(gateway(certs_dir, "--listen", "127.0.0.1:0"), "no seed node answered")
