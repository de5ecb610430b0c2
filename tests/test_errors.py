"""Every exception class HASTE defines sits under HasteError, so a command catches one type."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import haste_dagster
from haste_dagster.competitions.metrics import get_metric
from haste_dagster.errors import ConfigError, HasteError, NotFoundError


def _package_exception_classes() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for info in pkgutil.walk_packages(haste_dagster.__path__, prefix="haste_dagster."):
        if info.name.endswith(".__main__"):  # runs the CLI when imported
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            # Only classes defined here, not ones a module imports from elsewhere.
            if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                found.append(obj)
    return found


def test_every_exception_class_in_the_package_subclasses_haste_error() -> None:
    classes = _package_exception_classes()
    # The walk really sees the classes spread over the package, not just errors.py.
    names = {c.__name__ for c in classes}
    assert {"DatabaseError", "SplitError", "SourceError", "BenchmarkError"} <= names
    assert {"PeerUnavailable", "ExecutorConfigError", "ReplyRejected"} <= names
    outside = [f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, HasteError)]
    assert outside == []


def test_an_unknown_metric_is_a_haste_error_that_prints_its_message_unquoted() -> None:
    with pytest.raises(NotFoundError) as info:
        get_metric("no_such_metric")
    assert isinstance(info.value, KeyError)  # callers that catch KeyError still work
    assert str(info.value).startswith("unknown metric 'no_such_metric'; known metrics: ")


def test_an_unknown_policy_is_a_haste_error_that_keeps_value_error() -> None:
    from haste_dagster.agents.factory import make_policy

    with pytest.raises(ConfigError, match="unknown policy 'nope'; choose one of heuristic, llm"):
        make_policy("nope")
    assert issubclass(ConfigError, ValueError)
