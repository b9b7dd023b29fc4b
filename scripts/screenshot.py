"""Screenshot the MLflow UI's registered model page with headless Chromium (`make screenshot`).

Needs Debian's `chromium` package and a tracking server with the registered model (run
`make pipeline` first). Writes docs/mlflow-registry.png.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from duration.config import MODEL_NAME, Settings
from duration.tracking import is_healthy

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default=MODEL_NAME)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "mlflow-registry.png")
    parser.add_argument("--wait-ms", type=int, default=15000, help="time for the UI to render")
    args = parser.parse_args()
    uri = Settings.from_env().tracking_uri.rstrip("/")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("screenshot: chromium is not installed: apt-get install chromium")
    if not is_healthy(uri):
        sys.exit(f"screenshot: no MLflow server answers at {uri}: run `make pipeline` first")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--hide-scrollbars",
                "--window-size=1400,800",
                f"--virtual-time-budget={args.wait_ms}",
                f"--screenshot={args.output}",
                f"{uri}/#/models/{args.name}",
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
    print(args.output)


if __name__ == "__main__":
    main()
