"""Competitions: definitions (YAML), offline data sources, hidden split, profile, grading."""

from haste_dagster.competitions.definition import CompetitionDef, load_definition, load_definitions
from haste_dagster.competitions.grading import (
    Grade,
    Thresholds,
    grade,
    medal_thresholds,
    score_hidden,
)
from haste_dagster.competitions.metrics import METRICS, Metric, get_metric
from haste_dagster.competitions.problem import Problem
from haste_dagster.competitions.profile import DataProfile, profile_data
from haste_dagster.competitions.registry import Competition, load_competition

__all__ = [
    "METRICS",
    "Competition",
    "CompetitionDef",
    "DataProfile",
    "Grade",
    "Metric",
    "Problem",
    "Thresholds",
    "get_metric",
    "grade",
    "load_competition",
    "load_definition",
    "load_definitions",
    "medal_thresholds",
    "profile_data",
    "score_hidden",
]
