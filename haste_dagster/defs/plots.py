"""Learning-curve plots for attempt metadata (matplotlib, headless)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _score(row: dict[str, Any]) -> float | None:
    value = row.get("score")  # an AttemptResult iteration's CV mean
    return None if value is None else float(value)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in run workers
    import matplotlib.pyplot as plt

    return plt


def _finish(
    fig: Any, ax: Any, path: Path, *, xlabel: str, title: str, higher_is_better: bool,
    legend: bool,
) -> None:
    """Integer iterations on x, the CV score's direction on y, then write the PNG."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("CV score (" + ("higher" if higher_is_better else "lower") + " is better)")
    ax.set_title(title, fontsize=9)
    if legend:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


def learning_curve_png(
    iterations: Sequence[dict[str, Any]], path: Path, *, title: str, higher_is_better: bool
) -> Path:
    """Plot every iteration's CV score and the incumbent (best kept) score; write a PNG."""
    plt = _pyplot()
    scored = [(int(r["idx"]), _score(r), bool(r.get("kept"))) for r in iterations]
    scored = [(i, s, k) for i, s, k in scored if s is not None]
    if any(r.get("branch", "main") != "main" for r in iterations):
        return _staged_curve(iterations, path, title=title, higher_is_better=higher_is_better)
    fig, ax = plt.subplots(figsize=(5, 3), dpi=80)
    try:
        kept = [(i, s) for i, s, k in scored if k]
        rejected = [(i, s) for i, s, k in scored if not k]
        if rejected:
            ax.scatter(*zip(*rejected, strict=True), color="0.6", s=14, label="rejected")
        if kept:
            ax.scatter(*zip(*kept, strict=True), color="tab:green", s=18, label="kept")
            # The incumbent only changes when a patch is kept: a step line through the kept
            # scores, held to the last iteration.
            last = max(i for i, _, _ in scored)
            xs = [i for i, _ in kept] + [last]
            ys = [s for _, s in kept] + [kept[-1][1]]
            ax.step(xs, ys, where="post", color="tab:green", linewidth=1.2)
        _finish(fig, ax, path, xlabel="iteration", title=title,
                higher_is_better=higher_is_better, legend=bool(scored))
    finally:
        plt.close(fig)
    return path


STAGE_STYLE = {  # branch: (label, colour, marker)
    "screen": ("screen (1 fold)", "tab:purple", "^"),
    "winner": ("winner branch", "tab:green", "o"),
    "runner_up": ("runner-up branch", "tab:blue", "s"),
    "ensemble": ("ensemble", "tab:red", "*"),
}


def _staged_curve(
    iterations: Sequence[dict[str, Any]], path: Path, *, title: str, higher_is_better: bool
) -> Path:
    """The staged pipeline's curve: each stage in its colour, a dashed line where a stage
    starts, each branch's incumbent as its own step line; hollow markers were not kept."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.2), dpi=80)
    try:
        starts: dict[str, int] = {}
        for branch, (label, colour, marker) in STAGE_STYLE.items():
            rows = [r for r in iterations if r.get("branch") == branch]
            if not rows:
                continue
            starts[branch] = min(int(r["idx"]) for r in rows)
            points = [(int(r["idx"]), _score(r), bool(r.get("kept"))) for r in rows]
            points = [(i, s, k) for i, s, k in points if s is not None]
            kept = [(i, s) for i, s, k in points if k or branch == "screen"]
            other = [(i, s) for i, s, k in points if not (k or branch == "screen")]
            if kept:
                ax.scatter(*zip(*kept, strict=True), color=colour, marker=marker, s=22,
                           label=label)
            if other:
                ax.scatter(*zip(*other, strict=True), facecolors="none", edgecolors=colour,
                           marker=marker, s=22, label=None if kept else label)
            if branch in ("winner", "runner_up") and kept and points:
                last = max(i for i, _, _ in points)
                xs = [i for i, _ in kept] + [last]
                ys = [s for _, s in kept] + [kept[-1][1]]
                ax.step(xs, ys, where="post", color=colour, linewidth=1.2)
        for idx in starts.values():
            if idx > 0:
                ax.axvline(idx - 0.5, color="0.7", linestyle="--", linewidth=0.8)
        _finish(fig, ax, path, xlabel="iteration (stages: screen → winner → runner-up → ensemble)",
                title=title, higher_is_better=higher_is_better, legend=bool(starts))
    finally:
        plt.close(fig)
    return path


def markdown_image(path: Path, alt: str) -> str:
    """Markdown embedding the PNG inline, so the Dagster UI shows it without file access."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"![{alt}](data:image/png;base64,{data})"


# The UI renders Markdown metadata inline only below 1000 characters (longer: behind a
# "Show Markdown" button), so the inline curve is a small SVG sized to fit that.
INLINE_LIMIT = 990


def _svg(points: list[tuple[float, float, bool]], higher_is_better: bool, bins: int) -> str:
    """Every CV score (grey) and the incumbent (green steps), at most ``bins`` x positions."""
    width, height = 200, 60
    xs = [i for i, _, _ in points]
    ys = [s for _, s, _ in points]
    x0, x1 = min(xs), max(xs) or 1
    y0, y1 = min(ys), max(ys)
    span_x, span_y = (x1 - x0) or 1, (y1 - y0) or 1

    def px(i: float) -> int:
        return round((i - x0) / span_x * (bins - 1)) * (width - 4) // max(1, bins - 1) + 2

    def py(s: float) -> int:
        up = (s - y0) / span_y if higher_is_better else (y1 - s) / span_y  # up = better
        return round(height - 3 - up * (height - 6))

    scores: dict[int, int] = {}
    for i, s, _ in points:
        scores.setdefault(px(i), py(s))  # the first score in each bin
    incumbent: dict[int, int] = {}  # the incumbent at the end of each bin
    best: int | None = None
    for i, s, kept in points:
        if kept:
            best = py(s)
        if best is not None:
            incumbent[px(i)] = best
    steps: list[str] = []
    level: int | None = None
    for x, y in sorted(incumbent.items()):
        if y != level:
            if level is not None:
                steps.append(f"{x},{level}")
            steps.append(f"{x},{y}")
            level = y
    if level is not None:
        steps.append(f"{width - 2},{level}")
    grey = " ".join(f"{x},{y}" for x, y in sorted(scores.items()))
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='300' height='90' "
        f"viewBox='0 0 {width} {height}'><rect width='{width}' height='{height}' fill='#fff' "
        f"stroke='#ccc'/><polyline points='{grey}' fill='none' stroke='#999'/>"
        f"<polyline points='{' '.join(steps)}' fill='none' stroke='#2a2' stroke-width='2'/></svg>"
    )


def learning_curve_inline(
    iterations: Sequence[dict[str, Any]], *, higher_is_better: bool, alt: str
) -> str | None:
    """Markdown of a small SVG learning curve short enough to show inline; None if no score."""
    points = [(int(r["idx"]), s, bool(r.get("kept"))) for r in iterations if (s := _score(r))
              is not None]
    if not points:
        return None
    bins = len(points)
    while True:
        data = base64.b64encode(_svg(points, higher_is_better, bins).encode()).decode("ascii")
        text = f"![{alt}](data:image/svg+xml;base64,{data})"
        if len(text) <= INLINE_LIMIT:
            return text
        if bins <= 8:
            return None  # cannot be drawn small enough; the full PNG is still there
        bins = max(8, bins * 2 // 3)
