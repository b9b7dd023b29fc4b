"""The self-contained MLflow model: raw TLC ride records in, durations in minutes out.

It bundles the featurizer config (feature set and zone boroughs), the fitted DictVectorizer
and the estimator. Serialization is chosen on purpose:
- xgboost estimators use xgboost's own versioned format (`.ubj`);
- scikit-learn estimators use skops, loaded only if every type is in an allowlist;
- the DictVectorizer is stored as its vocabulary (JSON), so nothing in the model is pickled
  at all: the wrapper is logged as code ("models from code").
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import AnyType
from sklearn.feature_extraction import DictVectorizer

import duration
from duration import data
from duration.config import Color, FeatureSet
from duration.errors import DurationError
from duration.featurize import START_CODES, Featurizer, load_featurizer
from duration.vectorizer import transform

if TYPE_CHECKING:
    from duration.matrices import Inputs

TRUSTED_PREFIXES = ("sklearn.", "numpy.", "builtins.", "scipy.")


def save_estimator(estimator, directory: Path) -> Path:
    """Write the estimator in its chosen format; return the file."""
    directory.mkdir(parents=True, exist_ok=True)
    if type(estimator).__module__.startswith("xgboost"):
        path = directory / "estimator.ubj"
        estimator.save_model(path)
    else:
        import skops.io as sio

        path = directory / "estimator.skops"
        sio.dump(estimator, path)
    return path


def load_estimator(path: Path):
    """Read an estimator written by `save_estimator`, refusing untrusted skops types."""
    path = Path(path)
    if path.suffix == ".ubj":
        import xgboost as xgb

        est = xgb.XGBRegressor()
        est.load_model(path)
        return est
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    bad = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
    if bad:
        raise DurationError(f"{path} holds types outside the allowlist: {bad}")
    return sio.load(path, trusted=untrusted)


def save_vocabulary(dv: DictVectorizer, path: Path) -> Path:
    """Store a fitted DictVectorizer as its ordered feature names."""
    cfg = {
        "separator": dv.separator,
        "dtype": np.dtype(dv.dtype).name,
        "feature_names": dv.feature_names_,
    }
    path.write_text(json.dumps(cfg))
    return path


def load_vocabulary(path: Path) -> DictVectorizer:
    """Rebuild the fitted DictVectorizer stored by `save_vocabulary`."""
    cfg = json.loads(Path(path).read_text())
    dv = DictVectorizer(separator=cfg["separator"], dtype=np.dtype(cfg["dtype"]).type)
    dv.feature_names_ = list(cfg["feature_names"])
    dv.vocabulary_ = {name: i for i, name in enumerate(dv.feature_names_)}
    return dv


# The package modules the logged model imports when it loads (model.py and what it imports,
# transitively). Only these travel with the model as its code: a load downloads each file.
MODEL_MODULES = (
    "__init__", "config", "data", "errors", "featurize", "files", "model", "vectorizer",
)  # fmt: skip

# Logged as a file (MLflow "models from code"), so the model holds no pickled Python object.
MODEL_CODE = """from mlflow.models import set_model

from duration.model import DurationModel

set_model(DurationModel())
"""


class DurationModel(mlflow.pyfunc.PythonModel):
    """Predict ride duration (minutes) from raw TLC ride records."""

    def load_context(self, context) -> None:
        self.featurizer = load_featurizer(Path(context.artifacts["featurizer"]))
        self.dv = load_vocabulary(Path(context.artifacts["vectorizer"]))
        self.estimator = load_estimator(Path(context.artifacts["estimator"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        rides = data.normalise(pd.DataFrame(model_input))
        x = transform(self.dv, self.featurizer.frame(rides))
        return np.asarray(self.estimator.predict(x), dtype=np.float64)


def raw_columns(featurizer: Featurizer, color: Color | str) -> tuple[list[str], list[str]]:
    """The raw TLC columns (as `color` names them) the model requires, and those it can use."""
    required = list(data.raw_records(pd.DataFrame(columns=featurizer.needs), color).columns)
    optional = START_CODES if FeatureSet(featurizer.feature_set) is FeatureSet.default else []
    return required, list(optional)


def signature(featurizer: Featurizer, color: Color | str) -> ModelSignature:
    """Input: the raw TLC columns the features read; output: duration in minutes."""
    types = {"LocationID": "long", "datetime": "datetime", "trip_distance": "double"}
    required, optional = raw_columns(featurizer, color)
    cols = [
        ColSpec(next(t for suffix, t in types.items() if name.endswith(suffix)), name)
        for name in required
    ]
    # Any: TLC files store these as int64 or as float64 with NaN, depending on the month.
    cols += [ColSpec(AnyType(), name, required=False) for name in optional]
    return ModelSignature(inputs=Schema(cols), outputs=Schema([ColSpec("double", "duration")]))


def input_example(rides: pd.DataFrame, featurizer: Featurizer, color: Color | str) -> pd.DataFrame:
    """A few raw ride records, as a consumer would send them."""
    raw = data.raw_records(rides.head(5), color).reset_index(drop=True)
    required, optional = raw_columns(featurizer, color)
    return raw[required + [c for c in optional if c in raw]]


def log_model(
    featurizer_path: Path,
    dv: DictVectorizer,
    estimator,
    example: pd.DataFrame,
    sig: ModelSignature,
    workdir: Path,
):
    """Log the self-contained pyfunc model to the active run; return its ModelInfo."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(featurizer_path, workdir / "featurizer.json")
    artifacts = {
        "featurizer": str(workdir / "featurizer.json"),
        "vectorizer": str(save_vocabulary(dv, workdir / "vectorizer.json")),
        "estimator": str(save_estimator(estimator, workdir)),
    }
    code = workdir / "duration_model.py"
    code.write_text(MODEL_CODE)
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(code),
        artifacts=artifacts,
        code_paths=[str(model_code(workdir / "duration"))],
        signature=sig,
        input_example=example,
        pip_requirements=_requirements(),
    )


def model_code(dest: Path) -> Path:
    """A copy of the package holding only MODEL_MODULES: the code the logged model carries."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in MODEL_MODULES:
        shutil.copy(Path(duration.__file__).with_name(f"{name}.py"), dest / f"{name}.py")
    return dest


def log_fitted(inp: Inputs, estimator) -> str:
    """Log the self-contained model of a fit on `inp` to the active run; return its URI."""
    with tempfile.TemporaryDirectory() as tmp:
        info = log_model(
            inp.stage / "featurizer.json",
            inp.dv,
            estimator,
            input_example(inp.example, inp.featurizer, inp.color),
            signature(inp.featurizer, inp.color),
            Path(tmp),
        )
    mlflow.set_tag("model_uri", info.model_uri)
    return info.model_uri


def _requirements() -> list[str]:
    from importlib.metadata import version

    pkgs = ["mlflow", "pandas", "numpy", "scipy", "scikit-learn", "xgboost", "pyarrow", "skops"]
    return [f"{p}=={version(p)}" for p in pkgs]
