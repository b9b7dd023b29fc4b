"""Helpers of the serving tests: the CLI's environment for a serving home, real rides and
their JSON, and a version's in-process predictions."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd

from duration.ops import deploy
from duration.settings import Settings


def env(s: Settings) -> dict:
    return {
        "DURATION_HOME": str(s.paths.home),
        "DURATION_DATA_DIR": str(s.paths.data),
        "MLFLOW_TRACKING_URI": s.tracking.url,
        "SERVE_PORT": str(s.serve.port),
        "DURATION_DEPLOY_HOOK_PORT": str(s.automate.hook_port),
        "DURATION_TLC_URL": s.paths.tlc_url,
    }


def rides(s: Settings, n: int = 5) -> pd.DataFrame:
    records, _ = deploy.smoke_rides(s, "green", n)
    return records


def payload(records: pd.DataFrame) -> dict:
    return {"dataframe_split": json.loads(records.to_json(orient="split", date_format="iso"))}


def expected(name: str, version: str, records: pd.DataFrame) -> np.ndarray:
    return mlflow.pyfunc.load_model(f"models:/{name}/{version}").predict(records)
