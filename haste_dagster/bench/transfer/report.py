"""The benchmark's records and report: attempts, peers, summaries, verdicts, JSON."""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np

from haste_dagster.bench.measure import Usage
from haste_dagster.bench.transfer.measures import (
    PairRatio,
    ablation_summary,
    as_good_as,
    incumbent_curve,
    kept_rate_bins,
    medal_rate,
    pair_ratio,
    proposal_counts,
    spread,
)
from haste_dagster.bench.transfer.plan import Arm, Plan, TransferOptions
from haste_dagster.bench.transfer.uncertainty import (
    PairOutcome,
    figures,
    pair_outcome,
    retry_outcomes,
)

SCHEMA = "haste.bench.transfer/1"

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
    # proposals skipped unevaluated: their fold matrices were the incumbent's (no evaluation)
    inert_skipped: int = 0

    @property
    def usage(self) -> Usage:
        return self.search + self.submission

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AttemptRecord:
        """The record a report's JSON holds (``as_json``; its derived keys are recomputed)."""
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["search"] = Usage(**data["search"])
        values["submission"] = Usage(**data["submission"])
        return cls(**values)

    @property
    def curve(self) -> list[float | None]:
        return incumbent_curve(self.iterations, self.higher_is_better)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["search"] = self.search.as_json()
        data["submission"] = self.submission.as_json()
        data["usage"] = self.usage.as_json()
        data["curve"] = self.curve
        return data



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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PeerRecord:
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["usage"] = Usage(**data["usage"])
        return cls(**values)

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
    # the domains' search priors the evaluation loaded: domain → move → [tried, kept]
    search_priors: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    # set by a replay (run.replay_evaluation): the report it replayed, its copy database
    replay: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any], options: TransferOptions, plan: Plan
                  ) -> TransferReport:
        """The report a ``--json`` file holds, for the options and plan it was run with."""
        environment, stock = data["environment"], data["inventory"]
        peers: list[PeerRecord] = []
        unavailable: dict[str, str] = {}
        for name, per in data["peers"].items():
            if per.get("available") is False:
                unavailable[name] = per["reason"]
                continue
            for slug, entry in per.items():
                if not slug.startswith("_"):
                    peers += [PeerRecord.from_json(run) for run in entry["runs"]]
        return cls(
            options=options,
            plan=plan,
            databases=dict(data["databases"]),
            started_at=environment["started_at"],
            finished_at=environment["finished_at"],
            usage=Usage(environment["wall_seconds"], environment["cpu_seconds"]),
            campaign=[AttemptRecord.from_json(r) for r in data["campaign"]],
            evaluation=[AttemptRecord.from_json(r) for r in data["attempts"]],
            peers=peers,
            peers_unavailable=unavailable,
            inventory_before=stock["before_evaluation"],
            inventory_after=stock["after_evaluation"],
            inventory_skills=stock["skills"],
            inventory_domains=stock["by_tier_and_domain"],
            search_priors=stock.get("search_priors", {}),
            failures=list(data["failures"]),
            replay=data.get("replay"),
        )

    # ---- selections ----------------------------------------------------------------------
    def arm(self, arm: Arm, slug: str | None = None) -> list[AttemptRecord]:
        return [r for r in self.evaluation if r.arm == arm and (slug is None or r.slug == slug)]

    def pairs(self) -> list[tuple[AttemptRecord, AttemptRecord]]:
        warm = {(r.slug, r.seed): r for r in self.arm("warm")}
        return [(c, warm[(c.slug, c.seed)]) for c in self.arm("cold") if (c.slug, c.seed) in warm]

    def ratios(self) -> list[PairRatio]:
        return [pair_ratio(c, w) for c, w in self.pairs() if c.best_cv is not None]

    def outcomes(self) -> list[PairOutcome]:
        """Every pair's figures, for the intervals (``uncertainty``)."""
        out = []
        for cold, warm in self.pairs():
            if cold.best_cv is None:
                continue
            ratio = pair_ratio(cold, warm)
            out.append(pair_outcome(cold.as_json(), warm.as_json(), ratio.cold_evaluations,
                                    ratio.warm_evaluations, ratio.reached))
        return out

    def uncertainty(self) -> dict[str, Any]:
        """The pair-based targets with 95 % intervals, and the no-transfer reference."""
        retry = retry_outcomes([r.as_json() for r in self.arm("cold")])
        return {**figures(self.outcomes()), "retry_reference": figures(retry)}

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
        wins = sum(1 for c, w in compared if as_good_as(w.test_score, c.test_score,  # type: ignore[arg-type]
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

    def proposals(self) -> dict[str, Any]:
        """Per evaluation arm, proposals tried and kept by source, and the search's moves by
        what the domain's search prior said of them (``measures.proposal_counts``)."""
        kinds = {s["id"]: s["kind"] for s in self.inventory_skills if "kind" in s}
        return proposal_counts(self.evaluation, self.search_priors, kinds)

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
                    at_least = as_good_as(warm_score["mean"], peer_score["mean"], higher)  # type: ignore[arg-type]
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
                    "warm_medal_rate": medal_rate(warm)[0],
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
            "proposals": self.proposals(),
            "uncertainty": self.uncertainty(),
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
                "search_priors": self.search_priors,
            },
            "targets": self.targets(),
            **({"llm": self.llm_summary()} if self.options.policy == "llm" else {}),
            **({"replay": self.replay} if self.replay is not None else {}),
            "failures": self.failures,
            "campaign": [r.as_json() for r in self.campaign],
            "attempts": [r.as_json() for r in self.evaluation],
        }


def _arm_summary(records: Sequence[AttemptRecord]) -> dict[str, Any]:
    rate, medals, graded = medal_rate(records)
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


def write_json(report: TransferReport, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.as_json(), indent=2, default=str))
    return path
