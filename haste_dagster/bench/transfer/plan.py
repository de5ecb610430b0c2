"""The transfer benchmark's options, presets and plan (which competition plays which role)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from haste_dagster.agents.attempts import PIPELINES, Pipeline
from haste_dagster.competitions.definition import definition_paths, load_definition
from haste_dagster.config import competition_defs_dir
from haste_dagster.errors import HasteError

Loading = Literal["tiered", "flat", "none"]
Arm = Literal["campaign", "rerun_warm", "rerun_control", "cold", "warm", "flat", "none"]
MODES: tuple[Loading, ...] = ("tiered", "flat", "none")

# Presets. Full: three competitions of every domain form the campaign (interleaved by
# domain so the inventory grows evenly), one per domain is held out for evaluation.
FULL_EVALUATION = ("phone_churn", "concrete_strength", "food_reviews", "us_births")
FULL_DEVELOPMENT = (
    "credit_scoring",
    "ames_housing",
    "tweet_source",
    "elec_demand",
    "image_segments",
    "delivery_time",
    "bird_strike_phase",
    "bank_calls",
    "telco_churn",
    "diamonds",
    "hpc_jobs",
    "tx_housing_sales",
)
# Quick (CI smoke, < 10 min on 2 cores): the small tabular competitions only.
QUICK_DEVELOPMENT = ("telco_churn", "ames_housing", "credit_scoring", "delivery_time", "hpc_jobs")
QUICK_EVALUATION = ("phone_churn", "concrete_strength")
QUICK_ITERATIONS = 10


class BenchmarkError(HasteError):
    """The benchmark cannot run with these options (unknown competition, no database...)."""





@dataclass
class TransferOptions:
    """What to run. ``competitions`` is the campaign order (evaluation slugs may be listed
    too: they are taken out of the campaign); ``evaluation`` the held-out set. Left empty,
    the preset's lists are used (``defs_dirs`` given: every YAML in them, the last
    competition of each domain with two or more held out)."""

    competitions: list[str] = field(default_factory=list)
    evaluation: list[str] = field(default_factory=list)
    defs_dirs: list[Path] = field(default_factory=list)
    seeds: int = 3
    iterations: int | None = None  # None: each competition's own budget
    policy: str = "heuristic"
    # every attempt of every arm: straight, or staged (its prototype screen tries recipes)
    pipeline: Pipeline = "straight"
    modes: tuple[Loading, ...] = MODES
    peers: tuple[str, ...] = ("flaml",)
    campaign_seed: int = 0
    quick: bool = False
    keep_databases: bool = False
    log: Callable[[str], None] | None = None

    @classmethod
    def quick_preset(cls, **overrides: Any) -> TransferOptions:
        base = cls(seeds=1, iterations=QUICK_ITERATIONS, quick=True)
        return replace(base, **overrides)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TransferOptions:
        """The options a report's JSON recorded (``as_json``), without ``log``."""
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["defs_dirs"] = [Path(p) for p in values.get("defs_dirs", [])]
        for name in ("modes", "peers"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    def as_json(self) -> dict[str, Any]:
        # Not asdict(): it deep-copies `log`, and a bound logger method cannot be copied.
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "log"}
        data["defs_dirs"] = [str(p) for p in self.defs_dirs]
        data["modes"] = list(self.modes)
        data["peers"] = list(self.peers)
        return data


@dataclass
class Plan:
    development: list[str]
    evaluation: list[str]
    folders: dict[str, Path]  # slug → folder holding its YAML
    domains: dict[str, str]
    seeds: list[int]
    # Decided once, so a leaderboard written while the benchmark runs cannot make one arm
    # graded and another not: True when the YAML has medals or a leaderboard CSV exists.
    graded: dict[str, bool] = field(default_factory=dict)


def _find_folder(slug: str, folders: Sequence[Path]) -> Path | None:
    for folder in folders:
        if (folder / f"{slug}.yaml").is_file():
            return folder
    return None


def plan_benchmark(options: TransferOptions) -> Plan:
    """Resolve slugs to definition folders and split them into development and evaluation.

    Folders are searched in the order given, the bundled ``competition_defs/`` last, so
    unseen competitions from any folder can be evaluated after a bundled campaign.
    """
    if options.seeds < 1:
        raise BenchmarkError("--seeds must be at least 1")
    if options.iterations is not None and options.iterations < 1:
        raise BenchmarkError("--iterations must be at least 1")
    if options.campaign_seed < 0:
        raise BenchmarkError(f"--campaign-seed must be 0 or more, not {options.campaign_seed}")
    if options.pipeline not in PIPELINES:
        raise BenchmarkError(
            f"--pipeline must be one of {', '.join(PIPELINES)}, not {options.pipeline!r}"
        )
    unknown_modes = [m for m in options.modes if m not in MODES]
    if unknown_modes or "tiered" not in options.modes:
        raise BenchmarkError(
            f"modes must include 'tiered' and be among {MODES}, got {options.modes}"
        )
    extra = [Path(p).resolve() for p in options.defs_dirs]
    for folder in extra:
        if not folder.is_dir():
            raise BenchmarkError(f"--defs {folder}: not a folder")
    folders = [*extra, competition_defs_dir()]

    listed = list(dict.fromkeys(options.competitions))
    evaluation = list(dict.fromkeys(options.evaluation))
    if not listed and not evaluation:
        if extra:
            listed = [p.stem for folder in extra for p in definition_paths(folder)]
        elif options.quick:
            listed, evaluation = [*QUICK_DEVELOPMENT], [*QUICK_EVALUATION]
        else:
            listed, evaluation = [*FULL_DEVELOPMENT], [*FULL_EVALUATION]

    resolved: dict[str, Path] = {}
    missing = []
    for slug in dict.fromkeys([*listed, *evaluation]):
        folder = _find_folder(slug, folders)
        if folder is None:
            missing.append(slug)
        else:
            resolved[slug] = folder
    if missing:
        where = ", ".join(str(f) for f in folders)
        raise BenchmarkError(f"no competition definition for {missing} in {where}")
    definitions = {s: load_definition(resolved[s] / f"{s}.yaml") for s in resolved}
    domains = {s: d.domain for s, d in definitions.items()}
    graded = {
        s: d.medals is not None or d.leaderboard_path.is_file() for s, d in definitions.items()
    }

    if not evaluation:
        by_domain: dict[str, list[str]] = {}
        for slug in listed:
            by_domain.setdefault(domains[slug], []).append(slug)
        evaluation = [slugs[-1] for slugs in by_domain.values() if len(slugs) >= 2]
        if not evaluation:
            raise BenchmarkError(
                "cannot pick evaluation competitions: no domain has two or more of the listed "
                "competitions; name them with --eval"
            )
    development = [s for s in listed if s not in evaluation]
    if not development:
        raise BenchmarkError("no development competitions left for the campaign")
    seeds = list(range(options.campaign_seed, options.campaign_seed + options.seeds))
    return Plan(development, evaluation, resolved, domains, seeds, graded)
