"""Feature frames: the course's and the default set, fitted encodings, no leakage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from duration.core import featurize
from duration.core.schema import FeatureSet
from duration.errors import DurationError
from tests.unit.core.conftest import SERVICE, ZONES, fitted


def test_course_features_are_the_notebooks(rides):
    dicts = featurize.Featurizer(feature_set=FeatureSet.course).dicts(rides)
    assert dicts[0] == {"PU_DO": "1_4", "trip_distance": 1.5}
    assert dicts[2] == {"PU_DO": "99_3", "trip_distance": 3.2}


def test_default_features(rides):
    d = fitted(FeatureSet.default, rides).dicts(rides)
    assert d[0]["PU_borough"] == "EWR" and d[0]["DO_borough"] == "Manhattan"
    assert d[2]["PU_borough"] == "Unknown"  # zone 99 is not in the table
    assert d[0]["DO_service_zone"] == "Yellow Zone"
    assert d[0]["pickup_hour"] == 8.5 and d[0]["pickup_weekday"] == 0  # Monday
    assert d[1]["pickup_weekday"] == 5
    assert d[0]["RatecodeID"] == "1" and d[1]["RatecodeID"] == "unknown"
    assert d[0]["VendorID"] == "unknown"  # absent column
    assert d[0]["PU_DO"] == 1004.0
    prior = rides["duration"].mean()  # 15.0
    assert d[0]["PU_DO_mean_duration"] == pytest.approx((20.0 + 5 * prior) / 6)
    assert d[0]["DO_mean_duration"] == pytest.approx((20.0 + 15.0 + 5 * prior) / 7)


def test_encodings_are_smoothed_means_and_unseen_zones_get_the_prior():
    y = np.array([10.0, 30.0, 20.0, 40.0])
    rides = pd.DataFrame(
        {"PULocationID": [7, 7, 7, 8], "DOLocationID": [1, 1, 2, 1], "duration": y}
    )
    fz = featurize.Featurizer(feature_set=FeatureSet.default).fit(rides)
    prior = y.mean()
    assert fz.prior == prior
    assert fz.encodings["PU_DO_mean_duration"][7001] == pytest.approx((40 + 5 * prior) / 7)
    assert fz.encodings["PU_mean_duration"][8] == pytest.approx((40 + 5 * prior) / 6)
    assert set(fz.encodings["DO_mean_duration"]) == {1, 2}
    new = rides.iloc[:1].assign(PULocationID=[265], DOLocationID=[1])
    keys = featurize._encoding_keys(*featurize._zones(new))
    assert keys["PU_DO_mean_duration"][0] == 265001


def test_train_frame_never_sees_a_rides_own_duration():
    # One ride per zone pair: an out-of-fold encoding cannot depend on that ride's duration.
    n = 200
    rng = np.random.default_rng(0)
    rides = pd.DataFrame(
        {
            "pickup_datetime": pd.Timestamp("2021-01-04 08:00"),
            "PULocationID": np.arange(n) % 100 + 1,
            "DOLocationID": np.arange(n) // 100 + 1,
            "trip_distance": 1.0,
            "duration": rng.uniform(1, 60, n),
        }
    )
    fz = featurize.Featurizer(feature_set=FeatureSet.default).fit(rides)
    a = fz.train_frame(rides)
    b = fz.train_frame(rides.assign(duration=np.where(np.arange(n) == 3, 1e6, rides["duration"])))
    # ride 3's own pair encoding is unchanged; only rides in other folds could see the change
    assert a.loc[3, "PU_DO_mean_duration"] == b.loc[3, "PU_DO_mean_duration"]
    # in-sample `frame` would leak it: the pair has one ride, so its mean moves with it
    assert fz.frame(rides).loc[3, "PU_DO_mean_duration"] != a.loc[3, "PU_DO_mean_duration"]
    assert a["PU_DO_mean_duration"].nunique() > 1
    # the other columns are the same as `frame` gives
    pd.testing.assert_frame_equal(
        a.drop(columns=featurize.ENCODED), fz.frame(rides).drop(columns=featurize.ENCODED)
    )


def test_encodings_refuse_negative_zone_ids_and_empty_months(rides):
    with pytest.raises(DurationError, match=r"negative \(found -3 in PULocationID"):
        fitted(FeatureSet.default, rides.assign(PULocationID=[1, -3, 2]))
    with pytest.raises(DurationError, match="no rides"):
        fitted(FeatureSet.default, rides.iloc[:0])


def test_default_features_need_fitting(rides):
    with pytest.raises(DurationError, match="vectorize"):
        featurize.Featurizer(
            feature_set=FeatureSet.default, boroughs=ZONES, service_zones=SERVICE
        ).frame(rides)


@pytest.mark.parametrize("fs", list(FeatureSet))
def test_no_leakage_columns(rides, fs):
    fz = fitted(fs, rides)  # fitted on the training month's durations, then frozen
    cols = set(fz.frame(rides).columns)
    assert not cols & featurize.LEAKAGE
    poisoned = rides.assign(
        duration=0.0, fare_amount=0.0, dropoff_datetime=rides["pickup_datetime"]
    )
    a = fz.dicts(rides)
    b = fz.dicts(poisoned)
    assert a == b  # features do not change when after-the-ride columns do


def test_missing_required_columns(rides):
    with pytest.raises(DurationError, match="trip_distance"):
        featurize.Featurizer(feature_set=FeatureSet.default).frame(
            rides.drop(columns=["trip_distance"])
        )


def test_fhv_without_distance_is_refused(rides):
    with pytest.raises(DurationError, match="fhv"):
        featurize.Featurizer(feature_set=FeatureSet.course).frame(
            rides.assign(trip_distance=np.nan)
        )
