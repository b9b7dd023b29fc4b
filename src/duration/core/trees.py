"""An xgboost model's trees as flat numpy arrays, to predict a few rides without xgboost's
fixed cost per call.

xgboost 3.2 spends about 20 ns per node of the model on every prediction call, whatever
the number of rows (1.1-1.4 ms for the project's ~100k-node models, against 0.1 ms for
this walk of one ride); for more than a few rows its own predictor is faster, and is used.
The walk follows xgboost's rules exactly: a value is compared as float32 (`value <
split` goes left), a missing one (NaN) goes the node's default way, and the leaf values
are added to the base score one tree at a time in float32, so the answers are the same
bits. `from_xgboost` checks that on probe rows and gives None when they differ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

PROBE_ROWS = 256  # rows that each split's threshold and NaN reach, checked at load


@dataclass(frozen=True, kw_only=True)
class Forest:
    """Every tree's nodes in one set of arrays (node ids global, children side by side)."""

    roots: np.ndarray  # int64, one per tree
    left: np.ndarray  # int64: the left child (the right one is left + 1); a leaf: itself
    feature: np.ndarray  # int64: the feature a node splits on (0 for a leaf)
    split: np.ndarray  # float32: the threshold (NaN for a leaf: it never moves)
    missing_right: np.ndarray  # bool: a missing value goes right (False for a leaf)
    value: np.ndarray  # float32: a leaf's value
    base: np.float32  # the base score
    depth: int  # the deepest leaf's depth: steps of the walk
    n_features: int

    def predict(self, x: np.ndarray) -> np.ndarray:
        """float32 predictions for `x` (rows of float32 features, NaN for missing)."""
        n = len(x)
        flat = np.ascontiguousarray(x, dtype=np.float32).ravel()
        node = np.tile(self.roots, (n, 1))
        offsets = (np.arange(n, dtype=np.int64) * self.n_features)[:, None]
        for _ in range(self.depth):
            v = flat[offsets + self.feature[node]]
            right = v >= self.split[node]  # False for NaN (and at a leaf, whose split is NaN)
            right |= np.isnan(v) & self.missing_right[node]
            node = self.left[node] + right
        sums = np.empty((n, len(self.roots) + 1), dtype=np.float32)
        sums[:, 0] = self.base
        sums[:, 1:] = self.value[node]
        return np.cumsum(sums, axis=1, dtype=np.float32)[:, -1]  # in order, as xgboost adds


def _base_score(learner: dict) -> float:
    raw = learner["learner_model_param"]["base_score"]
    value = json.loads(raw) if raw.startswith("[") else float(raw)
    return float(value[0] if isinstance(value, list) else value)


def _arrays(trees: list[dict], n_features: int) -> dict[str, Any] | None:
    """The flat arrays of `trees`, or None for a model this walk does not cover."""
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("left", "feature", "split", "mr", "value")
    }
    roots, offset = [], 0
    for t in trees:
        left = np.asarray(t["left_children"], dtype=np.int64)
        right = np.asarray(t["right_children"], dtype=np.int64)
        leaf = left == -1
        if any(t.get("split_type", [])) or not np.array_equal(right[~leaf], left[~leaf] + 1):
            return None  # categorical splits, or children not side by side
        ids = np.arange(len(left), dtype=np.int64) + offset
        cond = np.asarray(t["split_conditions"], dtype=np.float32)
        parts["left"].append(np.where(leaf, ids, left + offset))
        parts["feature"].append(np.where(leaf, 0, np.asarray(t["split_indices"], np.int64)))
        parts["split"].append(np.where(leaf, np.float32(np.nan), cond))
        parts["mr"].append(~np.asarray(t["default_left"], dtype=bool) & ~leaf)
        parts["value"].append(np.where(leaf, cond, np.float32(0)))
        roots.append(offset)
        offset += len(left)
    if not roots or int(max(a.max(initial=0) for a in parts["feature"])) >= n_features:
        return None
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out["roots"] = np.asarray(roots, dtype=np.int64)
    return out


def _depth(roots: np.ndarray, left: np.ndarray) -> int:
    depth, level = 0, roots
    while len(inner := level[left[level] != level]):
        level = np.concatenate([left[inner], left[inner] + 1])
        depth += 1
    return depth


def _probe(forest: Forest, rng: np.random.Generator) -> np.ndarray:
    """Rows whose values sit on, just under and just over the model's thresholds, or NaN."""
    splits = forest.split[~np.isnan(forest.split)]
    picks = rng.choice(splits, size=(PROBE_ROWS, forest.n_features)) if len(splits) else None
    x = np.zeros((PROBE_ROWS, forest.n_features), dtype=np.float32) if picks is None else picks
    nudge = rng.integers(-1, 2, size=x.shape)
    x = np.where(nudge < 0, np.nextafter(x, np.float32(-np.inf)), x)
    x = np.where(nudge > 0, np.nextafter(x, np.float32(np.inf)), x)
    x[rng.random(x.shape) < 0.2] = np.nan
    return x.astype(np.float32)


def from_xgboost(booster: Any, rounds: int | None = None) -> Forest | None:
    """The first `rounds` trees of an xgboost Booster (all when None) as a Forest, or None
    when it has what the walk does not cover (several outputs, categorical splits, linear
    boosters, a link function) and so would not answer the same bits."""
    model = json.loads(bytes(booster.save_raw("json")))
    learner = model["learner"]
    gb = learner["gradient_booster"]
    if gb.get("name") != "gbtree" or int(learner["learner_model_param"].get("num_target", 1)) != 1:
        return None
    n_features = int(learner["learner_model_param"]["num_feature"])
    trees = gb["model"]["trees"][: rounds if rounds is not None else None]
    arrays = _arrays(trees, n_features)
    if arrays is None:
        return None
    forest = Forest(
        roots=arrays["roots"],
        left=arrays["left"],
        feature=arrays["feature"],
        split=arrays["split"],
        missing_right=arrays["mr"],
        value=arrays["value"],
        base=np.float32(_base_score(learner)),
        depth=_depth(arrays["roots"], arrays["left"]),
        n_features=n_features,
    )
    x = _probe(forest, np.random.default_rng(0))
    range_ = (0, len(trees))
    expected = booster.inplace_predict(x, iteration_range=range_, missing=np.nan)
    expected = np.asarray(expected, np.float32).ravel()
    one_by_one = np.concatenate([forest.predict(x[i : i + 1]) for i in range(len(x))])
    same = np.array_equal(expected, one_by_one) and np.array_equal(expected, forest.predict(x))
    return forest if same else None
