"""Screenshot the MLflow UI for the README with headless Chromium (`make screenshot`).

Needs Debian's `chromium` package and a tracking server with the pipeline's runs and
registered model (run `make pipeline` first). Writes two pictures into docs/:

- `mlflow-registry.png`: the Production version, with its Stage, alias, tags and lineage;
- `mlflow-search.png`: the search's parent run with its trials, in the Model training view.

Chromium is driven over its DevTools protocol, so the UI's own settings can be chosen
before the page loads (the Model training workflow) and the assistant panel, which opens by
itself and takes a third of the width, can be closed.

`--team` shoots the team server instead (`duration server start --team`), through its TLS
front, logged in as MLFLOW_TRACKING_USERNAME: `team-login.png`, the Model training view of
the search experiment. Chromium trusts exactly the front's certificate (its key's SPKI pin)
and sends the user's basic-auth header, as a browser does once the user has logged in.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from duration.infra.net import is_healthy
from duration.infra.proc import stop_group
from duration.settings import Settings
from duration.tracking.client import client
from duration.tracking.names import MODEL_NAME, SEARCH_EXPERIMENT

ROOT = Path(__file__).resolve().parents[1]
# The MLflow UI's own localStorage settings (mlflow 3.17).
UI_SETTINGS = {
    "mlflow.workflowType_v1": json.dumps("machine_learning"),
}
CLOSE_ASSISTANT = "document.querySelector('button[aria-label=\"Close\"]')?.click()"
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


class Page:
    """One Chromium tab, driven over the DevTools protocol."""

    def __init__(self, ws_url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.n = 0

    def call(self, method: str, **params) -> dict:
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                return msg.get("result", {})

    def shot(self, url: str, out: Path, wait_s: float) -> None:
        self.call("Page.navigate", url=url)
        time.sleep(wait_s)
        # the assistant panel opens on its own and takes a third of the width: close it
        self.call("Runtime.evaluate", expression=CLOSE_ASSISTANT)
        time.sleep(1.5)
        png = self.call("Page.captureScreenshot", format="png")["data"]
        out.write_bytes(base64.b64decode(png))
        print(out)


def _debugger(port: int, deadline: float) -> str:
    """The first tab's DevTools websocket address, once Chromium answers."""
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                tabs = [t for t in json.loads(r.read()) if t.get("type") == "page"]
            if tabs:
                return tabs[0]["webSocketDebuggerUrl"]
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit("screenshot: chromium did not open its DevTools port")
        time.sleep(0.3)


def targets(uri: str, name: str, search_id: str | None) -> dict[str, str]:
    """The two pages: the Production version, and a search's parent run (default: latest)."""
    import mlflow

    from duration.registry.register import search_run

    mlflow.set_tracking_uri(uri)
    search = search_run(search_id)
    production = client().get_model_version_by_alias(name, "production").version
    exp = client().get_experiment_by_name(SEARCH_EXPERIMENT).experiment_id
    return {
        "mlflow-registry.png": f"{uri}/#/models/{name}/versions/{production}",
        "mlflow-search.png": (
            f"{uri}/#/experiments/{exp}/runs/{search.info.run_id}"
            "/child-runs?workflowType=machine_learning"
        ),
    }


def spki_pin(cert: Path) -> str:
    """The base64 SHA-256 of a certificate's public key, as Chromium pins one."""
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def team_login(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """Chromium's extra flags and headers for the team server: its certificate, pinned, and
    the user's login."""
    user, password = os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    pin = spki_pin(settings.paths.tls / "server.pem")
    return [f"--ignore-certificate-errors-spki-list={pin}"], {"Authorization": f"Basic {token}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default=MODEL_NAME)
    parser.add_argument("--outdir", type=Path, default=ROOT / "docs")
    parser.add_argument("--wait", type=float, default=8.0, help="seconds for a page to render")
    parser.add_argument("--port", type=int, default=9222, help="Chromium's DevTools port")
    parser.add_argument("--search", help="the search's parent run id (default: the latest)")
    parser.add_argument("--team", action="store_true", help="the team server, logged in")
    args = parser.parse_args()
    settings = Settings.from_env()
    uri = settings.tracking.url.rstrip("/")
    flags, headers = team_login(settings) if args.team else ([], {})
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("screenshot: chromium is not installed: apt-get install chromium")
    if not is_healthy(uri):
        sys.exit(f"screenshot: no MLflow server answers at {uri}: run `make pipeline` first")
    pages = targets(uri, args.name, args.search)
    if args.team:
        pages = {
            "team-login.png": pages["mlflow-search.png"].split("/runs/")[0]
            + "/runs?workflowType=machine_learning"
        }
    args.outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen(
            [
                browser,
                *FLAGS,
                *flags,
                f"--user-data-dir={profile}",
                f"--remote-debugging-port={args.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its helper processes too are stopped as one group
        )
        try:
            page = Page(_debugger(args.port, time.monotonic() + 60))
            page.call("Page.enable")
            if headers:
                page.call("Network.enable")
                page.call("Network.setExtraHTTPHeaders", headers=headers)
            page.call("Page.navigate", url=f"{uri}/")  # the UI's origin, for its localStorage
            time.sleep(2)
            setup = ";".join(f"localStorage.setItem({k!r}, {v!r})" for k, v in UI_SETTINGS.items())
            page.call("Runtime.evaluate", expression=setup)
            for file, url in pages.items():
                page.shot(url, args.outdir / file, args.wait)
        finally:
            stop_group(proc.pid)


if __name__ == "__main__":
    main()
