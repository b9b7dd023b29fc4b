"""The column vectorizer: it must equal DictVectorizer exactly (names, vocabulary, values,
explicit zeros and NaNs, and the CSR arrays themselves)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction import DictVectorizer

from duration.core import vectorizer
from duration.core.schema import FeatureSet
from tests.unit.core.conftest import fitted


@pytest.fixture(autouse=True, scope="module")
def small_blocks():
    """Build rows in blocks of 4, so these small frames cross block boundaries."""
    saved, vectorizer.ROWS_PER_BLOCK = vectorizer.ROWS_PER_BLOCK, 4
    yield
    vectorizer.ROWS_PER_BLOCK = saved


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
    fz = fitted(FeatureSet.default, rides)
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
