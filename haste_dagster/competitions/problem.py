"""What a solution must learn: the task, the metric and the role of every column.

Built by the competitions module from a definition and its data; consumed by the
solution compiler, which never sees the YAML.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Task = Literal["binary", "multiclass", "regression", "text_classification", "forecast"]


class Problem(BaseModel):
    slug: str
    task: Task
    metric: str
    target: str
    targets: list[str] | None = None  # several target columns (multi-target metrics only)
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    text: list[str] = Field(default_factory=list)
    date: list[str] = Field(default_factory=list)
    # Forecasting: rows are ordered by `time_column`; the hidden test is the last
    # `horizon` steps (per group for panels). Lag features must reach back >= horizon.
    time_column: str | None = None
    group_column: str | None = None
    horizon: int | None = None
    classes: list | None = None  # sorted class labels for classification

    @property
    def is_classification(self) -> bool:
        return self.classes is not None

    @property
    def feature_columns(self) -> list[str]:
        return [*self.numeric, *self.categorical, *self.text, *self.date]
