"""The transfer benchmark: does what was learnt on some competitions help on unseen ones?

Phases (all in throwaway databases created on the same PostgreSQL server as the store the
caller named, and dropped afterwards; the caller's own database is never written):

1. **Campaign** (database ``<tag>_inv``): an empty skill store; the development
   competitions are solved by the campaign protocol (``orchestrator.campaign_protocol``):
   round 1 = the first competition of each domain, cold (no skills loaded); round 2 = the
   rest, tiered; promotion after each competition and consolidation between rounds; then the
   re-run phase: every development competition that did not medal again warm (``rerun_warm``)
   and again without skills (``rerun_control``), both with seed ``campaign_seed + 1000``.
   For every attempt the number of active skills when it started is recorded; the inventory
   by tier and per domain and kind is reported after the campaign.
2. **Warm vs cold** on each evaluation competition (never solved in the campaign), for every
   seed: *warm* = an attempt with ``tiered`` loading against the frozen inventory of (1).
   An evaluation competition has no competition skills of its own, so tiered loading gives
   exactly its domain skills and the global ones. *cold* = the same attempt against an empty
   store (database ``<tag>_cold``). Same seed, same iteration budget, same folds.
3. **Loading ablation** on the same frozen inventory, same seeds and budget: ``tiered`` (the
   warm attempts themselves), ``flat`` (every active skill in scope) and ``none``.
   Evaluation attempts read the store through :class:`FrozenStore`, which writes no usage
   statistics, so every attempt sees the same skills with the same utilities; a fingerprint
   of the inventory taken before and after the evaluation phase proves it did not change.
4. **Kept rate vs inventory size**: one point per attempt (campaign and evaluation): its
   kept rate (kept patches / scored refinement iterations) against the active skills in the
   store when it started.
5. **Peers**: FLAML AutoML on each evaluation competition and seed, given the CPU seconds the
   warm attempt measurably used (search + final fit), graded on the same hidden split and
   leaderboard; its own measured CPU seconds are reported beside the budget.

**Iterations to reach a score.** An attempt's iteration ``i`` is its ``i``-th scored spec
(``0`` = the initial spec). The *evaluations to reach* a score ``t`` is ``i + 1`` for the
first iteration ``i`` whose *kept* score is at least as good as ``t`` (the baseline
evaluation counts, so the number is defined when the baseline already reaches ``t``). For a
(competition, seed) pair, cold's count is the evaluations to reach its own final CV score,
warm's is the evaluations to reach that same score. A warm attempt that never reaches it
within its budget ``B`` is *censored* and counted as ``B + 1`` evaluations (all it was
allowed: a lower bound on its true cost), and flagged. The headline
``warm_cold_iteration_ratio`` is Σ warm / Σ cold over all pairs; the mean and spread of the
per-pair ratios are reported beside it.

Wall-clock and CPU seconds (this process and its children) are measured around every
attempt, submission and peer run (:mod:`haste_dagster.bench.measure`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import psycopg
from psycopg.pq import TransactionStatus

from haste_dagster import db
from haste_dagster.bench.measure import Stopwatch, Usage, cpu_seconds
from haste_dagster.competitions.definition import definition_paths, load_definition
from haste_dagster.competitions.registry import Competition, load_competition
from haste_dagster.config import competition_defs_dir
from haste_dagster.errors import HasteError

log = logging.getLogger(__name__)

Loading = Literal["tiered", "flat", "none"]
Arm = Literal["campaign", "rerun_warm", "rerun_control", "cold", "warm", "flat", "none"]
MODES: tuple[Loading, ...] = ("tiered", "flat", "none")
SCHEMA = "haste.bench.transfer/1"

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

TARGETS = {
    "warm_cold_iteration_ratio": 0.35,  # warm needs ≤ 35% of the cold evaluations
    "domain_skills_per_domain": 2,  # active domain skills in every domain after the campaign
    "global_skills": 1,
    "warm_test_at_least_cold_share": 0.75,  # of (competition, seed) pairs
    "warm_cold_kept_rate_ratio": 2.0,
    "kept_rate_at_50_skills": 0.85,
    "tiered_minus_flat_medal_rate": 0.25,
    "warm_at_least_flaml_share": 0.75,
}
INVENTORY_BINS = ((0, 0), (1, 9), (10, 24), (25, 49), (50, None))


class BenchmarkError(HasteError):
    """The benchmark cannot run with these options (unknown competition, no database...)."""


# ---------------------------------------------------------------------------------------
# Options and plan
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# Throwaway databases
# ---------------------------------------------------------------------------------------


# db.server_conninfo, db.scratch_database and db.connect (autocommit, so every recorded
# row is durable at once) create, open and drop them.


# ---------------------------------------------------------------------------------------
# Skill store access
# ---------------------------------------------------------------------------------------


class FrozenStore:
    """A read-through view of a skill store that records no usage.

    Evaluation attempts run against the campaign's inventory; with the store's usage writes
    switched off, every one of them sees the same skills with the same utilities, whatever
    ran before it.
    """

    def __init__(self, store: Any) -> None:
        self._store = store

    def record_usage(self, *args: Any, **kwargs: Any) -> None:
        return None

    def record_loaded(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def inventory(conn: psycopg.Connection) -> dict[str, Any]:
    """Active skills by tier, and a fingerprint of every skill version and usage row.

    Two equal fingerprints mean no skill was added, versioned, retired or used in between.
    """
    idle = conn.info.transaction_status == TransactionStatus.IDLE
    if conn.execute("SELECT to_regclass('skills') AS t").fetchone()["t"] is None:
        if idle:
            conn.commit()
        return {"active": 0, "by_tier": {}, "fingerprint": hashlib.sha256(b"").hexdigest()}
    rows = conn.execute(
        """SELECT tier, count(*) AS n FROM skills WHERE is_current AND status = 'active'
           GROUP BY tier ORDER BY tier"""
    ).fetchall()
    by_tier = {r["tier"]: int(r["n"]) for r in rows}
    versions = conn.execute(
        "SELECT id, version, is_current, status FROM skills ORDER BY id, version"
    ).fetchall()
    usage = conn.execute(
        "SELECT count(*) AS n, coalesce(max(id), 0) AS last FROM skill_usage"
    ).fetchone()
    if idle:  # end the transaction these reads opened; leave a caller's own one alone
        conn.commit()
    digest = hashlib.sha256(json.dumps([versions, usage], default=str).encode())
    return {"active": sum(by_tier.values()), "by_tier": by_tier, "fingerprint": digest.hexdigest()}


def inventory_listing(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every current active skill: id, version, tier, scope, title, action, provenance."""
    idle = conn.info.transaction_status == TransactionStatus.IDLE
    rows = conn.execute(
        """SELECT id, version, tier, scope_key, title, action, created_by FROM skills
           WHERE is_current AND status = 'active'
           ORDER BY array_position(ARRAY['global','domain','competition'], tier), scope_key, id"""
    ).fetchall()
    if idle:
        conn.commit()
    return [dict(r) for r in rows]


# ---------------------------------------------------------------------------------------
# Attempts
# ---------------------------------------------------------------------------------------


@dataclass
class Graded:
    score: float
    medal: str | None  # None: the competition has neither a leaderboard nor medal thresholds
    rank: int | None = None
    n_teams: int | None = None
    bootstrap_se: float | None = None

    @property
    def percentile(self) -> float | None:
        """Share of the leaderboard this submission beats or ties (1.0 = first)."""
        if self.rank is None or not self.n_teams:
            return None
        return 1.0 - (self.rank - 1) / self.n_teams


@dataclass
class AttemptRecord:
    phase: Literal["campaign", "evaluation"]
    arm: Arm
    slug: str
    domain: str
    seed: int
    loading: str
    attempt_id: int
    database: str
    higher_is_better: bool
    budget: int
    inventory_size: int  # active skills in the store when the attempt started
    skills_loaded: int
    skills_loaded_by_tier: dict[str, int]
    skill_ids_loaded: list[str]
    best_cv: float | None
    kept_rate: float
    scored_iterations: int
    stopped: str
    iterations: list[dict[str, Any]]  # idx, score, kept, error (from the attempt result)
    prompt_tokens: int
    completion_tokens: int
    search: Usage
    submission: Usage
    test_score: float | None
    medal: str | None
    rank: int | None
    n_teams: int | None
    percentile: float | None
    bootstrap_se: float | None
    new_skills: list[str] = field(default_factory=list)
    llm: dict[str, Any] | None = None  # token-ledger totals of the attempt (llm policy)
    # 1 when the negative-transfer guard evaluated the plain default beside the
    # skill-shaped initial spec: an evaluation the iterations do not show, counted by
    # pair_ratio so warm is not credited with a free evaluation.
    control_evaluations: int = 0
    control_won: bool | None = None

    @property
    def usage(self) -> Usage:
        return self.search + self.submission

    @property
    def curve(self) -> list[float | None]:
        return incumbent_curve(self.iterations)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["search"] = self.search.as_json()
        data["submission"] = self.submission.as_json()
        data["usage"] = self.usage.as_json()
        data["curve"] = self.curve
        return data


def _slim_iterations(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "idx": r["idx"],
            "score": r["score"],
            "kept": bool(r["kept"]),
            "error": r.get("error"),
            "tokens": r.get("tokens", 0),
            "seconds": r.get("seconds"),
        }
        for r in rows
    ]


def _graded(
    conn: psycopg.Connection, competition: Competition, attempt_id: int, gradeable: bool
) -> Graded:
    """Grade the attempt's best spec on the hidden split (score only without thresholds)."""
    from haste_dagster.agents import records
    from haste_dagster.agents.submission import make_submission
    from haste_dagster.competitions.grading import score_hidden
    from haste_dagster.solution.evaluate import fit_predict
    from haste_dagster.solution.spec import SolutionSpec

    if gradeable:
        g = make_submission(conn, competition, attempt_id)
        return Graded(g.score, g.medal, g.rank, g.n_teams or None, g.bootstrap_se)
    attempt = records.get_attempt(conn, attempt_id)
    spec = SolutionSpec.model_validate(attempt.best_spec)
    predictions = fit_predict(
        spec, competition.problem, competition.train, competition.test_features, attempt.seed
    )
    return Graded(score_hidden(competition, predictions), None)


def _grade_predictions(competition: Competition, predictions: Any, gradeable: bool) -> Graded:
    from haste_dagster.competitions.grading import grade, score_hidden

    if gradeable:
        g = grade(competition, predictions)
        return Graded(g.score, g.medal, g.rank, g.n_teams or None, g.bootstrap_se)
    return Graded(score_hidden(competition, predictions), None)


def _run_one(
    conn: psycopg.Connection,
    database: str,
    store: Any,
    competition: Competition,
    *,
    phase: Literal["campaign", "evaluation"],
    arm: Arm,
    loading: Loading,
    seed: int,
    options: TransferOptions,
    plan: Plan,
    extract: bool = True,
) -> AttemptRecord:
    from haste_dagster.agents.competition_agent import AttemptConfig, run_attempt
    from haste_dagster.agents.orchestrator import extract_skills

    size = inventory(conn)["active"]
    config = AttemptConfig(
        policy=options.policy,
        loading=loading,
        iterations=options.iterations,
        seed=seed,
        label=f"bench:{arm}",
    )
    with Stopwatch() as search:
        result = run_attempt(conn, competition, config, store=store)
    with Stopwatch() as submit:
        graded = _graded(conn, competition, result.attempt_id, plan.graded[competition.slug])
    new_skills: list[str] = []
    if phase == "campaign" and extract:
        new_skills = [s.id for s in extract_skills(conn, competition, result.attempt_id, store)]
    control = result.extra.get("control")
    tiers: dict[str, int] = {}
    for entry in result.skills_loaded:
        tiers[entry.get("tier", "?")] = tiers.get(entry.get("tier", "?"), 0) + 1
    scored = max(0, len(result.iterations) - 1)
    llm = None
    if options.policy == "llm":
        from haste_dagster.llm.ledger import TokenLedger

        llm = TokenLedger(conn).attempt_totals(result.attempt_id).as_json()
    return AttemptRecord(
        phase=phase,
        arm=arm,
        slug=competition.slug,
        domain=plan.domains[competition.slug],
        seed=seed,
        loading=loading,
        attempt_id=result.attempt_id,
        database=database,
        higher_is_better=competition.metric.higher_is_better,
        budget=options.iterations or competition.definition.budget.iterations,
        inventory_size=size,
        skills_loaded=len(result.skills_loaded),
        skills_loaded_by_tier=tiers,
        skill_ids_loaded=[entry["id"] for entry in result.skills_loaded],
        best_cv=result.best_cv,
        kept_rate=result.kept_rate,
        scored_iterations=scored,
        stopped=result.stopped,
        iterations=_slim_iterations(result.iterations),
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        search=search.usage,
        submission=submit.usage,
        test_score=graded.score,
        medal=graded.medal,
        rank=graded.rank,
        n_teams=graded.n_teams,
        percentile=graded.percentile,
        bootstrap_se=graded.bootstrap_se,
        new_skills=new_skills,
        llm=llm,
        control_evaluations=1 if control else 0,
        control_won=bool(control["control_won"]) if control else None,
    )


# ---------------------------------------------------------------------------------------
# Measures
# ---------------------------------------------------------------------------------------


def _at_least(score: float, target: float, higher_is_better: bool) -> bool:
    return score >= target if higher_is_better else score <= target


def incumbent_curve(iterations: Sequence[dict[str, Any]]) -> list[float | None]:
    """The incumbent (best kept) CV score after each iteration, in idx order."""
    curve: list[float | None] = []
    best: float | None = None
    for row in sorted(iterations, key=lambda r: r["idx"]):
        if row["kept"] and row["score"] is not None:
            best = float(row["score"])
        curve.append(best)
    return curve


def evaluations_to_reach(
    iterations: Sequence[dict[str, Any]], target: float, higher_is_better: bool
) -> int | None:
    """``idx + 1`` of the first kept iteration scoring at least ``target``; None if none does."""
    for row in sorted(iterations, key=lambda r: r["idx"]):
        if (
            row["kept"]
            and row["score"] is not None
            and _at_least(float(row["score"]), target, higher_is_better)
        ):
            return int(row["idx"]) + 1
    return None


@dataclass
class PairRatio:
    slug: str
    seed: int
    target: float  # the cold attempt's final CV score
    cold_evaluations: int
    warm_evaluations: int  # budget + 1 when never reached (censored)
    reached: bool
    ratio: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def pair_ratio(cold: AttemptRecord, warm: AttemptRecord) -> PairRatio:
    """Evaluations warm needs to reach cold's final CV score, over cold's own (see module doc)."""
    if cold.best_cv is None:
        raise ValueError(f"cold attempt {cold.attempt_id} has no CV score")
    higher = cold.higher_is_better
    cold_n = evaluations_to_reach(cold.iterations, cold.best_cv, higher)
    assert cold_n is not None  # its own best is always reached
    warm_n = evaluations_to_reach(warm.iterations, cold.best_cv, higher)
    reached = warm_n is not None
    warm_count = (warm_n if warm_n is not None else warm.budget + 1) + warm.control_evaluations
    return PairRatio(
        cold.slug, cold.seed, cold.best_cv, cold_n, warm_count, reached, warm_count / cold_n
    )


def spread(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """Mean, sample standard deviation, min, max and count of the non-missing values."""
    xs = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if xs.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {
        "mean": float(xs.mean()),
        "std": float(xs.std(ddof=1)) if xs.size > 1 else 0.0,
        "min": float(xs.min()),
        "max": float(xs.max()),
        "n": int(xs.size),
    }


def _medal_rate(records: Sequence[AttemptRecord]) -> tuple[float | None, int, int]:
    graded = [r for r in records if r.medal is not None]
    medals = sum(1 for r in graded if r.medal != "none")
    return (medals / len(graded) if graded else None), medals, len(graded)


def ablation_summary(records: Sequence[AttemptRecord], slugs: Sequence[str]) -> dict[str, Any]:
    rate, medals, graded = _medal_rate(records)
    return {
        "attempts": len(records),
        "graded": graded,
        "medals": medals,
        "medal_rate": rate,
        "medal_counts": {
            m: sum(1 for r in records if r.medal == m) for m in ("gold", "silver", "bronze", "none")
        },
        "mean_score": {s: spread([r.test_score for r in records if r.slug == s]) for s in slugs},
        "mean_cv": {s: spread([r.best_cv for r in records if r.slug == s]) for s in slugs},
        "mean_percentile": spread([r.percentile for r in records]),
        "kept_rate": spread([r.kept_rate for r in records]),
        "skills_loaded": spread([float(r.skills_loaded) for r in records]),
        "tokens": {
            "prompt": sum(r.prompt_tokens for r in records),
            "completion": sum(r.completion_tokens for r in records),
            "completion_per_attempt": spread([float(r.completion_tokens) for r in records]),
        },
        "cpu_seconds": spread([r.usage.cpu_seconds for r in records]),
    }


def kept_rate_bins(points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for low, high in INVENTORY_BINS:
        inside = [
            p["kept_rate"]
            for p in points
            if p["inventory_size"] >= low
            and (high is None or p["inventory_size"] <= high)
            and p["scored_iterations"] > 0
        ]
        label = f"{low}+" if high is None else (str(low) if low == high else f"{low}-{high}")
        out.append({"inventory": label, "low": low, "high": high, **spread(inside)})
    return out


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------


@dataclass
class PeerRecord:
    peer: str
    slug: str
    seed: int
    budget_cpu_seconds: float
    time_budget: float
    usage: Usage
    test_score: float | None
    medal: str | None
    percentile: float | None
    best_estimator: str | None
    error: str | None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["usage"] = self.usage.as_json()
        data["overshoot"] = (
            self.usage.cpu_seconds / self.budget_cpu_seconds
            if self.budget_cpu_seconds > 0
            else None
        )
        return data


@dataclass
class TransferReport:
    options: TransferOptions
    plan: Plan
    databases: dict[str, str]
    started_at: str
    finished_at: str = ""
    usage: Usage = field(default_factory=Usage)
    campaign: list[AttemptRecord] = field(default_factory=list)
    evaluation: list[AttemptRecord] = field(default_factory=list)
    peers: list[PeerRecord] = field(default_factory=list)
    peers_unavailable: dict[str, str] = field(default_factory=dict)
    inventory_before: dict[str, Any] = field(default_factory=dict)
    inventory_after: dict[str, Any] = field(default_factory=dict)
    inventory_skills: list[dict[str, Any]] = field(default_factory=list)
    inventory_domains: dict[str, Any] = field(default_factory=dict)  # by tier, domain × kind
    failures: list[dict[str, Any]] = field(default_factory=list)

    # ---- selections ----------------------------------------------------------------------
    def arm(self, arm: Arm, slug: str | None = None) -> list[AttemptRecord]:
        return [r for r in self.evaluation if r.arm == arm and (slug is None or r.slug == slug)]

    def pairs(self) -> list[tuple[AttemptRecord, AttemptRecord]]:
        warm = {(r.slug, r.seed): r for r in self.arm("warm")}
        return [(c, warm[(c.slug, c.seed)]) for c in self.arm("cold") if (c.slug, c.seed) in warm]

    def ratios(self) -> list[PairRatio]:
        return [pair_ratio(c, w) for c, w in self.pairs() if c.best_cv is not None]

    def warm_cold_iteration_ratio(self) -> float | None:
        ratios = self.ratios()
        if not ratios:
            return None
        return sum(r.warm_evaluations for r in ratios) / sum(r.cold_evaluations for r in ratios)

    def kept_rate_curve(self) -> list[dict[str, Any]]:
        """One point per attempt that loads what its store holds (``none`` is left out)."""
        return [
            {
                "phase": r.phase,
                "arm": r.arm,
                "slug": r.slug,
                "seed": r.seed,
                "attempt_id": r.attempt_id,
                "order": i,
                "inventory_size": r.inventory_size,
                "skills_loaded": r.skills_loaded,
                "kept_rate": r.kept_rate,
                "scored_iterations": r.scored_iterations,
            }
            for i, r in enumerate([*self.campaign, *self.evaluation])
            if r.loading != "none"
        ]

    def warm_test_vs_cold(self) -> dict[str, Any]:
        """Pairs whose warm hidden-test score is at least the cold one's (same seed)."""
        compared = [
            (c, w) for c, w in self.pairs() if c.test_score is not None and w.test_score is not None
        ]
        wins = sum(1 for c, w in compared if _at_least(w.test_score, c.test_score,  # type: ignore[arg-type]
                                                       c.higher_is_better))
        return {"pairs": len(compared), "warm_at_least_cold": wins,
                "share": wins / len(compared) if compared else None}

    def kept_rates(self) -> dict[str, Any]:
        """Mean kept rate of the warm and the cold evaluation attempts, and their ratio."""
        warm = [r.kept_rate for r in self.arm("warm") if r.scored_iterations]
        cold = [r.kept_rate for r in self.arm("cold") if r.scored_iterations]
        w = float(np.mean(warm)) if warm else None
        c = float(np.mean(cold)) if cold else None
        return {"warm": w, "cold": c,
                "ratio": (w / c) if w is not None and c else None,
                "warm_attempts": len(warm), "cold_attempts": len(cold)}

    def rerun_phase(self) -> dict[str, Any]:
        """The campaign's re-run of competitions that did not medal: warm vs the retry
        without skills (same new seed), medal counts."""
        def count(arm: str) -> dict[str, Any]:
            runs = [r for r in self.campaign if r.arm == arm]
            medals = sum(1 for r in runs if r.medal not in (None, "none"))
            return {"attempts": len(runs), "medals": medals,
                    "slugs": [r.slug for r in runs],
                    "test_score": {r.slug: r.test_score for r in runs}}

        first = [r for r in self.campaign if r.arm == "campaign"]
        return {
            "first_pass": {"attempts": len(first),
                           "medals": sum(1 for r in first if r.medal not in (None, "none"))},
            "warm": count("rerun_warm"),
            "control": count("rerun_control"),
        }

    # ---- summaries -----------------------------------------------------------------------
    def warm_vs_cold(self) -> dict[str, Any]:
        ratios = self.ratios()
        per: dict[str, Any] = {}
        for slug in self.plan.evaluation:
            cold, warm = self.arm("cold", slug), self.arm("warm", slug)
            mine = [r for r in ratios if r.slug == slug]
            per[slug] = {
                "pairs": [r.as_json() for r in mine],
                "ratio": (
                    sum(r.warm_evaluations for r in mine) / sum(r.cold_evaluations for r in mine)
                    if mine
                    else None
                ),
                "never_reached": sum(1 for r in mine if not r.reached),
                "cold": _arm_summary(cold),
                "warm": _arm_summary(warm),
            }
        return {
            "definition": (
                "evaluations (iteration idx + 1, baseline included) until the first kept score "
                "at least as good as the cold attempt's final CV score; cold counts its own final "
                "score; warm runs that never reach it count budget + 1 (censored, flagged); "
                "ratio = sum(warm) / sum(cold) over (competition, seed) pairs"
            ),
            "pairs": len(ratios),
            "reached": sum(1 for r in ratios if r.reached),
            "never_reached": sum(1 for r in ratios if not r.reached),
            "ratio": self.warm_cold_iteration_ratio(),
            "ratio_per_pair": spread([r.ratio for r in ratios]),
            "ratio_reached_only": (
                sum(r.warm_evaluations for r in ratios if r.reached)
                / sum(r.cold_evaluations for r in ratios if r.reached)
                if any(r.reached for r in ratios)
                else None
            ),
            "per_competition": per,
        }

    def ablation(self) -> dict[str, Any]:
        """Per loading mode on the frozen inventory; ``same_as_cold`` is the share of
        (competition, seed) pairs whose CV curve equals the cold attempt's (expected 1.0 for
        ``none``: with no skill loaded, the inventory cannot matter)."""
        arm_of: dict[str, Arm] = {"tiered": "warm", "flat": "flat", "none": "none"}
        cold = {(r.slug, r.seed): r.curve for r in self.arm("cold")}
        out: dict[str, Any] = {}
        for mode in self.options.modes:
            records = self.arm(arm_of[mode])
            paired = [r for r in records if (r.slug, r.seed) in cold]
            same = sum(1 for r in paired if r.curve == cold[(r.slug, r.seed)])
            out[mode] = {
                "arm": arm_of[mode],
                **ablation_summary(records, self.plan.evaluation),
                "same_as_cold": same / len(paired) if paired else None,
            }
        return out

    def peer_summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.options.peers:
            if name in self.peers_unavailable:
                out[name] = {"available": False, "reason": self.peers_unavailable[name]}
                continue
            per: dict[str, Any] = {}
            wins = 0
            compared = 0
            for slug in self.plan.evaluation:
                runs = [p for p in self.peers if p.peer == name and p.slug == slug]
                warm = self.arm("warm", slug)
                peer_score = spread([p.test_score for p in runs])
                warm_score = spread([r.test_score for r in warm])
                higher = warm[0].higher_is_better if warm else True
                at_least: bool | None = None
                if peer_score["mean"] is not None and warm_score["mean"] is not None:
                    at_least = _at_least(warm_score["mean"], peer_score["mean"], higher)  # type: ignore[arg-type]
                    compared += 1
                    wins += int(at_least)
                peer_medals = [p.medal for p in runs if p.medal is not None]
                per[slug] = {
                    "runs": [p.as_json() for p in runs],
                    "score": peer_score,
                    "medals": {
                        m: peer_medals.count(m) for m in ("gold", "silver", "bronze", "none")
                    },
                    "medal_rate": (
                        sum(1 for m in peer_medals if m != "none") / len(peer_medals)
                        if peer_medals
                        else None
                    ),
                    "budget_cpu_seconds": spread([p.budget_cpu_seconds for p in runs]),
                    "cpu_seconds": spread([p.usage.cpu_seconds for p in runs]),
                    "wall_seconds": spread([p.usage.wall_seconds for p in runs]),
                    "errors": [p.error for p in runs if p.error],
                    "warm_score": warm_score,
                    "warm_medal_rate": _medal_rate(warm)[0],
                    "higher_is_better": higher,
                    "warm_at_least_as_good": at_least,
                }
            per["_summary"] = {
                "compared": compared,
                "warm_at_least_as_good": wins,
                "share": wins / compared if compared else None,
            }
            out[name] = per
        return out

    def targets(self) -> dict[str, Any]:
        ratio = self.warm_cold_iteration_ratio()
        big = [
            p["kept_rate"]
            for p in self.kept_rate_curve()
            if p["inventory_size"] >= 50 and p["scored_iterations"]
        ]
        ablation = self.ablation()
        tiered = ablation.get("tiered", {}).get("medal_rate")
        flat = ablation.get("flat", {}).get("medal_rate")
        share = self.peer_summary().get("flaml", {}).get("_summary", {}).get("share")

        def verdict(
            measured: float | None, ok: Callable[[float], bool], why: str
        ) -> dict[str, Any]:
            return {
                "measured": measured,
                "met": None if measured is None else bool(ok(measured)),
                **({"note": why} if measured is None else {}),
            }

        kept = float(np.mean(big)) if big else None
        diff = tiered - flat if tiered is not None and flat is not None else None
        per_domain = self.inventory_domains.get("domain_by_kind", {})
        domains = sorted(set(self.plan.domains[s] for s in self.plan.development))
        counts = {d: sum(per_domain.get(d, {}).values()) for d in domains}
        fewest = min(counts.values()) if counts else None
        globals_ = self.inventory_domains.get("by_tier", {}).get("global", 0)
        share_vs_cold = self.warm_test_vs_cold()["share"]
        kept_ratio = self.kept_rates()["ratio"]
        return {
            "domain_skills_per_domain": {
                "target": f">= {TARGETS['domain_skills_per_domain']} active domain skills in "
                "every campaign domain",
                "per_domain": counts,
                **verdict(fewest, lambda v: v >= TARGETS["domain_skills_per_domain"],
                          "no inventory"),
            },
            "global_skills": {
                "target": f">= {TARGETS['global_skills']}",
                **verdict(float(globals_), lambda v: v >= TARGETS["global_skills"], ""),
            },
            "warm_test_at_least_cold_share": {
                "target": f">= {TARGETS['warm_test_at_least_cold_share']} of (competition, seed)"
                " pairs",
                **verdict(share_vs_cold,
                          lambda v: v >= TARGETS["warm_test_at_least_cold_share"],
                          "no graded warm/cold pairs"),
            },
            "warm_cold_kept_rate_ratio": {
                "target": f">= {TARGETS['warm_cold_kept_rate_ratio']}",
                **verdict(kept_ratio, lambda v: v >= TARGETS["warm_cold_kept_rate_ratio"],
                          "cold kept rate is 0 or no attempts"),
            },
            "warm_cold_iteration_ratio": {
                "target": f"<= {TARGETS['warm_cold_iteration_ratio']}",
                **verdict(
                    ratio, lambda v: v <= TARGETS["warm_cold_iteration_ratio"], "no warm/cold pairs"
                ),
            },
            "kept_rate_at_50_skills": {
                "target": f">= {TARGETS['kept_rate_at_50_skills']}"
                " (mean over attempts starting with >= 50 active skills)",
                "attempts": len(big),
                **verdict(
                    kept,
                    lambda v: v >= TARGETS["kept_rate_at_50_skills"],
                    "no attempt started with 50 or more active skills",
                ),
            },
            "tiered_minus_flat_medal_rate": {
                "target": f">= {TARGETS['tiered_minus_flat_medal_rate']}",
                **verdict(
                    diff,
                    lambda v: v >= TARGETS["tiered_minus_flat_medal_rate"] - 1e-12,
                    "medal rates need graded tiered and flat attempts",
                ),
            },
            "warm_at_least_flaml_share": {
                "target": f">= {TARGETS['warm_at_least_flaml_share']} of evaluation competitions",
                **verdict(
                    share, lambda v: v >= TARGETS["warm_at_least_flaml_share"], "FLAML did not run"
                ),
            },
        }

    def llm_summary(self) -> dict[str, Any]:
        from haste_dagster.bench.llm_usage import llm_summary

        return llm_summary([*self.campaign, *self.evaluation])

    def as_json(self) -> dict[str, Any]:
        curve = self.kept_rate_curve()
        return {
            "schema": SCHEMA,
            "options": self.options.as_json(),
            "development": self.plan.development,
            "evaluation": self.plan.evaluation,
            "domains": self.plan.domains,
            "graded": self.plan.graded,
            "seeds": self.plan.seeds,
            "databases": self.databases,
            "environment": {
                "python": platform.python_version(),
                "machine": platform.machine(),
                "cpus": _cpu_count(),
                "started_at": self.started_at,
                "finished_at": self.finished_at,
                **self.usage.as_json(),
            },
            "warm_cold_iteration_ratio": self.warm_cold_iteration_ratio(),
            "warm_vs_cold": self.warm_vs_cold(),
            "warm_test_vs_cold": self.warm_test_vs_cold(),
            "kept_rates": self.kept_rates(),
            "rerun_phase": self.rerun_phase(),
            "kept_rate_curve": curve,
            "kept_rate_by_inventory": kept_rate_bins(curve),
            "ablation": self.ablation(),
            "peers": self.peer_summary(),
            "inventory": {
                "before_evaluation": self.inventory_before,
                "after_evaluation": self.inventory_after,
                "frozen": self.inventory_before.get("fingerprint")
                == self.inventory_after.get("fingerprint"),
                "skills": self.inventory_skills,
                "by_tier_and_domain": self.inventory_domains,
            },
            "targets": self.targets(),
            **({"llm": self.llm_summary()} if self.options.policy == "llm" else {}),
            "failures": self.failures,
            "campaign": [r.as_json() for r in self.campaign],
            "attempts": [r.as_json() for r in self.evaluation],
        }


def _arm_summary(records: Sequence[AttemptRecord]) -> dict[str, Any]:
    rate, medals, graded = _medal_rate(records)
    return {
        "attempt_ids": [r.attempt_id for r in records],
        "final_cv": spread([r.best_cv for r in records]),
        "test_score": spread([r.test_score for r in records]),
        "medals": [r.medal for r in records],
        "medal_rate": rate,
        "wall_seconds": spread([r.usage.wall_seconds for r in records]),
        "cpu_seconds": spread([r.usage.cpu_seconds for r in records]),
        "scored_iterations": spread([float(r.scored_iterations) for r in records]),
        "kept_rate": spread([r.kept_rate for r in records]),
        "skills_loaded": spread([float(r.skills_loaded) for r in records]),
    }


def _cpu_count() -> int | None:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count()


# ---------------------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------------------


def _say(options: TransferOptions, message: str) -> None:
    log.info(message)
    if options.log is not None:
        options.log(message)


def _describe(r: AttemptRecord) -> str:
    score = "—" if r.test_score is None else f"{r.test_score:.5g}"
    cv = "—" if r.best_cv is None else f"{r.best_cv:.5g}"
    return (
        f"{r.arm:<8} {r.slug} seed {r.seed}: cv {cv} test {score} medal {r.medal or 'n/a'} "
        f"kept {r.kept_rate:.0%} skills {r.skills_loaded}/{r.inventory_size} "
        f"cpu {r.usage.cpu_seconds:.1f}s"
    )


def run_transfer_benchmark(
    conn_or_url: psycopg.Connection | str, options: TransferOptions | None = None
) -> TransferReport:
    """Run the whole benchmark on the server behind ``conn_or_url`` (see the module doc).

    Nothing is written to the database ``conn_or_url`` names: the campaign and the cold
    attempts run in two databases created for the purpose and dropped at the end (kept
    with ``options.keep_databases``; their names are in ``report.databases``).
    """
    from haste_dagster.agents.factory import open_skill_store
    from haste_dagster.agents.orchestrator import (
        RERUN_SEED_OFFSET,
        inventory_by_tier,
        promote,
        protocol_rounds,
    )
    from haste_dagster.skills import consolidate

    options = options or TransferOptions()
    plan = plan_benchmark(options)
    base = db.server_conninfo(conn_or_url)
    tag = f"haste_bench_{datetime.now(UTC):%Y%m%d%H%M%S}_{uuid.uuid4().hex[:6]}"
    names = {"inventory": f"{tag}_inv", "cold": f"{tag}_cold"}
    report = TransferReport(
        options=options,
        plan=plan,
        databases={**names, "kept": str(options.keep_databases).lower()},
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    competitions = {s: load_competition(s, plan.folders[s]) for s in plan.folders}
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    _say(options, f"development: {', '.join(plan.development)}")
    _say(options, f"evaluation: {', '.join(plan.evaluation)}; seeds {plan.seeds}")

    def attempt(
        conn: psycopg.Connection,
        database: str,
        store: Any,
        slug: str,
        arm: Arm,
        loading: Loading,
        seed: int,
    ) -> AttemptRecord | None:
        """One attempt; a failing one is reported (as `haste campaign` does) and skipped."""
        phase: Literal["campaign", "evaluation"] = (
            "campaign" if arm in ("campaign", "rerun_warm", "rerun_control") else "evaluation"
        )
        try:
            record = _run_one(
                conn,
                database,
                store,
                competitions[slug],
                phase=phase,
                arm=arm,
                loading=loading,
                seed=seed,
                options=options,
                plan=plan,
                extract=arm != "rerun_control",
            )
        except (HasteError, ValueError, KeyError) as exc:
            conn.rollback()
            error = f"{type(exc).__name__}: {exc}"
            report.failures.append({"arm": arm, "slug": slug, "seed": seed, "error": error})
            _say(options, f"{arm:<8} {slug} seed {seed}: FAILED {error}")
            return None
        (report.campaign if phase == "campaign" else report.evaluation).append(record)
        extra = f" (+{len(record.new_skills)} skills)" if phase == "campaign" else ""
        _say(options, _describe(record) + extra)
        return record

    keep = options.keep_databases
    arms: list[tuple[Arm, Loading]] = [("warm", "tiered")]
    arms += [(m, m) for m in options.modes if m != "tiered"]  # type: ignore[misc]
    with (
        db.scratch_database(base, names["inventory"], keep=keep) as inv_url,
        db.scratch_database(base, names["cold"], keep=keep) as cold_url,
    ):
        with db.connect(inv_url) as conn:
            store = open_skill_store(conn)
            # The campaign protocol (orchestrator.campaign_protocol): round 1 one competition
            # per domain cold, round 2 the rest warm, consolidation between rounds, then the
            # re-run phase (warm, and without skills as the control, with a new seed).
            round1, round2 = protocol_rounds(plan.development, plan.domains)
            for loading, slugs in (("none", round1), ("tiered", round2)):
                for slug in slugs:
                    attempt(conn, names["inventory"], store, slug, "campaign", loading,
                            options.campaign_seed)
                    promote(conn, [plan.domains[slug]], store)
                consolidate(store)
            missed = [r.slug for r in report.campaign if r.medal == "none"]
            rerun_seed = options.campaign_seed + RERUN_SEED_OFFSET
            for slug in missed:
                attempt(conn, names["inventory"], store, slug, "rerun_warm", "tiered", rerun_seed)
                promote(conn, [plan.domains[slug]], store)
                attempt(conn, names["inventory"], store, slug, "rerun_control", "none",
                        rerun_seed)
            if missed:
                consolidate(store)
            report.inventory_before = inventory(conn)
            report.inventory_domains = inventory_by_tier(conn)
            report.inventory_skills = inventory_listing(conn)
            _say(
                options,
                f"inventory: {report.inventory_before['active']} active skills "
                f"{report.inventory_before['by_tier']}",
            )
            frozen = FrozenStore(store)
            for slug in plan.evaluation:
                for seed in plan.seeds:
                    for arm, loading in arms:
                        attempt(conn, names["inventory"], frozen, slug, arm, loading, seed)
            report.inventory_after = inventory(conn)
        with db.connect(cold_url) as conn:
            store = open_skill_store(conn)
            for slug in plan.evaluation:
                for seed in plan.seeds:
                    attempt(conn, names["cold"], store, slug, "cold", "tiered", seed)
    _run_peers(report, competitions)
    report.usage = Usage(time.perf_counter() - wall0, cpu_seconds() - cpu0)
    report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    return report


def _run_peers(report: TransferReport, competitions: dict[str, Competition]) -> None:
    from haste_dagster.bench.peers import PeerUnavailable, flaml_status, run_flaml

    options = report.options
    for name in options.peers:
        if name != "flaml":
            report.peers_unavailable[name] = f"unknown peer {name!r} (known: flaml)"
            continue
        available, why = flaml_status()
        if not available:
            report.peers_unavailable[name] = why or "not installed"
            _say(options, f"peer {name} skipped: {why}")
            continue
        for warm in report.arm("warm"):
            competition = competitions[warm.slug]
            budget = warm.usage.cpu_seconds
            try:
                run = run_flaml(competition, budget, seed=warm.seed)
            except PeerUnavailable as exc:  # pragma: no cover - checked above
                report.peers_unavailable[name] = str(exc)
                break
            graded = Graded(float("nan"), None)
            if run.error is None:
                try:
                    graded = _grade_predictions(
                        competition, run.predictions, report.plan.graded[warm.slug]
                    )
                except HasteError as exc:
                    run.error = f"grading failed: {exc}"
            record = PeerRecord(
                peer=name,
                slug=warm.slug,
                seed=warm.seed,
                budget_cpu_seconds=budget,
                time_budget=run.time_budget,
                usage=run.usage,
                test_score=None if run.error else graded.score,
                medal=None if run.error else graded.medal,
                percentile=None if run.error else graded.percentile,
                best_estimator=run.best_estimator,
                error=run.error,
            )
            report.peers.append(record)
            score = (
                "failed: " + run.error
                if run.error
                else f"test {graded.score:.5g} medal {graded.medal or 'n/a'}"
            )
            _say(
                options,
                f"{name:<8} {warm.slug} seed {warm.seed}: {score} cpu "
                f"{run.usage.cpu_seconds:.1f}s (budget {budget:.1f}s)",
            )


def write_json(report: TransferReport, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.as_json(), indent=2, default=str))
    return path
