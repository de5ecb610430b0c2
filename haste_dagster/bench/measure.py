"""Measured wall-clock and CPU seconds of a block of work, child processes included.

CPU seconds are this process's CPU time (every thread: XGBoost and BLAS threads count) plus
the CPU time of its child processes: those already reaped (``os.times().children_*``) and,
when psutil is installed, those still alive (a joblib/loky worker pool outlives the call
that started it). Budgets are compared on these numbers, never on requested time limits:
AutoML tools overshoot what they are asked for.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


def _live_children_cpu() -> float:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with dagster; optional here
        return 0.0
    total = 0.0
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:  # pragma: no cover
        return 0.0
    for child in children:
        try:
            times = child.cpu_times()
        except psutil.Error:  # ended between listing and reading
            continue
        total += times.user + times.system
    return total


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its children (a monotone counter)."""
    reaped = os.times()
    return (
        time.process_time() + reaped.children_user + reaped.children_system + _live_children_cpu()
    )


@dataclass
class Usage:
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.wall_seconds + other.wall_seconds, self.cpu_seconds + other.cpu_seconds)

    def as_json(self) -> dict[str, float]:
        return {
            "wall_seconds": round(self.wall_seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
        }


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.usage`` holds the measured seconds."""

    def __init__(self) -> None:
        self.usage = Usage()
        self._wall = 0.0
        self._cpu = 0.0

    def __enter__(self) -> Stopwatch:
        self._wall, self._cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.usage = Usage(time.perf_counter() - self._wall, max(0.0, cpu_seconds() - self._cpu))
