"""The self-contained MLflow model: raw TLC ride records in, durations in minutes out.

It bundles the featurizer config (feature set and zone boroughs), the fitted DictVectorizer
and the estimator. Serialization is chosen on purpose:
- xgboost estimators use xgboost's own versioned format (`.ubj`);
- scikit-learn estimators use skops, loaded only if every type is in an allowlist;
- the DictVectorizer is stored as its vocabulary (JSON), so nothing in the model is pickled
  at all: the wrapper is logged as code ("models from code").

Logged models import `DurationModel` from this module by name (0.1.0's from
`duration.model`): both names are kept.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import AnyType
from sklearn.feature_extraction import DictVectorizer

from duration.core import trees
from duration.core.featurize import START_CODES, Featurizer, load_featurizer
from duration.core.records import canonical, normalise, raw_records
from duration.core.schema import Color, FeatureSet
from duration.core.vectorizer import assemble, dense, transform
from duration.errors import DurationError

TRUSTED_PREFIXES = ("sklearn.", "numpy.", "builtins.", "scipy.")
SMALL = 10_000  # up to this many rides a call, the small-frame path (a served request)
FOREST_ROWS = 4  # up to this many rides, the forest walk is faster than xgboost's own call
PACKAGE = Path(__file__).resolve().parents[1]  # src/duration


def save_estimator(estimator: Any, directory: Path) -> Path:
    """Write the estimator in its chosen format; return the file."""
    directory.mkdir(parents=True, exist_ok=True)
    if type(estimator).__module__.startswith("xgboost"):
        path = directory / "estimator.ubj"
        estimator.save_model(path)
    else:
        import skops.io as sio  # deferred: only scikit-learn estimators need skops

        path = directory / "estimator.skops"
        sio.dump(estimator, path)
    return path


def load_estimator(path: Path) -> Any:
    """Read an estimator written by `save_estimator`, refusing untrusted skops types."""
    path = Path(path)
    if path.suffix == ".ubj":
        import xgboost as xgb  # deferred: only an xgboost model needs xgboost

        est = xgb.XGBRegressor()
        est.load_model(path)
        return est
    import skops.io as sio  # deferred: only scikit-learn estimators need skops

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


class DurationModel(PythonModel):
    """Predict ride duration (minutes) from raw TLC ride records."""

    forest: trees.Forest | None = None  # set by `for_serving`, for an xgboost model

    def load_context(self, context: Any) -> None:
        self.featurizer = load_featurizer(Path(context.artifacts["featurizer"]))
        self.dv = load_vocabulary(Path(context.artifacts["vectorizer"]))
        self.estimator = load_estimator(Path(context.artifacts["estimator"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        return np.asarray(self.estimator.predict(self.matrix(model_input)), dtype=np.float64)

    def matrix(self, model_input: pd.DataFrame) -> Any:
        """The model's input matrix for raw ride records. A few rides of plain types (what a
        scoring server hands over) skip pandas' frames: their features are the same arrays,
        assembled straight into the CSR matrix (`tests` hold the two paths equal)."""
        frame = pd.DataFrame(model_input)
        rides = canonical(frame, len(frame)) if len(frame) <= SMALL else None
        if rides is None:
            return transform(self.dv, self.featurizer.frame(normalise(frame)))
        return assemble(self.dv, self.featurizer.columns(rides), len(frame))

    def predict_columns(self, columns: dict[str, np.ndarray], n: int) -> np.ndarray | None:
        """Predictions for `n` rides given as raw columns of plain numpy types (what MLflow's
        schema check would make of a JSON request); None if one needs pandas' conversions.
        After `for_serving`, a few rides take the forest walk: the same bits, sooner."""
        rides = canonical(columns, n)
        if rides is None:
            return None
        features = self.featurizer.columns(rides)
        if self.forest is not None and n <= FOREST_ROWS:
            return self.forest.predict(dense(self.dv, features, n)).astype(np.float64)
        x = assemble(self.dv, features, n)
        return np.asarray(self.estimator.predict(x), dtype=np.float64)

    def for_serving(self) -> None:
        """Ready this model for a scoring worker. It predicts on one thread: a worker is one
        of several, one per core, and threads of its own only contend for the same cores
        (xgboost: 14 ms against 0.15 ms for one ride, measured on 2 busy cores). An xgboost
        model also gets its trees as a `Forest` (`duration.core.trees`)."""
        if hasattr(self.estimator, "get_booster"):
            self.estimator.set_params(n_jobs=1)
            rounds = self.estimator.best_iteration + 1 if _early_stopped(self.estimator) else None
            self.forest = trees.from_xgboost(self.estimator.get_booster(), rounds)


def _early_stopped(estimator: Any) -> bool:
    """True when the xgboost estimator predicts with its best iteration (as its `predict`)."""
    try:
        return estimator.best_iteration is not None
    except AttributeError:  # xgboost raises it for a model trained without early stopping
        return False


def raw_columns(featurizer: Featurizer, color: Color | str) -> tuple[list[str], list[str]]:
    """The raw TLC columns (as `color` names them) the model requires, and those it can use."""
    required = list(raw_records(pd.DataFrame(columns=featurizer.needs), color).columns)
    optional = START_CODES if FeatureSet(featurizer.feature_set) is FeatureSet.default else []
    return required, list(optional)


def signature(featurizer: Featurizer, color: Color | str) -> ModelSignature:
    """Input: the raw TLC columns the features read; output: duration in minutes."""
    types = {"LocationID": "long", "datetime": "datetime", "trip_distance": "double"}
    required, optional = raw_columns(featurizer, color)
    cols: list[Any] = [
        ColSpec(next(t for suffix, t in types.items() if name.endswith(suffix)), name)
        for name in required
    ]
    # Any: TLC files store these as int64 or as float64 with NaN, depending on the month.
    cols += [ColSpec(AnyType(), name, required=False) for name in optional]
    return ModelSignature(inputs=Schema(cols), outputs=Schema([ColSpec("double", "duration")]))


def input_example(rides: pd.DataFrame, featurizer: Featurizer, color: Color | str) -> pd.DataFrame:
    """A few raw ride records, as a consumer would send them."""
    raw = raw_records(rides.head(5), color).reset_index(drop=True)
    required, optional = raw_columns(featurizer, color)
    return raw[required + [c for c in optional if c in raw]]


# The package modules the logged model imports when it loads (this module and what it
# imports, transitively). Only these travel with the model as its code: a load downloads each.
MODEL_MODULES = (
    "__init__",
    "errors",
    "core/__init__",
    "core/schema",
    "core/records",
    "core/featurize",
    "core/vectorizer",
    "core/trees",
    "core/model",
)

# Logged as a file (MLflow "models from code"), so the model holds no pickled Python object.
MODEL_CODE = """from mlflow.models import set_model

from duration.core.model import DurationModel

set_model(DurationModel())
"""


@dataclass(frozen=True, kw_only=True)
class Package:
    """What `mlflow.pyfunc.log_model` takes: the code file, the artifacts and the code."""

    python_model: str
    artifacts: dict[str, str]
    code_paths: list[str]


def package(featurizer_config: Path, dv: DictVectorizer, estimator: Any, workdir: Path) -> Package:
    """Write the model's files into `workdir`: its code, its copy of the package modules it
    imports, the featurizer config, the vocabulary and the estimator."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(featurizer_config, workdir / "featurizer.json")
    artifacts = {
        "featurizer": str(workdir / "featurizer.json"),
        "vectorizer": str(save_vocabulary(dv, workdir / "vectorizer.json")),
        "estimator": str(save_estimator(estimator, workdir)),
    }
    code = workdir / "duration_model.py"
    code.write_text(MODEL_CODE)
    return Package(
        python_model=str(code),
        artifacts=artifacts,
        code_paths=[str(model_code(workdir / "duration"))],
    )


def model_code(dest: Path) -> Path:
    """A copy of the package holding only MODEL_MODULES: the code the logged model carries."""
    for name in MODEL_MODULES:
        target = dest / f"{name}.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PACKAGE / f"{name}.py", target)
    return dest


def requirements() -> list[str]:
    """The pinned packages the model needs to load and predict."""
    pkgs = ["mlflow", "pandas", "numpy", "scipy", "scikit-learn", "xgboost", "pyarrow", "skops"]
    return [f"{p}=={version(p)}" for p in pkgs]
