"""The status page in headless Chromium, with the gateway started as `secureinfer gateway` in its own process: it
lists the running nodes, the committees and a hosted model, and the requests made through it per mode; after a node
is stopped it shows that node down and its committee down, without a reload. The CLI stops cleanly on SIGTERM.

Set SECUREINFER_STATUS_SCREENSHOT=PATH to keep the page's screenshot there (docs/gateway-status.png was made so).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from secureinfer.lab.simulate import LocalNetwork

from .browser import CHROMIUM
from .conftest import openai_client, start_network, stop_network

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"headless Chromium is not installed ({CHROMIUM}); "
                                "apt-get install -y chromium")
websocket = pytest.importorskip("websocket", reason="the browser is driven with websocket-client (dev extra)")

from .browser import Browser  # noqa: E402

ANNOUNCE = re.compile(r"the OpenAI API at (http://\S+)/v1 and the status page")


@pytest.fixture(scope="module")
def network() -> Iterator[LocalNetwork]:
    network = start_network()
    try:
        yield network
    finally:
        stop_network(network)


class GatewayProcess:
    """`secureinfer gateway` in a child process, on a free loopback port it announces."""

    def __init__(self, network: LocalNetwork) -> None:
        command = [sys.executable, "-m", "secureinfer", "gateway", "--certs", str(network.certs_dir), "--name",
                   "client", "--seed", network.seed, "--listen", "127.0.0.1:0", "--max-tokens", "2"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        stdin=subprocess.DEVNULL)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self._announced(60.0)

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)

    def _announced(self, timeout_s: float) -> str:
        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            self.process.kill()
            raise AssertionError(f"the gateway announced nothing: {self.process.stderr.read()}") from None
        match = ANNOUNCE.search(line)
        assert match, line
        return match.group(1)

    def stop(self) -> tuple[int, str]:
        """SIGTERM, and its exit status and standard error."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        return self.process.returncode, self.process.stderr.read()


NODES = "[...document.querySelectorAll('#nodes tbody tr')].map(r => [r.dataset.node, r.dataset.health])"
COMMITTEES = "[...document.querySelectorAll('#committees tbody tr')].map(r => r.innerText)"


def test_the_status_page_shows_the_network_and_follows_a_node_going_down(network: LocalNetwork,
                                                                         tmp_path: Path) -> None:
    gateway = GatewayProcess(network)
    try:
        llm = openai_client(gateway.url)
        llm.chat.completions.create(model="chat", messages=[{"role": "user", "content": "Hi"}], temperature=0)
        llm.chat.completions.create(model="chat", messages=[{"role": "user", "content": "Hi"}], temperature=0,
                                    extra_body={"privacy": "public"})
        llm.embeddings.create(model="embed", input=["one sentence", "another one"])
        with Browser(tmp_path) as browser:
            browser.open(gateway.url + "/")
            browser.wait_for(f"{NODES}.length === 3", 30)
            assert browser.evaluate(NODES) == [["node-0", "up"], ["node-1", "up"], ["node-2", "up"]]
            models = browser.evaluate("[...document.querySelectorAll('#models tbody tr')].map(r => r.dataset.model)")
            assert models == ["owner/chat", "owner/embed", "owner/plain"]
            committees = browser.evaluate(COMMITTEES)
            for model in ("owner/chat", "owner/embed"):
                assert any(c.split("\t")[1:] == ["secure (3 parties)", "node-0 node-1 node-2", model, "up"]
                           for c in committees), committees
            browser.wait_for("document.querySelectorAll('#recent tbody tr').length === 3", 20)
            modes = browser.evaluate("[...document.querySelectorAll('#modes tbody tr')].map(r => r.innerText)")
            assert modes[0].startswith("secure\t2\t0") and modes[1].startswith("plaintext\t1\t0"), modes
            png = browser.screenshot(tmp_path / "status.png")
            assert png.startswith(b"\x89PNG") and len(png) > 10_000
            keep = os.environ.get("SECUREINFER_STATUS_SCREENSHOT")
            if keep:
                Path(keep).write_bytes(png)
            network.kill("node-2")
            browser.wait_for(f"JSON.stringify({NODES}) === JSON.stringify([['node-0', 'up'], ['node-1', 'up'], "
                             f"['node-2', 'down']])", 40)
            browser.wait_for(f"{COMMITTEES}.some(c => c.includes('secure') && c.endsWith('down'))", 10)
            assert browser.evaluate("document.getElementById('tile-nodes').textContent") == "2 / 3"
            browser.screenshot(tmp_path / "status-node-down.png")
    finally:
        status, errors = gateway.stop()
    assert status == 0 and "Traceback" not in errors, errors
