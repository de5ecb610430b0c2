"""(Re)compute the hidden answers' checksum of competitions and write it into their YAML.

Run after adding a competition, or after a deliberate change of its data, preparation or
split; loading a competition whose answers no longer match its checksum fails.

    python scripts/freeze_splits.py [--defs DIR] [SLUG ...]     # default: all
    python scripts/freeze_splits.py --check                     # report, write nothing
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from haste_dagster.competitions.definition import definition_paths
from haste_dagster.competitions.registry import freeze_split, load_competition_path
from haste_dagster.config import competition_defs_dir
from haste_dagster.errors import CompetitionDefError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slugs", nargs="*", help="competitions to freeze (default: all)")
    parser.add_argument("--defs", type=Path, default=None, help="definitions folder")
    parser.add_argument("--check", action="store_true", help="only verify; exit 1 on a mismatch")
    args = parser.parse_args(argv)
    folder = args.defs or competition_defs_dir()
    paths = [p for p in definition_paths(folder) if not args.slugs or p.stem in args.slugs]
    unknown = set(args.slugs) - {p.stem for p in paths}
    if unknown:
        print(f"unknown competition(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    failed = False
    for path in paths:
        try:
            if args.check:
                load_competition_path(path)
                print(f"{path.stem}: ok")
                continue
            sha, changed = freeze_split(path)
        except CompetitionDefError as exc:
            print(f"{path.stem}: {exc}", file=sys.stderr)
            failed = True
            continue
        print(f"{path.stem}: {sha} ({'written' if changed else 'unchanged'})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
