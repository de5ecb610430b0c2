"""Small synthetic problems with known structure, for tests, smoke runs and timings.

Each maker returns a `SyntheticCase`: the Problem, a training frame (``row_id``, features,
target) and a held-out test split (features and answers), all from one seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from haste_dagster.competitions.problem import Problem


@dataclass
class SyntheticCase:
    problem: Problem
    train: pd.DataFrame
    test_features: pd.DataFrame
    test_target: np.ndarray


def _split(problem: Problem, df: pd.DataFrame, test_rows: int, seed: int) -> SyntheticCase:
    df = df.copy()
    df.insert(0, "row_id", np.arange(len(df)))
    rng = np.random.default_rng(seed + 1)
    test_pos = rng.choice(len(df), size=test_rows, replace=False)
    mask = np.zeros(len(df), dtype=bool)
    mask[test_pos] = True
    test = df[mask].reset_index(drop=True)
    return SyntheticCase(
        problem,
        df[~mask].reset_index(drop=True),
        test.drop(columns=[problem.target]),
        test[problem.target].to_numpy(),
    )


def _tabular(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    x = rng.normal(size=(n, 4))
    colour = rng.choice(["red", "green", "blue", "other"], size=n, p=[0.4, 0.3, 0.2, 0.1])
    size = rng.lognormal(1.0, 1.0, size=n)
    signal = 1.5 * x[:, 0] - x[:, 1] ** 2 + 0.8 * x[:, 2] * x[:, 3] + (colour == "red") * 1.2
    signal += 0.5 * np.log(size)
    df = pd.DataFrame(
        {
            "x0": x[:, 0],
            "x1": x[:, 1],
            "x2": x[:, 2],
            "x3": x[:, 3],
            "size": size,
            "colour": colour,
        }
    )
    df.loc[rng.random(n) < 0.05, "x2"] = np.nan  # some missing values
    df.loc[rng.random(n) < 0.05, "colour"] = None
    return df, signal


_TABULAR = dict(numeric=["x0", "x1", "x2", "x3", "size"], categorical=["colour"])


def make_binary(n: int = 400, seed: int = 0, metric: str = "roc_auc") -> SyntheticCase:
    rng = np.random.default_rng(seed)
    df, signal = _tabular(n, rng)
    p = 1 / (1 + np.exp(-(signal - np.median(signal))))
    df["label"] = np.where(rng.random(n) < p, "yes", "no")
    problem = Problem(
        slug="syn_binary",
        task="binary",
        metric=metric,
        target="label",
        classes=["no", "yes"],
        **_TABULAR,
    )
    return _split(problem, df, n // 4, seed)


def make_multiclass(n: int = 450, seed: int = 0, metric: str = "f1_macro") -> SyntheticCase:
    rng = np.random.default_rng(seed)
    df, signal = _tabular(n, rng)
    noisy = signal + rng.normal(scale=0.5, size=n)
    cuts = np.quantile(noisy, [1 / 3, 2 / 3])
    df["label"] = np.array(["low", "mid", "high"])[np.searchsorted(cuts, noisy)]
    problem = Problem(
        slug="syn_multiclass",
        task="multiclass",
        metric=metric,
        target="label",
        classes=["high", "low", "mid"],
        **_TABULAR,
    )
    return _split(problem, df, n // 4, seed)


def make_regression(n: int = 400, seed: int = 0, metric: str = "rmse") -> SyntheticCase:
    rng = np.random.default_rng(seed)
    df, signal = _tabular(n, rng)
    df["y"] = 10 + 3 * signal + rng.normal(scale=0.5, size=n)
    problem = Problem(
        slug="syn_regression", task="regression", metric=metric, target="y", **_TABULAR
    )
    return _split(problem, df, n // 4, seed)


def make_linear_regression(n: int = 300, seed: int = 0, n_features: int = 12) -> SyntheticCase:
    """A purely linear target with many weak features: trees underfit, linear models shine."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_features))
    w = rng.normal(size=n_features)
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(n_features)])
    df["y"] = x @ w + rng.normal(scale=0.3, size=n)
    problem = Problem(
        slug="syn_linear",
        task="regression",
        metric="rmse",
        target="y",
        numeric=[f"f{i}" for i in range(n_features)],
    )
    return _split(problem, df, n // 4, seed)


_POSITIVE = ["great", "tasty", "love", "excellent", "fresh", "perfect", "delicious"]
_NEGATIVE = ["awful", "stale", "hate", "terrible", "bland", "broken", "disgusting"]
_NEUTRAL = [
    "the",
    "box",
    "arrived",
    "food",
    "coffee",
    "price",
    "taste",
    "was",
    "it",
    "and",
    "package",
    "flavour",
    "order",
    "again",
    "really",
    "quite",
]


def make_text(n: int = 400, seed: int = 0) -> SyntheticCase:
    """Reviews whose sentiment words (and their negation) decide the label."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        positive = rng.random() < 0.5
        words = list(rng.choice(_NEUTRAL, size=int(rng.integers(6, 14))))
        cue = _POSITIVE if positive else _NEGATIVE
        for _ in range(int(rng.integers(1, 3))):
            words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(cue)))
        if rng.random() < 0.15:  # label noise
            positive = not positive
        texts.append(" ".join(words))
        labels.append("pos" if positive else "neg")
    df = pd.DataFrame({"review": texts, "stars_shown": rng.integers(0, 2, size=n), "label": labels})
    problem = Problem(
        slug="syn_text",
        task="text_classification",
        metric="roc_auc",
        target="label",
        text=["review"],
        numeric=["stars_shown"],
        classes=["neg", "pos"],
    )
    return _split(problem, df, n // 4, seed)


def make_forecast(
    n: int = 300, seed: int = 0, horizon: int = 14, groups: int = 0, metric: str = "rmse"
) -> SyntheticCase:
    """Daily series: trend + weekly season + AR noise (+ a level per group for panels).

    The test split is the last ``horizon`` days of every series, as in the bundled
    forecasting competitions.
    """
    rng = np.random.default_rng(seed)
    frames = []
    for g in range(max(groups, 1)):
        t = pd.date_range("2020-01-01", periods=n, freq="D")
        level = 50 + 30 * g
        weekly = 8 * np.sin(2 * np.pi * t.day_of_week.to_numpy() / 7)
        noise = np.zeros(n)
        for i in range(1, n):
            noise[i] = 0.8 * noise[i - 1] + rng.normal(scale=2.0)
        temp = 15 + 10 * np.sin(2 * np.pi * t.day_of_year.to_numpy() / 365) + rng.normal(size=n)
        y = level + 0.05 * np.arange(n) + weekly + 0.4 * temp + noise
        frame = pd.DataFrame({"date": t, "temp": temp, "y": y})
        if groups:
            frame["store"] = f"s{g}"
        frames.append(frame)
    df = pd.concat(frames, ignore_index=True)
    df.insert(0, "row_id", np.arange(len(df)))
    problem = Problem(
        slug="syn_forecast_panel" if groups else "syn_forecast",
        task="forecast",
        metric=metric,
        target="y",
        numeric=["temp"],
        time_column="date",
        group_column="store" if groups else None,
        horizon=horizon,
    )
    key = df["store"] if groups else pd.Series(0, index=df.index)
    last = df.groupby(key)["date"].transform(lambda s: s.rank(ascending=False, method="first"))
    test_mask = (last <= horizon).to_numpy()
    test = df[test_mask].reset_index(drop=True)
    return SyntheticCase(
        problem,
        df[~test_mask].reset_index(drop=True),
        test.drop(columns=["y"]),
        test["y"].to_numpy(),
    )
