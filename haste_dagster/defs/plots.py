"""Learning-curve plots for attempt metadata (matplotlib, headless)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _score(row: dict[str, Any]) -> float | None:
    # AttemptResult.iterations uses "score"; the brief's shape says "cv_mean": accept both.
    value = row.get("score", row.get("cv_mean"))
    return None if value is None else float(value)


def learning_curve_png(
    iterations: Sequence[dict[str, Any]], path: Path, *, title: str, higher_is_better: bool
) -> Path:
    """Plot every iteration's CV score and the incumbent (best kept) score; write a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in run workers
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

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
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("iteration")
        ax.set_ylabel("CV score (" + ("higher" if higher_is_better else "lower") + " is better)")
        ax.set_title(title, fontsize=9)
        if scored:
            ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

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
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("iteration (stages: screen → winner → runner-up → ensemble)")
        ax.set_ylabel("CV score (" + ("higher" if higher_is_better else "lower") + " is better)")
        ax.set_title(title, fontsize=9)
        if starts:
            ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def markdown_image(path: Path, alt: str) -> str:
    """Markdown embedding the PNG inline, so the Dagster UI shows it without file access."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"![{alt}](data:image/png;base64,{data})"
