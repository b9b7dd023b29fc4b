"""The search space of each tunable model kind, declared once."""

from __future__ import annotations

import math
from typing import Any

from duration.core.schema import ModelKind
from duration.errors import DurationError

# name -> (distribution, low, high[, step]). "log" draws log-uniformly; "int" draws
# integers low..high in steps.
SPACES: dict[ModelKind, dict[str, tuple]] = {
    ModelKind.xgboost: {
        "max_depth": ("int", 4, 12, 1),
        "learning_rate": ("log", 0.08, 0.4),
        "min_child_weight": ("log", 0.5, 50.0),
        "subsample": ("uniform", 0.6, 1.0),
        "colsample_bytree": ("uniform", 0.5, 1.0),
        "reg_alpha": ("log", 1e-3, 10.0),
        "reg_lambda": ("log", 1e-3, 10.0),
    },
    ModelKind.random_forest: {
        "n_estimators": ("int", 20, 60, 10),
        "max_depth": ("int", 8, 20, 1),
        "min_samples_leaf": ("int", 1, 10, 1),
        "max_features": ("uniform", 0.2, 0.6),
    },
}


def check_kind(kind: ModelKind | str) -> ModelKind:
    """The model kind, if SPACES declares its search space; else one line naming those that do."""
    kind = ModelKind(kind)
    if kind not in SPACES:
        raise DurationError(
            f"--model {kind.value} has no search space: tune one of {[k.value for k in SPACES]}"
        )
    return kind


def space(kind: ModelKind | str) -> dict[str, Any]:
    """The hyperopt space built from the declaration in SPACES."""
    kind = check_kind(kind)
    from hyperopt import hp  # deferred: hyperopt loads only when a search runs
    from hyperopt.pyll import scope

    out = {}
    for name, (dist, low, high, *step) in SPACES[kind].items():
        if dist == "int":
            out[name] = scope.int(hp.quniform(name, low, high, step[0]))
        elif dist == "log":
            out[name] = hp.loguniform(name, math.log(low), math.log(high))
        else:
            out[name] = hp.uniform(name, low, high)
    return out
