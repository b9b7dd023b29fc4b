"""The served model's small-frame path (numpy arrays straight into the CSR matrix) gives
exactly what the frame path gives (pandas frames, then the vectorizer), on random rides,
odd ones included; where it cannot, it steps aside for the frame path."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from duration.core.featurize import Featurizer
from duration.core.model import DurationModel
from duration.core.records import canonical, normalise
from duration.core.schema import FeatureSet
from duration.core.vectorizer import fit_vectorizer, transform
from duration.errors import DurationError
from tests.unit.core.conftest import SERVICE, ZONES


def _training_rides(n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    start = pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 31 * 86400, n), "s")
    return pd.DataFrame(
        {
            "pickup_datetime": start.astype("datetime64[us]"),
            "PULocationID": rng.choice([1, 2, 3, 4, 99], n),
            "DOLocationID": rng.choice([1, 2, 4], n),
            "trip_distance": rng.gamma(2.0, 1.5, n),
            "VendorID": rng.choice([1.0, 2.0], n),
            "RatecodeID": np.where(rng.random(n) < 0.7, 1.0, np.nan),
            "trip_type": 1.0,
            "passenger_count": rng.choice([1.0, 2.0, np.nan], n),
            "duration": rng.uniform(1, 60, n),
        }
    )


def _model(fs: FeatureSet) -> DurationModel:
    rides = _training_rides()
    fz = Featurizer(feature_set=fs, boroughs=ZONES, service_zones=SERVICE).fit(rides)
    dtype = np.float32 if fs is FeatureSet.default else np.float64
    dv, _ = fit_vectorizer(fz.train_frame(rides), dtype)
    m = DurationModel()
    m.featurizer, m.dv = fz, dv
    return m


MODELS = {fs: _model(fs) for fs in FeatureSet}

zones = st.one_of(st.integers(1, 5), st.just(99), st.integers(100, 300))
codes = st.one_of(st.none(), st.sampled_from([1.0, 2.0, 5.0, 99.0, -1.0, 2.5, 3.5, 0.0]))
when = st.datetimes(
    min_value=pd.Timestamp("1969-12-30").to_pydatetime(),
    max_value=pd.Timestamp("2023-12-31").to_pydatetime(),
)


@st.composite
def records(draw) -> pd.DataFrame:
    """Raw records of 1-20 rides, typed as MLflow's schema check leaves them, or oddly."""
    n = draw(st.integers(1, 20))
    pu = draw(st.lists(zones, min_size=n, max_size=n))
    do = draw(st.lists(zones, min_size=n, max_size=n))
    df = pd.DataFrame(
        {
            "lpep_pickup_datetime": pd.to_datetime(
                draw(st.lists(when, min_size=n, max_size=n))
            ).astype(draw(st.sampled_from(["datetime64[ns]", "datetime64[us]"]))),
            "PULocationID": pu,
            "DOLocationID": do,
            "trip_distance": draw(
                st.lists(
                    st.one_of(st.floats(0, 80), st.just(0.0), st.just(float("nan"))),
                    min_size=n,
                    max_size=n,
                )
            ),
            "fare_amount": 10.0,  # after the ride: never a feature
        }
    )
    for col in ("VendorID", "RatecodeID", "trip_type", "passenger_count"):
        present = draw(st.sampled_from(["absent", "float", "object", "int"]))
        values = draw(st.lists(codes, min_size=n, max_size=n))
        if present == "float":
            df[col] = np.array([np.nan if v is None else v for v in values], dtype=float)
        elif present == "object":  # JSON nulls beside numbers: an object column
            df[col] = pd.Series(values, dtype=object)
        elif present == "int":
            df[col] = np.array([int(v or 0) for v in values], dtype=np.int64)
    odd = draw(st.sampled_from(["none", "nat", "float_ids", "string_ids", "string_time", "tz"]))
    if odd == "nat":
        df.loc[0, "lpep_pickup_datetime"] = pd.NaT
    elif odd == "float_ids":
        df["PULocationID"] = df["PULocationID"].astype(float)
        df.loc[0, "PULocationID"] = np.nan
    elif odd == "string_ids":
        df["DOLocationID"] = df["DOLocationID"].astype(str)
    elif odd == "string_time":
        df["lpep_pickup_datetime"] = df["lpep_pickup_datetime"].astype(str)
    elif odd == "tz":
        df["lpep_pickup_datetime"] = df["lpep_pickup_datetime"].dt.tz_localize("UTC")
    return df


def frame_path(m: DurationModel, df: pd.DataFrame):
    return transform(m.dv, m.featurizer.frame(normalise(df)))


def outcome(make):
    """The matrix, or the one-line error, a path gives."""
    try:
        return make(), None
    except DurationError as e:
        return None, str(e)


def assert_same(a, b) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    assert np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
    assert np.array_equal(a.data, b.data, equal_nan=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records(), st.sampled_from(list(FeatureSet)))
def test_the_small_frame_path_equals_the_frame_path(df, fs):
    m = MODELS[fs]
    (small, small_err), (frame, frame_err) = (
        outcome(lambda: m.matrix(df)),
        outcome(lambda: frame_path(m, df)),
    )
    assert small_err == frame_err
    if frame is not None:
        assert_same(small, frame)


def test_plain_types_take_the_small_frame_path_and_odd_ones_step_aside():
    typed = pd.DataFrame(
        {
            "lpep_pickup_datetime": pd.to_datetime(["2021-03-01 08:15", "2021-03-06 23:59"]),
            "PULocationID": [1, 99],
            "DOLocationID": [4, 3],
            "trip_distance": [1.5, 0.0],
            "VendorID": pd.Series([2, None], dtype=object),
            "RatecodeID": [1.0, np.nan],
        }
    )
    arrays = canonical(typed, len(typed))
    assert arrays is not None and set(arrays) == {
        "pickup_datetime",
        "PULocationID",
        "DOLocationID",
        "trip_distance",
        "VendorID",
        "RatecodeID",
    }
    assert arrays["VendorID"].tolist()[0] == 2.0 and np.isnan(arrays["VendorID"][1])
    for odd in (
        typed.assign(DOLocationID=["4", "3"]),
        typed.assign(lpep_pickup_datetime=typed["lpep_pickup_datetime"].dt.tz_localize("UTC")),
        typed.assign(VendorID=pd.Series(["2", None], dtype=object)),
        typed.assign(PULocationID=[1.0, np.nan]),
    ):
        assert canonical(odd, len(odd)) is None


@pytest.mark.parametrize("fs", list(FeatureSet))
def test_the_served_model_predicts_the_same_on_both_paths(fs):
    """Through the estimator too: the same matrix, the same minutes."""
    from sklearn.linear_model import LinearRegression

    m = MODELS[fs]
    rides = _training_rides(50)
    raw = rides.rename(columns={"pickup_datetime": "lpep_pickup_datetime"}).drop(columns="duration")
    m.estimator = LinearRegression().fit(frame_path(m, raw), rides["duration"])
    np.testing.assert_array_equal(
        m.predict(None, raw), m.estimator.predict(frame_path(m, raw)).astype(np.float64)
    )


def _xgboost(m: DurationModel, early_stopping: bool) -> None:
    """Fit an xgboost estimator on the model's own features (NaNs, one-hot and numbers)."""
    import xgboost as xgb

    rides = _training_rides(400)
    raw = rides.rename(columns={"pickup_datetime": "lpep_pickup_datetime"}).drop(columns="duration")
    x, y = frame_path(m, raw), rides["duration"]
    est = xgb.XGBRegressor(
        n_estimators=40, max_depth=5, n_jobs=1, early_stopping_rounds=5 if early_stopping else None
    )
    if early_stopping:
        est.fit(x[:300], y[:300], eval_set=[(x[300:], y[300:])], verbose=False)
    else:
        est.fit(x, y)
    m.estimator = est


SERVED_KINDS = [(fs, stop) for fs in FeatureSet for stop in (False, True)]


@functools.cache
def served(fs: FeatureSet, early_stopping: bool) -> DurationModel:
    """A model with an xgboost estimator, ready as a scoring worker has it."""
    m = _model(fs)
    _xgboost(m, early_stopping)
    m.for_serving()
    return m


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records(), st.sampled_from(SERVED_KINDS))
def test_a_served_xgboost_model_answers_the_same_bits_on_every_path(df, key):
    """`predict_columns` (the forest walk for a few rides, xgboost's own for more) gives
    exactly what `predict` gives through the frame path."""
    m = served(*key)
    assert m.forest is not None  # the walk took this model
    arrays = canonical(df, len(df))
    if arrays is None:
        return  # odd types: the server hands them to MLflow's own path
    for rides in (df, df.head(1)):  # the whole request, then one ride (the walk, surely)
        want, want_err = outcome(
            lambda r=rides: m.estimator.predict(frame_path(m, r)).astype(np.float64)
        )
        got, got_err = outcome(lambda r=rides: m.predict_columns(dict(r.items()), len(r)))
        assert got_err == want_err
        if want is not None:
            assert got is not None and got.dtype == np.float64
            np.testing.assert_array_equal(got, want)
