"""PNG plots of a transfer report (matplotlib, headless): learning curves cold vs warm, the
kept-rate vs inventory-size curve, and the loading ablation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from haste_dagster.bench.transfer import TransferReport, kept_rate_bins

ARM_STYLE = {
    "cold": ("tab:blue", "cold (empty store)"),
    "warm": ("tab:green", "warm (tiered: global + domain)"),
    "flat": ("tab:orange", "flat (every skill)"),
    "none": ("tab:gray", "none (no skills loaded)"),
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def _figure(path: Path, *args: Any, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
    """(figure, axes) of ``plt.subplots(*args, **kwargs)``, written to ``path`` as PNG when
    the block succeeds and closed in any case."""
    plt = _pyplot()
    fig, axes = plt.subplots(*args, **kwargs)
    try:
        yield fig, axes
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def _curves(records: list[Any], length: int) -> np.ndarray:
    """Incumbent curves padded to ``length`` (a stopped attempt keeps its last incumbent)."""
    rows = []
    for record in records:
        curve = [np.nan if v is None else v for v in record.curve]
        if not curve:
            continue
        curve += [curve[-1]] * (length - len(curve))
        rows.append(curve[:length])
    return np.asarray(rows, dtype=float)


def learning_curves_png(report: TransferReport, path: Path) -> Path:
    """Per evaluation competition: incumbent CV score by iteration, mean and min–max over seeds."""
    slugs = report.plan.evaluation
    cols = min(2, len(slugs)) or 1
    rows = (len(slugs) + cols - 1) // cols or 1
    size = (5.2 * cols, 3.4 * rows)
    with _figure(path, rows, cols, figsize=size, dpi=90, squeeze=False) as (fig, axes):
        for ax, slug in zip(axes.flat, slugs, strict=False):
            records = {arm: report.arm(arm, slug) for arm in ("cold", "warm", "flat", "none")}
            length = max((len(r.curve) for rs in records.values() for r in rs), default=1)
            x = np.arange(length)
            higher = True
            for arm, rs in records.items():
                if not rs:
                    continue
                higher = rs[0].higher_is_better
                data = _curves(rs, length)
                if data.size == 0:
                    continue
                colour, label = ARM_STYLE[arm]
                style = "-" if arm in ("cold", "warm") else ":"
                ax.plot(x, np.nanmean(data, axis=0), style, color=colour, label=label, lw=1.6)
                if arm in ("cold", "warm") and len(rs) > 1:
                    ax.fill_between(
                        x,
                        np.nanmin(data, axis=0),
                        np.nanmax(data, axis=0),
                        color=colour,
                        alpha=0.15,
                    )
            cold_final = [r.best_cv for r in records["cold"] if r.best_cv is not None]
            if cold_final:
                ax.axhline(float(np.mean(cold_final)), color="tab:blue", lw=0.8, ls="--", alpha=0.7)
            ax.set_title(f"{slug} ({len(records['cold'])} seed(s))", fontsize=9)
            ax.set_xlabel("iteration (0 = initial spec)")
            ax.set_ylabel("incumbent CV (" + ("higher" if higher else "lower") + " is better)")
            ax.legend(fontsize=7, loc="best")
        for ax in list(axes.flat)[len(slugs) :]:
            ax.set_visible(False)
    return path


def kept_rate_png(report: TransferReport, path: Path) -> Path:
    """Kept rate of every attempt against the active skills in the store when it started."""
    points = report.kept_rate_curve()
    with _figure(path, figsize=(6, 3.6), dpi=90) as (fig, ax):
        markers = {
            "campaign": ("o", "tab:purple"),
            "cold": ("s", "tab:blue"),
            "warm": ("^", "tab:green"),
            "flat": ("v", "tab:orange"),
        }
        for arm, (marker, colour) in markers.items():
            mine = [p for p in points if p["arm"] == arm]
            if mine:
                ax.scatter(
                    [p["inventory_size"] for p in mine],
                    [p["kept_rate"] for p in mine],
                    marker=marker,
                    color=colour,
                    s=22,
                    alpha=0.8,
                    label=arm,
                )
        bins = [b for b in kept_rate_bins(points) if b["n"]]
        if bins:
            centres = [
                float(
                    np.mean(
                        [
                            p["inventory_size"]
                            for p in points
                            if p["inventory_size"] >= b["low"]
                            and (b["high"] is None or p["inventory_size"] <= b["high"])
                        ]
                    )
                )
                for b in bins
            ]
            ax.plot(
                centres,
                [b["mean"] for b in bins],
                "-",
                color="black",
                lw=1.2,
                label="mean per inventory bin",
            )
        ax.axhline(0.85, color="tab:red", lw=0.8, ls="--", label="target 85% (50+ skills)")
        ax.axvline(50, color="tab:red", lw=0.5, ls=":")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("active skills in the store when the attempt started")
        ax.set_ylabel("kept rate")
        ax.set_title("kept rate vs inventory size", fontsize=9)
        ax.legend(fontsize=7, loc="best")
    return path


def ablation_png(report: TransferReport, path: Path) -> Path:
    """Medal rate per loading mode, with FLAML's beside them when it ran."""
    ablation = report.ablation()
    labels, values = [], []
    for mode, summary in ablation.items():
        labels.append(mode)
        values.append(summary["medal_rate"] if summary["medal_rate"] is not None else 0.0)
    peer_medals = [p.medal for p in report.peers if p.medal is not None]
    if peer_medals:
        labels.append("FLAML")
        values.append(sum(1 for m in peer_medals if m != "none") / len(peer_medals))
    with _figure(path, figsize=(4.5, 3.2), dpi=90) as (fig, ax):
        ax.bar(
            labels,
            values,
            color=["tab:green", "tab:orange", "tab:gray", "tab:brown"][: len(labels)],
        )
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("medal rate")
        ax.set_title("loading ablation (frozen inventory)", fontsize=9)
    return path


def write_plots(report: TransferReport, folder: Path) -> list[Path]:
    """Write every plot of ``report`` into ``folder``; returns the PNG paths."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        learning_curves_png(report, folder / "learning_curves.png"),
        kept_rate_png(report, folder / "kept_rate.png"),
        ablation_png(report, folder / "ablation.png"),
    ]
