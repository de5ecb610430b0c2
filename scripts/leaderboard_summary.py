"""Print each bundled leaderboard's size and the medal its `default` entrant would get.

The foundation issue asks that medals mean something ("a default XGBoost must not get gold
everywhere"); this is the check, from the CSVs alone:

    python scripts/leaderboard_summary.py [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from haste_dagster.competitions.grading import medal_for, medal_thresholds
from haste_dagster.competitions.leaderboard import read_leaderboard
from haste_dagster.competitions.metrics import get_metric
from haste_dagster.competitions.registry import load_definitions
from haste_dagster.config import competition_defs_dir


def summarise(defs_dir: Path | None = None) -> list[dict]:
    definitions, _errors = load_definitions(defs_dir or competition_defs_dir())
    rows = []
    for d in definitions:
        if not d.leaderboard_path.is_file():
            rows.append({"slug": d.slug, "teams": 0, "default_medal": None})
            continue
        board = read_leaderboard(d.leaderboard_path)
        higher = get_metric(d.metric).higher_is_better
        scores = board["score"].tolist()
        thresholds = medal_thresholds(scores, higher)
        default = board.loc[board["entrant"] == "default", "score"]
        medal = medal_for(float(default.iloc[0]), thresholds, higher) if len(default) else None
        rows.append({"slug": d.slug, "teams": len(board), "default_medal": medal})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--defs", type=Path, default=None, help="definitions folder")
    args = parser.parse_args(argv)
    rows = summarise(args.defs)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['slug']:<20} teams {r['teams']:>3}  default {r['default_medal']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
