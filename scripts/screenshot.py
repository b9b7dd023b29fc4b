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
import sys
from pathlib import Path
from typing import Any

from benchmarks.support.browser import chromium
from duration.errors import DurationError
from duration.infra.net import is_healthy
from duration.settings import Settings
from duration.tracking.client import client
from duration.tracking.names import MODEL_NAME, SEARCH_EXPERIMENT

ROOT = Path(__file__).resolve().parents[1]
# The MLflow UI's own localStorage settings (mlflow 3.17).
UI_SETTINGS = {
    "mlflow.workflowType_v1": json.dumps("machine_learning"),
}
CLOSE_ASSISTANT = "document.querySelector('button[aria-label=\"Close\"]')?.click()"


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
    parser.add_argument("--search", help="the search's parent run id (default: the latest)")
    parser.add_argument("--team", action="store_true", help="the team server, logged in")
    args = parser.parse_args()
    settings = Settings.from_env()
    uri = settings.tracking.url.rstrip("/")
    flags, headers = team_login(settings) if args.team else ([], {})
    if not is_healthy(uri):
        sys.exit(f"screenshot: no MLflow server answers at {uri}: run `make pipeline` first")
    pages = targets(uri, args.name, args.search)
    if args.team:
        pages = {
            "team-login.png": pages["mlflow-search.png"].split("/runs/")[0]
            + "/runs?workflowType=machine_learning"
        }
    args.outdir.mkdir(parents=True, exist_ok=True)
    try:
        shoot(pages, uri, flags, headers, args)
    except DurationError as e:
        sys.exit(f"screenshot: {e}")


def shoot(
    pages: dict[str, str], uri: str, flags: list[str], headers: dict[str, str], args: Any
) -> None:
    """Each page, its UI settings chosen first, its assistant panel closed."""
    with chromium(flags, headers) as page:
        page.open(f"{uri}/", 2)  # the UI's origin, for its localStorage
        setup = ";".join(f"localStorage.setItem({k!r}, {v!r})" for k, v in UI_SETTINGS.items())
        page.call("Runtime.evaluate", expression=setup)
        for file, url in pages.items():
            page.open(url, args.wait)
            # the assistant panel opens on its own and takes a third of the width: close it
            page.call("Runtime.evaluate", expression=CLOSE_ASSISTANT)
            page.wait(1.5)
            print(page.screenshot(args.outdir / file))


if __name__ == "__main__":
    main()
