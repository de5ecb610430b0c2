"""Reuse of a fold's transformed feature matrices across candidates of one attempt.

Most candidates of an attempt change only model parameters, yet every one of them refits
the same feature pipeline (TF-IDF, encoders, lag matrices) on the same folds. `FoldCache`
keeps, per (feature configuration, fold, data), the training matrix the fitted
``features`` step produced and the validation matrix it transformed, so a candidate that
differs only in ``model`` fits its model on exactly the arrays a fresh fit would have
built: cross-validation scores stay bit-identical.

The key (`feature_key` + `data_fingerprint` + `fold_fingerprint`) holds everything the
features step can depend on: the whole spec except ``model`` (numeric, categorical, text,
date and forecast steps, the target transform, validation), the problem (column roles,
classes, horizon), the seed (target encoding cross-fits on seeded folds), the content of
the input columns and of the target (target encoding and forecast lags read the target,
after the target transform), and the fold's row positions. Nothing in the features step
depends on the model family or its parameters (`compile.build_pipeline` adds the model's
own float32 cast after it).

Memory is bounded: least recently used entries are evicted once the cached matrices
exceed ``max_bytes`` (``HASTE_FOLD_CACHE_MB``, default 256 MiB); an entry larger than the
whole budget is not kept. `stats` (hits, misses, bytes) goes into the attempt's result.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin, clone

from haste_dagster.errors import HasteError

DEFAULT_MB = 256
ENV_MB = "HASTE_FOLD_CACHE_MB"


class FoldCacheConfigError(HasteError, ValueError):
    """``HASTE_FOLD_CACHE_MB`` (or a budget passed in) is not a size."""


def budget_from_env() -> int:
    """The cache's byte budget from ``HASTE_FOLD_CACHE_MB`` (0 disables the cache)."""
    raw = os.environ.get(ENV_MB, "").strip()
    if not raw:
        return DEFAULT_MB * 2**20
    try:
        mb = float(raw)
    except ValueError:
        raise FoldCacheConfigError(f"{ENV_MB}: expected a number of MiB, got {raw!r}") from None
    if mb < 0 or not np.isfinite(mb):
        raise FoldCacheConfigError(f"{ENV_MB}: expected a number of MiB >= 0, got {raw!r}")
    return int(mb * 2**20)


def matrix_bytes(X: Any) -> int:
    """Bytes held by a dense or sparse matrix."""
    if sp.issparse(X):
        X = X.tocsr() if not hasattr(X, "indptr") else X
        return int(X.data.nbytes + X.indices.nbytes + X.indptr.nbytes)
    return int(np.asarray(X).nbytes)


def same_matrix(a: Any, b: Any) -> bool:
    """Whether two feature matrices hold the same values (NaN equal to NaN), shape and dtype:
    what a model fitted on either would see."""
    if sp.issparse(a) != sp.issparse(b) or a.shape != b.shape or a.dtype != b.dtype:
        return False
    if sp.issparse(a):
        return (sp.csr_matrix(a) != sp.csr_matrix(b)).nnz == 0  # NaN != NaN: not the same
    a, b = np.asarray(a), np.asarray(b)
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def _copy(X: Any) -> Any:
    # The model receives its own copy: nothing it does can alter what later candidates get.
    return X.copy()


@dataclass(frozen=True)
class FoldFeatures:
    train: Any  # the features step's fit_transform of the fold's training rows
    valid: Any  # its transform of the fold's validation rows

    @property
    def nbytes(self) -> int:
        return matrix_bytes(self.train) + matrix_bytes(self.valid)

    def same_as(self, other: FoldFeatures) -> bool:
        return same_matrix(self.train, other.train) and same_matrix(self.valid, other.valid)


class FoldCache:
    """An LRU of `FoldFeatures` bounded by the bytes of their matrices."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = budget_from_env() if max_bytes is None else int(max_bytes)
        if self.max_bytes < 0:
            raise FoldCacheConfigError(f"fold cache: max_bytes must be >= 0, got {max_bytes}")
        self._entries: OrderedDict[str, FoldFeatures] = OrderedDict()
        self.bytes = 0
        self.peak_bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.too_large = 0

    def __deepcopy__(self, memo: dict) -> FoldCache:
        # sklearn's clone deep-copies non-estimator parameters; the cache is a shared handle
        return self

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> FoldFeatures | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def peek(self, key: str) -> FoldFeatures | None:
        """The entry under ``key``, if kept, without counting a hit or a miss."""
        return self._entries.get(key)

    def put(self, key: str, entry: FoldFeatures) -> None:
        if key in self._entries:
            self.bytes -= self._entries.pop(key).nbytes
        size = entry.nbytes
        if size > self.max_bytes:
            self.too_large += 1
            return
        while self._entries and self.bytes + size > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.bytes -= old.nbytes
            self.evictions += 1
        self._entries[key] = entry
        self.bytes += size
        self.peak_bytes = max(self.peak_bytes, self.bytes)

    def stats(self) -> dict[str, int]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "entries": len(self._entries),
            "bytes": self.bytes,
            "peak_bytes": self.peak_bytes,
            "max_bytes": self.max_bytes,
            "evictions": self.evictions,
            "too_large": self.too_large,
        }


def _digest(*parts: bytes) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def feature_key(spec: Any, problem: Any, seed: int) -> str:
    """Everything of (spec, problem, seed) the features step depends on: all but ``model``."""
    features = spec.model_dump(mode="json")
    features.pop("model")
    payload = {"spec": features, "problem": problem.model_dump(mode="json"), "seed": seed}
    return _digest(json.dumps(payload, sort_keys=True, default=str).encode())


def data_fingerprint(X: pd.DataFrame, y: np.ndarray) -> str:
    """Content hash of the input columns (names, dtypes, values) and of the target."""
    hashed = pd.util.hash_pandas_object(X, index=False).to_numpy()
    target = pd.util.hash_pandas_object(pd.Series(y), index=False).to_numpy()
    header = json.dumps([[str(c), str(t)] for c, t in X.dtypes.items()]).encode()
    return _digest(header, hashed.tobytes(), target.tobytes())


def fold_fingerprint(train_idx: np.ndarray, valid_idx: np.ndarray) -> str:
    return _digest(
        np.asarray(train_idx, dtype=np.int64).tobytes(),
        np.asarray(valid_idx, dtype=np.int64).tobytes(),
    )


class CachedFeatures(TransformerMixin, BaseEstimator):
    """The ``features`` step of one cross-validation fold, served from a `FoldCache`.

    Used only by `evaluate.cross_validate`, where a fold's pipeline is fitted once on the
    fold's training rows and transforms once: the fold's validation rows. A hit returns
    copies of the cached matrices; a miss fits ``features`` and stores both matrices once
    the validation transform has run.
    """

    def __init__(self, features: Any, cache: FoldCache | None = None, key: str = "") -> None:
        self.features = features
        self.cache = cache
        self.key = key

    def fit(self, X: Any, y: Any = None) -> CachedFeatures:
        self.fit_transform(X, y)
        return self

    def fit_transform(self, X: Any, y: Any = None, **params: Any) -> Any:
        assert self.cache is not None
        self.hit_ = self.cache.get(self.key)
        self.transforms_ = 0
        if self.hit_ is not None:
            self.features_ = None
            return _copy(self.hit_.train)
        self.features_ = clone(self.features)
        train = self.features_.fit_transform(X, y, **params)
        self.train_ = _copy(train)
        return train

    def transform(self, X: Any) -> Any:
        self.transforms_ += 1
        if self.transforms_ > 1:
            raise RuntimeError("a cached fold's features serve a single validation transform")
        if self.hit_ is not None:
            if self.hit_.valid.shape[0] != len(X):
                raise RuntimeError("cached fold features: the validation rows do not match")
            return _copy(self.hit_.valid)
        valid = self.features_.transform(X)
        assert self.cache is not None
        self.cache.put(self.key, FoldFeatures(self.train_, _copy(valid)))
        del self.train_
        return valid
