"""Feature frames and the column vectorizer, which must equal DictVectorizer exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction import DictVectorizer

from duration import features as F
from duration.config import FeatureSet
from duration.errors import DurationError

ZONES = {1: "EWR", 2: "Queens", 3: "Bronx", 4: "Manhattan"}
SERVICE = {1: "EWR", 2: "Boro Zone", 3: "Boro Zone", 4: "Yellow Zone"}


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
    dicts = F.Featurizer(FeatureSet.course).dicts(rides)
    assert dicts[0] == {"PU_DO": "1_4", "trip_distance": 1.5}
    assert dicts[2] == {"PU_DO": "99_3", "trip_distance": 3.2}


def test_default_features(rides):
    d = F.Featurizer(FeatureSet.default, ZONES, SERVICE).dicts(rides)
    assert d[0]["PU_borough"] == "EWR" and d[0]["DO_borough"] == "Manhattan"
    assert d[2]["PU_borough"] == "Unknown"  # zone 99 is not in the table
    assert d[0]["DO_service_zone"] == "Yellow Zone"
    assert d[0]["pickup_hour"] == 8.5 and d[0]["pickup_weekday"] == 0  # Monday
    assert d[1]["pickup_weekday"] == 5
    assert d[0]["RatecodeID"] == "1" and d[1]["RatecodeID"] == "unknown"
    assert d[0]["VendorID"] == "unknown"  # absent column
    assert d[0]["PU_DO"] == 1004.0


@pytest.mark.parametrize("fs", list(FeatureSet))
def test_no_leakage_columns(rides, fs):
    cols = set(F.Featurizer(fs, ZONES, SERVICE).frame(rides).columns)
    assert not cols & F.LEAKAGE
    poisoned = rides.assign(
        duration=0.0, fare_amount=0.0, dropoff_datetime=rides["pickup_datetime"]
    )
    a = F.Featurizer(fs, ZONES, SERVICE).dicts(rides)
    b = F.Featurizer(fs, ZONES, SERVICE).dicts(poisoned)
    assert a == b  # features do not change when after-the-ride columns do


def test_missing_required_columns(rides):
    with pytest.raises(DurationError, match="trip_distance"):
        F.Featurizer(FeatureSet.default).frame(rides.drop(columns=["trip_distance"]))


def test_fhv_without_distance_is_refused(rides):
    with pytest.raises(DurationError, match="fhv"):
        F.Featurizer(FeatureSet.course).frame(rides.assign(trip_distance=np.nan))


def _assert_same(features_fit: pd.DataFrame, features_new: pd.DataFrame):
    ref = DictVectorizer()
    x_ref = ref.fit_transform(features_fit.to_dict(orient="records"))
    dv, x = F.fit_vectorizer(features_fit)
    assert dv.feature_names_ == ref.feature_names_
    assert dv.vocabulary_ == ref.vocabulary_
    assert F.csr_identical(x, x_ref)
    if features_new.empty:  # DictVectorizer refuses an empty sample; so does ours
        for vectorizer in (ref, dv):
            with pytest.raises(ValueError, match="empty"):
                vectorizer.transform(features_new.to_dict(orient="records"))
        with pytest.raises(ValueError, match="empty"):
            F.transform(dv, features_new)
        return
    y_ref = ref.transform(features_new.to_dict(orient="records"))
    assert F.csr_identical(F.transform(dv, features_new), y_ref)
    assert F.csr_identical(dv.transform(features_new.to_dict(orient="records")), y_ref)


def test_vectorizer_equals_dictvectorizer_on_real_featurizer(rides):
    fz = F.Featurizer(FeatureSet.default, ZONES, SERVICE)
    other = rides.assign(PULocationID=[3, 250, 1], RatecodeID=[5.0, 6.0, np.nan])
    _assert_same(fz.frame(rides), fz.frame(other))


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


@settings(max_examples=300, deadline=None)
@given(frames())
def test_vectorizer_equals_dictvectorizer_property(pair):
    fit, new = pair
    _assert_same(fit, new)


def test_csr_identical_sees_explicit_zeros_and_nans():
    import scipy.sparse as sp

    a = sp.csr_matrix((np.array([0.0]), np.array([0]), np.array([0, 1])), shape=(1, 2))
    b = sp.csr_matrix((1, 2))
    assert not F.csr_identical(a, b)
    c = sp.csr_matrix((np.array([np.nan]), np.array([1]), np.array([0, 1])), shape=(1, 2))
    assert F.csr_identical(c, c.copy())
