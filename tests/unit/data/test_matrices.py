"""The feature stage on disk: the featurizer's config round trip, and a new fit's matrices."""

from __future__ import annotations

import os

import pandas as pd

from duration.core import featurize
from duration.core.schema import FeatureSet
from duration.data import matrices, prepare
from tests.unit.core.conftest import canonical, fitted


def test_featurizer_round_trips_through_the_stage_file(tmp_path):
    rides = canonical()
    from sklearn.feature_extraction import DictVectorizer as DV

    fz = fitted(FeatureSet.default, rides)
    matrices.save_stage(tmp_path, DV().fit([{"a": 1}]), fz, {})
    again = featurize.load_featurizer(tmp_path / "featurizer.json")
    assert again == fz
    pd.testing.assert_frame_equal(again.frame(rides), fz.frame(rides))


def test_a_new_fit_removes_the_old_fits_matrices(site):
    from tests.unit.conftest import rides as tlc_rides

    base = site.paths.tlc_url.removeprefix("file://")
    tlc_rides().to_parquet(f"{base}/trip-data/green_tripdata_2021-04.parquet")
    out = matrices.vectorize(site, "green", "course", "2021-01", ["2021-04"])
    assert (out / "X_2021-04.npz").exists()
    # the training month is prepared again (newer): the stage refits, so April's matrix,
    # made with the old vocabulary and not asked for now, must not survive as if current
    processed = prepare.prepare(site, "green", "2021-01")
    later = processed.stat().st_mtime + 10
    os.utime(processed, (later, later))
    matrices.vectorize(site, "green", "course", "2021-01", [])
    assert not (out / "X_2021-04.npz").exists()
    assert (out / "X_2021-01.npz").exists() and (out / "preprocessor.b").exists()
