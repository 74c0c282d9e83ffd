"""Headless Chromium driven over the Chrome DevTools Protocol, for tests of pages served on loopback.

    with Browser(tmp_path) as browser:
        browser.open("http://127.0.0.1:8080/")
        browser.evaluate("document.title")
        browser.screenshot(tmp_path / "page.png")

Debian's `chromium` package (/usr/bin/chromium), started as root with the flags that keep it off the network, a fresh
profile, and `--remote-debugging-port=0`; the port it chose is read from the profile's DevToolsActivePort file. The
protocol travels over one websocket (websocket-client, sent without an Origin header so Chromium accepts it).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import websocket

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1", "--window-size=1360,1100",
         "--hide-scrollbars")


class BrowserError(RuntimeError):
    """Chromium did not start, or a DevTools call failed."""


class Browser:
    """One headless Chromium process and its first page."""

    def __init__(self, workdir: Path, start_timeout_s: float = 60.0) -> None:
        profile = workdir / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        self.log = open(workdir / "chromium.log", "wb")
        self.socket: websocket.WebSocket | None = None
        self.process = subprocess.Popen([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                        stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)  # its own group: closing ends its helpers too
        try:
            port = self._port(profile / "DevToolsActivePort", start_timeout_s)
            page = self._page(port, start_timeout_s)
            self.socket = websocket.create_connection(page, timeout=30, suppress_origin=True)
        except BaseException:
            self.close()
            raise
        self._ids = itertools.count(1)

    def _port(self, path: Path, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrowserError(f"chromium exited with {self.process.returncode}; see {self.log.name}")
            text = path.read_text() if path.exists() else ""
            if text.split("\n")[0].strip().isdigit():
                return int(text.split("\n")[0])
            time.sleep(0.1)
        raise BrowserError(f"chromium opened no DevTools port within {timeout_s} s; see {self.log.name}")

    def _page(self, port: int, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
                pages = [t for t in json.load(answer) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.1)
        raise BrowserError("chromium has no page")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command's result (events arriving meanwhile are skipped)."""
        ident = next(self._ids)
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, timeout_s: float = 30.0) -> None:
        """Load `url` and wait until the document has loaded."""
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'", timeout_s)

    def wait_for(self, expression: str, timeout_s: float, step_s: float = 0.2) -> Any:
        """Poll a JavaScript expression until it is truthy; its value, or BrowserError naming it."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"not true after {timeout_s} s: {expression}")
            time.sleep(step_s)

    def screenshot(self, path: Path) -> bytes:
        """A PNG of the whole page, written to `path`."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png", clip=clip,
                                          captureBeyondViewport=True)["data"])
        path.write_bytes(data)
        return data

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(10)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        self.log.close()

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
