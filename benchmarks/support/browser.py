"""Headless Chromium (Debian's `chromium`) driven over its DevTools protocol: for the docs'
screenshots (`scripts/screenshot.py`) and the tests that open a page as a user would. It
runs with no network of its own (background fetches off), on a free loopback debugging
port, in a throwaway profile, and stops as one process group."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duration.errors import DurationError
from duration.infra.net import free_port
from duration.infra.proc import stop_group

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,860",
]


def binary() -> str:
    """The chromium executable, or a one-line error saying how to install it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise DurationError("chromium is not installed: run `make install` (Debian's chromium)")
    return found


@dataclass
class Page:
    """One tab: DevTools calls, and the events seen meanwhile (console, network)."""

    ws: Any
    n: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise DurationError(f"chromium: {method}: {msg['error'].get('message')}")
                return dict(msg.get("result", {}))
            if "method" in msg:
                self.events.append(msg)

    def wait(self, seconds: float) -> None:
        """Let the page work for `seconds`, keeping the events it sends."""
        import websocket  # deferred: only the browser's callers need websocket-client

        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.ws.settimeout(left)
            with contextlib.suppress(websocket.WebSocketTimeoutException):
                msg = json.loads(self.ws.recv())
                if "method" in msg:
                    self.events.append(msg)
        self.ws.settimeout(60)

    def open(self, url: str, wait_s: float) -> None:
        self.call("Page.navigate", url=url)
        self.wait(wait_s)

    def screenshot(self, out: Path) -> Path:
        png = self.call("Page.captureScreenshot", format="png")["data"]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(png))
        return out

    def text(self) -> str:
        """The page's visible text."""
        got = self.call("Runtime.evaluate", expression="document.body.innerText")
        return str(got.get("result", {}).get("value", ""))

    def errors(self) -> list[str]:
        """What went wrong so far: console errors, uncaught exceptions, and HTTP answers of
        400 or more, one line each."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") == "error":
                args = p.get("args", [])
                out.append(
                    "console: " + " ".join(str(a.get("value", a.get("description"))) for a in args)
                )
            elif e["method"] == "Runtime.exceptionThrown":
                out.append("exception: " + str(p.get("exceptionDetails", {}).get("text")))
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append("log: " + str(p["entry"].get("text")))
            elif e["method"] == "Network.responseReceived":
                r = p.get("response", {})
                if int(r.get("status", 0)) >= 400:
                    out.append(f"http {r.get('status')}: {r.get('url')}")
        return out


def _debugger(port: int, deadline: float) -> str:
    """The first tab's DevTools websocket address, once Chromium answers."""
    while True:
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                tabs = [t for t in json.loads(r.read()) if t.get("type") == "page"]
            if tabs:
                return str(tabs[0]["webSocketDebuggerUrl"])
        if time.monotonic() > deadline:
            raise DurationError("chromium did not open its DevTools port within 60 s")
        time.sleep(0.3)


@contextlib.contextmanager
def chromium(
    flags: list[str] | None = None, headers: dict[str, str] | None = None
) -> Iterator[Page]:
    """A headless Chromium and its first tab (console, log and network events on; `headers`
    sent with every request, as a logged-in browser sends its basic auth)."""
    import websocket  # deferred: only the browser's callers need websocket-client

    port = free_port()
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen(
            [
                *(binary(), *FLAGS, *(flags or [])),
                *(f"--user-data-dir={profile}", f"--remote-debugging-port={port}", "about:blank"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its helper processes too are stopped as one group
        )
        try:
            ws = websocket.create_connection(
                _debugger(port, time.monotonic() + 60), timeout=60, suppress_origin=True
            )
            page = Page(ws=ws)
            for domain in ("Page", "Runtime", "Log", "Network"):
                page.call(f"{domain}.enable")
            if headers:
                page.call("Network.setExtraHTTPHeaders", headers=headers)
            yield page
            ws.close()
        finally:
            stop_group(proc.pid)
