"""Feature frames and the column vectorizer, which must equal DictVectorizer exactly."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction import DictVectorizer

from duration import data, featurize, matrices, vectorizer
from duration.config import FeatureSet
from duration.errors import DurationError

ZONES = {1: "EWR", 2: "Queens", 3: "Bronx", 4: "Manhattan"}
SERVICE = {1: "EWR", 2: "Boro Zone", 3: "Boro Zone", 4: "Yellow Zone"}


@pytest.fixture(autouse=True, scope="module")
def small_blocks():
    """Build rows in blocks of 4, so these small frames cross block boundaries."""
    saved, vectorizer.ROWS_PER_BLOCK = vectorizer.ROWS_PER_BLOCK, 4
    yield
    vectorizer.ROWS_PER_BLOCK = saved


@pytest.fixture
def rides():
    return pd.DataFrame(
        {
            "pickup_datetime": pd.to_datetime(
                ["2021-01-04 08:30", "2021-01-09 23:15", "2021-01-10 00:00"]
            ),
            "dropoff_datetime": pd.to_datetime(
                ["2021-01-04 08:50", "2021-01-09 23:30", "2021-01-10 00:10"]
            ),
            "PULocationID": [1, 2, 99],
            "DOLocationID": [4, 4, 3],
            "trip_distance": [1.5, 0.0, 3.2],
            "RatecodeID": [1.0, np.nan, 2.0],
            "duration": [20.0, 15.0, 10.0],
            "fare_amount": [10.0, 8.0, 20.0],
            "tip_amount": [1.0, 0.0, 2.0],
        }
    )


def test_course_features_are_the_notebooks(rides):
    dicts = featurize.Featurizer(FeatureSet.course).dicts(rides)
    assert dicts[0] == {"PU_DO": "1_4", "trip_distance": 1.5}
    assert dicts[2] == {"PU_DO": "99_3", "trip_distance": 3.2}


def _fitted(fs, rides):
    return featurize.Featurizer(fs, ZONES, SERVICE).fit(rides)


def test_default_features(rides):
    d = _fitted(FeatureSet.default, rides).dicts(rides)
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
    fz = featurize.Featurizer(FeatureSet.default).fit(rides)
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
    fz = featurize.Featurizer(FeatureSet.default).fit(rides)
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
        _fitted(FeatureSet.default, rides.assign(PULocationID=[1, -3, 2]))
    with pytest.raises(DurationError, match="no rides"):
        _fitted(FeatureSet.default, rides.iloc[:0])


def test_default_features_need_fitting(rides):
    with pytest.raises(DurationError, match="vectorize"):
        featurize.Featurizer(FeatureSet.default, ZONES, SERVICE).frame(rides)


def test_featurizer_round_trips_through_the_stage_file(rides, tmp_path):
    from sklearn.feature_extraction import DictVectorizer as DV

    fz = _fitted(FeatureSet.default, rides)
    matrices.save_stage(tmp_path, DV().fit([{"a": 1}]), fz, {})
    again = featurize.load_featurizer(tmp_path / "featurizer.json")
    assert again == fz
    pd.testing.assert_frame_equal(again.frame(rides), fz.frame(rides))


@pytest.mark.parametrize("fs", list(FeatureSet))
def test_no_leakage_columns(rides, fs):
    fz = _fitted(fs, rides)  # fitted on the training month's durations, then frozen
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
        featurize.Featurizer(FeatureSet.default).frame(rides.drop(columns=["trip_distance"]))


def test_fhv_without_distance_is_refused(rides):
    with pytest.raises(DurationError, match="fhv"):
        featurize.Featurizer(FeatureSet.course).frame(rides.assign(trip_distance=np.nan))


def _assert_same_storage(x, ref):
    """Not only the same entries: the same arrays, in DictVectorizer's order."""
    assert x.shape == ref.shape and x.dtype == ref.dtype
    assert np.array_equal(x.indptr, ref.indptr)
    assert np.array_equal(x.indices, ref.indices)
    assert np.array_equal(x.data, ref.data, equal_nan=True)


def _assert_same(features_fit: pd.DataFrame, features_new: pd.DataFrame, dtype=np.float64):
    ref = DictVectorizer(dtype=dtype)
    x_ref = ref.fit_transform(features_fit.to_dict(orient="records"))
    dv, x = vectorizer.fit_vectorizer(features_fit, dtype)
    assert dv.feature_names_ == ref.feature_names_
    assert dv.vocabulary_ == ref.vocabulary_
    assert vectorizer.csr_identical(x, x_ref)
    if features_new.empty:  # DictVectorizer refuses an empty sample; so does ours
        for fitted in (ref, dv):
            with pytest.raises(ValueError, match="empty"):
                fitted.transform(features_new.to_dict(orient="records"))
        with pytest.raises(ValueError, match="empty"):
            vectorizer.transform(dv, features_new)
        return
    _assert_same_storage(x, x_ref)
    y_ref = ref.transform(features_new.to_dict(orient="records"))
    assert vectorizer.csr_identical(vectorizer.transform(dv, features_new), y_ref)
    _assert_same_storage(vectorizer.transform(dv, features_new), y_ref)
    assert vectorizer.csr_identical(dv.transform(features_new.to_dict(orient="records")), y_ref)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_vectorizer_equals_dictvectorizer_on_real_featurizer(rides, dtype):
    fz = _fitted(FeatureSet.default, rides)
    other = rides.assign(PULocationID=[3, 250, 1], RatecodeID=[5.0, 6.0, np.nan])
    _assert_same(fz.frame(rides), fz.frame(other), dtype)


def test_vectorizer_when_feature_names_interleave():
    # "a=b" (numeric) sorts between "a=a" and "a=c" (categorical a): rows need a real sort
    fit = pd.DataFrame({"a": pd.Categorical(["a", "c", None]), "a=b": [1.0, 0.0, np.nan]})
    new = pd.DataFrame({"a": pd.Categorical(["c", "z", "a"]), "a=b": [2.0, 3.0, 4.0]})
    _assert_same(fit, new)


labels = st.one_of(st.none(), st.sampled_from(["a", "b", "c", "1_2", "x=y", ""]))
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=False, width=64), st.just(0.0))


@st.composite
def frames(draw):
    n_fit = draw(st.integers(1, 25))
    n_new = draw(st.integers(0, 25))
    n_cat = draw(st.integers(0, 3))
    n_num = draw(st.integers(0 if n_cat else 1, 2))
    fit, new = {}, {}
    for j in range(n_cat):
        categorical = draw(st.booleans())
        for target, n in ((fit, n_fit), (new, n_new)):
            values = draw(st.lists(labels, min_size=n, max_size=n))
            col = pd.Categorical(values) if categorical else pd.Series(values, dtype=object)
            target[f"c{j}"] = col
    for j in range(n_num):
        for target, n in ((fit, n_fit), (new, n_new)):
            target[f"n{j}"] = np.array(draw(st.lists(numbers, min_size=n, max_size=n)), dtype=float)
    return pd.DataFrame(fit), pd.DataFrame(new)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # huge floats -> float32 inf
@settings(max_examples=200, deadline=None)
@given(frames(), st.sampled_from([np.float64, np.float32]))
def test_vectorizer_equals_dictvectorizer_property(pair, dtype):
    fit, new = pair
    _assert_same(fit, new, dtype)


def test_csr_identical_sees_explicit_zeros_and_nans():
    import scipy.sparse as sp

    a = sp.csr_matrix((np.array([0.0]), np.array([0]), np.array([0, 1])), shape=(1, 2))
    b = sp.csr_matrix((1, 2))
    assert not vectorizer.csr_identical(a, b)
    c = sp.csr_matrix((np.array([np.nan]), np.array([1]), np.array([0, 1])), shape=(1, 2))
    assert vectorizer.csr_identical(c, c.copy())


def test_a_new_fit_removes_the_old_fits_matrices(site):
    from tests.code.conftest import rides as tlc_rides

    base = site.tlc_url.removeprefix("file://")
    tlc_rides().to_parquet(f"{base}/trip-data/green_tripdata_2021-04.parquet")
    out = matrices.vectorize(site, "green", "course", "2021-01", ["2021-04"])
    assert (out / "X_2021-04.npz").exists()
    # the training month is prepared again (newer): the stage refits, so April's matrix,
    # made with the old vocabulary and not asked for now, must not survive as if current
    processed = data.prepare(site, "green", "2021-01")
    later = processed.stat().st_mtime + 10
    os.utime(processed, (later, later))
    matrices.vectorize(site, "green", "course", "2021-01", [])
    assert not (out / "X_2021-04.npz").exists()
    assert (out / "X_2021-01.npz").exists() and (out / "preprocessor.b").exists()
