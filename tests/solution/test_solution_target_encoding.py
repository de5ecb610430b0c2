from __future__ import annotations

import numpy as np
import pandas as pd

from haste_dagster.competitions.problem import Problem
from haste_dagster.solution.compile import build_pipeline
from haste_dagster.solution.space import default_spec
from haste_dagster.solution.spec import apply_patch, parse_patch


def test_target_encoding_of_an_integer_regression_target_gives_one_column_per_feature() -> None:
    # Whole-dollar prices look "multiclass" to sklearn's type inference; the encoder must
    # still treat them as continuous (one column per categorical feature, not per price).
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "size": rng.normal(size=300),
            "town": rng.choice(list("abcdefgh"), size=300),
            "kind": rng.choice(["x", "y", "z"], size=300),
        }
    )
    frame["price"] = (100_000 + 5_000 * rng.integers(0, 200, size=300)).astype("int64")
    problem = Problem(
        slug="prices", task="regression", metric="rmse", target="price",
        numeric=["size"], categorical=["town", "kind"],
    )
    spec = apply_patch(
        default_spec(problem),
        parse_patch({"op": "set", "path": "categorical.encoding", "value": "target"}),
    )
    features = build_pipeline(spec, problem)[:-1]
    encoded = features.fit_transform(frame, frame["price"])
    assert encoded.shape == (300, 3)
