"""A DictVectorizer built straight from feature columns.

`fit_vectorizer` and `transform` give exactly what `DictVectorizer.fit_transform` and
`DictVectorizer.transform` give on `frame.to_dict(orient="records")` (same feature names,
vocabulary, values, explicit zeros and NaNs), without building a Python dict per ride.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

if TYPE_CHECKING:  # scikit-learn takes about 2 s to import: only a fit needs it
    from sklearn.feature_extraction import DictVectorizer  # deferred: ~2 s, only to fit


def _column_codes(s: pd.Series) -> tuple[np.ndarray, list]:
    """Codes (-1 for missing) and labels of a categorical or string column."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        return s.cat.codes.to_numpy(), list(s.cat.categories)
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    return codes, list(uniques)


def _is_categorical(s: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s))


def _names(features: pd.DataFrame, sep: str) -> set[str]:
    names: set[str] = set()
    for col in features.columns:
        s = features[col]
        if not _is_categorical(s):
            names.add(col)
            continue
        codes, labels = _column_codes(s)
        present = np.unique(codes)
        if present.size and present[0] == -1:
            names.add(col)  # a missing value: DictVectorizer keys it by the column name
            present = present[1:]
        names.update(f"{col}{sep}{labels[i]}" for i in present)
    return names


ROWS_PER_BLOCK = 1 << 16  # transform builds rows in blocks: memory is the output plus one block


@dataclass(frozen=True)
class Coded:
    """A categorical feature column: integer codes (-1 for missing) into string labels."""

    codes: np.ndarray
    labels: list[str]

    def categorical(self) -> pd.Categorical:
        return pd.Categorical.from_codes(self.codes, categories=self.labels)


Column = Coded | np.ndarray  # categorical, or numbers (float64, NaN for missing)


@dataclass(frozen=True)
class _Column:
    """One feature column, ready to emit (vocabulary index, value) for any block of rows."""

    lut: np.ndarray  # vocabulary index (-1 if unseen) per code, then the missing-value entry
    codes: np.ndarray | None = None  # categorical codes, -1 for missing
    numbers: np.ndarray | None = None  # a numeric column (lut then holds its one index)

    def known(self) -> np.ndarray | bool:
        """Per row, whether this column gives the row an entry."""
        if self.codes is None:
            return bool(self.lut[0] >= 0)
        return (self.lut >= 0)[self.codes]

    def block(self, a: int, b: int, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
        if self.codes is None:
            assert self.numbers is not None  # a numeric column always has its numbers
            return self.lut[0], self.numbers[a:b]
        codes = self.codes[a:b]
        values = np.ones(b - a, dtype=dtype)
        values[codes == -1] = np.nan  # DictVectorizer keeps a missing value as NaN
        return self.lut[codes], values


def _column(name: str, col: Column, vocab: dict[str, int], sep: str) -> _Column:
    if not isinstance(col, Coded):
        return _Column(np.array([vocab.get(name, -1)], np.int32), numbers=col)
    # code -1 (missing) picks the last entry: DictVectorizer keys it by the column name
    names = [f"{name}{sep}{label}" for label in col.labels]
    lut = np.array([vocab.get(n, -1) for n in names] + [vocab.get(name, -1)], np.int32)
    return _Column(lut, codes=col.codes)


def as_column(s: pd.Series) -> Column:
    """A frame's column as the vectorizer reads it: numbers, or codes into labels."""
    if not _is_categorical(s):
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    codes, labels = _column_codes(s)
    return Coded(codes=codes, labels=labels)


def _layout(luts: list[np.ndarray]) -> list[int] | None:
    """A column order that sorts every row's indices, if the columns' index ranges do not
    interleave (the usual case: a column's names share its prefix); else None."""
    spans = sorted(
        (
            (int(lut[lut >= 0].min()), int(lut[lut >= 0].max()), j)
            for j, lut in enumerate(luts)
            if (lut >= 0).any()
        ),
    )
    if any(a[1] >= b[0] for a, b in zip(spans, spans[1:], strict=False)):
        return None
    return [j for *_, j in spans] + [j for j, lut in enumerate(luts) if not (lut >= 0).any()]


def transform(dv: DictVectorizer, features: pd.DataFrame) -> sp.csr_matrix:
    """Exactly `dv.transform(features.to_dict(orient="records"))`, built from columns."""
    return assemble(dv, {str(c): as_column(features[c]) for c in features.columns}, len(features))


def assemble(dv: DictVectorizer, columns: dict[str, Column], n: int) -> sp.csr_matrix:
    """The CSR matrix of `n` rows of feature `columns` (in the frame's column order), as
    DictVectorizer would make it from one dict per row.

    Counts each row's entries first, allocates the CSR arrays once, then fills them a block
    of rows at a time, in sorted column order (or sorting each row where names interleave).
    """
    k = len(columns)
    if n == 0:
        raise ValueError("Sample sequence X is empty.")  # as DictVectorizer says
    cols = [_column(name, c, dv.vocabulary_, dv.separator) for name, c in columns.items()]
    order = _layout([c.lut for c in cols])
    counts = np.zeros(n, dtype=np.int32)
    for c in cols:
        counts += c.known()
    index_dtype = np.int32 if int(counts.sum()) < np.iinfo(np.int32).max else np.int64
    indptr = np.zeros(n + 1, dtype=index_dtype)
    np.cumsum(counts, out=indptr[1:])
    del counts
    data = np.empty(int(indptr[-1]), dtype=dv.dtype)
    indices = np.empty(int(indptr[-1]), dtype=index_dtype)
    for a in range(0, n, ROWS_PER_BLOCK):
        b = min(n, a + ROWS_PER_BLOCK)
        idx = np.empty((b - a, k), dtype=np.int32)
        val = np.empty((b - a, k), dtype=dv.dtype)
        for pos, j in enumerate(order if order is not None else range(k)):
            idx[:, pos], val[:, pos] = cols[j].block(a, b, dv.dtype)
        if order is None:  # interleaved index ranges: sort each row
            perm = np.argsort(np.where(idx < 0, np.iinfo(np.int32).max, idx), axis=1, kind="stable")
            idx = np.take_along_axis(idx, perm, axis=1)
            val = np.take_along_axis(val, perm, axis=1)
        keep = idx >= 0
        data[indptr[a] : indptr[b]] = val[keep]
        indices[indptr[a] : indptr[b]] = idx[keep]
    x = sp.csr_matrix((data, indices, indptr), shape=(n, len(dv.feature_names_)))
    x.has_sorted_indices = True
    return x


def fit_vectorizer(
    features: pd.DataFrame, dtype: type = np.float64
) -> tuple[DictVectorizer, sp.csr_matrix]:
    """A fitted DictVectorizer and the training matrix, equal to `fit_transform` on dicts."""
    from sklearn.feature_extraction import DictVectorizer  # deferred: ~2 s, only to fit

    dv = DictVectorizer(dtype=dtype)
    names = sorted(_names(features, dv.separator))
    dv.feature_names_ = names
    dv.vocabulary_ = {name: i for i, name in enumerate(names)}
    return dv, transform(dv, features)


def csr_identical(a: sp.spmatrix, b: sp.spmatrix) -> bool:
    """True when two sparse matrices store the same entries (explicit zeros and NaNs too)."""
    a, b = sp.csr_matrix(a, copy=True), sp.csr_matrix(b, copy=True)
    for m in (a, b):
        m.has_sorted_indices = False  # do not trust the flag: really sort
        m.sort_indices()
    return (
        a.shape == b.shape
        and np.array_equal(a.indptr, b.indptr)
        and np.array_equal(a.indices, b.indices)
        and np.array_equal(a.data, b.data, equal_nan=True)
    )


def dense(dv: DictVectorizer, columns: dict[str, Column], n: int) -> np.ndarray:
    """`assemble`'s matrix as dense float32 rows with NaN where it has no entry: how
    xgboost reads a CSR matrix (an absent entry is a missing value), not how a linear
    model does (for it, absent is 0)."""
    x = np.full((n, len(dv.vocabulary_)), np.nan, dtype=np.float32)
    rows = np.arange(n)
    for name, c in columns.items():
        col = _column(name, c, dv.vocabulary_, dv.separator)
        if col.codes is None:
            if col.lut[0] >= 0:
                x[:, col.lut[0]] = col.numbers
            continue
        idx, values = col.block(0, n, dv.dtype)
        keep = idx >= 0
        x[rows[keep], idx[keep]] = values[keep]
    return x
