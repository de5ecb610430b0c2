"""The domain specialist's staged pipeline: screen → two refinement branches → ensemble.

    task profile → prototype screen (three fundamentally different prototypes, one fold each)
    → winner branch (≈ 3/4 of the refinement budget) → runner-up branch (≈ 1/4, the paper's
    20 and 6) → rank-average ensemble of the top three distinct kept specs, kept only if the
    keep rule says it beats the best single spec

**Equal budgets.** An attempt of budget N records at most N + 1 evaluated rows, exactly as
the straight line (its baseline + N iterations): 3 screen rows, the two branches (each
starting with a full cross-validation of its prototype), and one ensemble row
(`split_budget`). The attempt's seconds bound all stages together.

**Branches.** Each branch is the competition agent's refinement loop started from its
prototype: candidates are scored on the attempt's folds and kept by the paired rule
(`attempts.should_keep`), the stagnation exit applies per branch, and after
`ESCALATE_AFTER` consecutive iterations without a kept change (none of them structural) the
policy is asked for a structural change (``PolicyContext.escalate``). The better branch's
incumbent goes on.

**Recording and resume.** The plan (prototypes, budget split) is stored on the attempt
before anything is scored, and every row records its ``branch``. Resuming replays the rows:
a stage with rows of a later stage is complete; otherwise it continues after its last row,
and since policies are pure functions of their context the next rows are those an
uninterrupted run would have written.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from haste_dagster.agents import records
from haste_dagster.agents.attempts import (
    AttemptConfig,
    AttemptResult,
    advance_incumbent,
    iterations_since_kept,
    record_finished_attempt,
    should_keep,
)
from haste_dagster.agents.competition_agent import RefinementLoop
from haste_dagster.agents.policy import is_structural, resolve_skill_views
from haste_dagster.agents.prototypes import N_PROTOTYPES, Prototype, choose_prototypes, signature
from haste_dagster.errors import HasteError
from haste_dagster.solution.ensemble import combination, cross_validate_ensemble
from haste_dagster.solution.evaluate import cross_validate
from haste_dagster.solution.spec import Patch, SolutionSpec, apply_patch, parse_patch

log = logging.getLogger(__name__)

ESCALATE_AFTER = 2  # consecutive iterations without a kept change before a structural one
ENSEMBLE_SIZE = 3
SCREEN_FOLD = -1  # the last fold: the most recent block for forecasts
BRANCHES = ("winner", "runner_up")
STAGE_ORDER = ("screen", "winner", "runner_up", "ensemble")


@dataclass(frozen=True)
class BudgetSplit:
    """Rows per stage; their sum is at most the straight line's budget + 1."""

    screen: int
    winner: int  # rows of the winner branch, its baseline included
    runner_up: int
    ensemble: int

    def as_json(self) -> dict[str, int]:
        return {
            "screen": self.screen,
            "winner": self.winner,
            "runner_up": self.runner_up,
            "ensemble": self.ensemble,
        }


def split_budget(budget: int, n_prototypes: int = N_PROTOTYPES) -> BudgetSplit:
    """Split N iterations (N + 1 rows, as the straight line) over the stages."""
    total = budget + 1
    screen = min(n_prototypes, max(total - 1, 0))
    rest = total - screen
    if n_prototypes < 2 or rest < 2:
        return BudgetSplit(screen, max(rest, 1), 0, 0)
    ensemble = 1 if rest >= 4 else 0
    rest -= ensemble
    runner_up = max(1, round(rest / 4))  # winner : runner-up ≈ 3 : 1 (the paper: 20 and 6)
    return BudgetSplit(screen, rest - runner_up, runner_up, ensemble)


def needs_escalation(branch_rows: list[records.IterationRow]) -> bool:
    """The last ESCALATE_AFTER iterations of the branch kept nothing and none was
    structural: the next proposal must be."""
    recent = branch_rows[1:][-ESCALATE_AFTER:]
    if len(recent) < ESCALATE_AFTER or any(r.kept for r in recent):
        return False
    for r in recent:
        if r.patch is not None:
            try:
                if is_structural(parse_patch(r.patch)):
                    return False
            except HasteError:
                continue
    return True


def branch_incumbent(
    start: SolutionSpec, rows: list[records.IterationRow]
) -> tuple[SolutionSpec, records.IterationRow, list[tuple[SolutionSpec, records.IterationRow]]]:
    """(incumbent, its row, every kept (spec, row) in order) of a branch's rows."""
    spec, best = start, rows[0]
    kept = [(start, rows[0])] if rows[0].cv_mean is not None else []
    for r in rows[1:]:
        if r.kept and r.patch is not None:
            spec = apply_patch(spec, Patch.model_validate(r.patch))
            best = r
            kept.append((spec, r))
    return spec, best, kept


class StagedPipeline(RefinementLoop):
    """Runs (or resumes) one attempt of the staged pipeline (see the module doc)."""

    def _better(self, a: float | None, b: float | None) -> bool:
        if a is None:
            return False
        return b is None or self.metric.better(a, b)

    def _plan(self, attempt: records.AttemptRow, profile: dict) -> dict[str, Any]:
        if attempt.plan is not None:
            return attempt.plan
        problem = self.competition.problem
        make = getattr(self.policy, "prototypes", None)
        if make is not None:
            prototypes = make(problem, profile, self.views)
        else:  # a policy without its own screen gets the shared choice
            prototypes = choose_prototypes(problem, profile, self.views)
        if not prototypes:
            raise HasteError(f"{problem.slug}: no prototype fits this problem")
        split = split_budget(attempt.budget_iterations, len(prototypes))
        plan = {
            "prototypes": [p.as_json() for p in prototypes[: split.screen]],
            "split": split.as_json(),
            "screen_fold": SCREEN_FOLD,
        }
        with self.conn.transaction():
            records.set_attempt_start(
                self.conn, attempt.id, prototypes[0].spec.model_dump(mode="json"),
                self.skills_loaded,
            )
            records.set_attempt_plan(self.conn, attempt.id, plan)
        return plan

    def run(
        self, attempt: records.AttemptRow, config: AttemptConfig, profile: dict
    ) -> AttemptResult:
        seconds = config.seconds or float(self.competition.definition.budget.seconds)
        self.started = time.monotonic()
        self.deadline = self.started + seconds
        self.config = config
        self.profile = profile
        self.attempt = attempt
        # rules restated for this data; recipes that no longer validate skipped, logged
        self.views = resolve_skill_views(self.views, self.competition.problem, profile)
        plan = self._plan(attempt, profile)
        split = BudgetSplit(**plan["split"])
        prototypes = [Prototype.from_json(p) for p in plan["prototypes"]]
        rows = records.load_iterations(self.conn, attempt.id)
        stopped = "budget"

        rows = self._screen(prototypes, rows, plan.get("screen_fold", SCREEN_FOLD))
        ranked = self._rank_screen(prototypes, rows)
        starts = {"winner": ranked[0]} if ranked else {"winner": prototypes[0]}
        if len(ranked) > 1 and split.runner_up > 0:
            starts["runner_up"] = ranked[1]

        outcomes: dict[str, tuple[SolutionSpec, records.IterationRow, list[Any]]] = {}
        for name in BRANCHES:
            if name not in starts:
                continue
            n_rows = split.winner if name == "winner" else split.runner_up
            if name == "winner" and "runner_up" not in starts:
                n_rows += split.runner_up
            rows, why = self._branch(name, starts[name], n_rows, rows)
            if why != "budget":
                stopped = why
            branch_rows = [r for r in rows if r.branch == name]
            if branch_rows:
                outcomes[name] = branch_incumbent(starts[name].spec, branch_rows)

        # the better branch's incumbent goes on (a tie stays with the winner)
        best_name = "winner"
        if "runner_up" in outcomes and self._better(
            outcomes["runner_up"][1].cv_mean, outcomes["winner"][1].cv_mean
        ):
            best_name = "runner_up"
        incumbent, best_row, _ = outcomes[best_name]
        ensemble = None
        if split.ensemble:
            rows, ensemble, why = self._ensemble(outcomes, best_row, rows)
            if why is not None:
                stopped = why
        best_cv = best_row.cv_mean
        if ensemble is not None and ensemble["kept"]:
            best_cv = ensemble["cv_mean"]
        extra = {
            "pipeline": "staged",
            "split": split.as_json(),
            "prototypes": self._prototype_json(prototypes, rows),
            "branches": {
                name: {
                    "start": starts[name].name,
                    "family": starts[name].family,
                    "rows": sum(1 for r in rows if r.branch == name),
                    "best_cv": outcomes[name][1].cv_mean if name in outcomes else None,
                    "kept": sum(1 for r in rows if r.branch == name and r.kept and r.patch),
                }
                for name in starts
            },
            "best_branch": best_name,
            "runner_up_won": best_name == "runner_up",
            "ensemble": ensemble,
            # what the submission fits: the kept ensemble's members, or the best single spec
            "submission": "ensemble" if ensemble is not None and ensemble["kept"] else "single",
        }
        if self.fold_cache is not None:
            extra["fold_cache"] = self.fold_cache.stats()
        refinement = [r for r in rows if r.branch in BRANCHES and r.patch is not None]
        return record_finished_attempt(
            self.conn,
            attempt,
            rows,
            incumbent,
            best_row,
            self.skills_loaded,
            stopped,
            extra=extra,
            scored=refinement,
            best_cv=best_cv,
        )

    # ---- stage 2: the screen -----------------------------------------------------------
    def _screen(
        self, prototypes: list[Prototype], rows: list[records.IterationRow], fold: int
    ) -> list[records.IterationRow]:
        done = [r for r in rows if r.branch == "screen"]
        if any(r.branch != "screen" for r in rows):
            return rows  # a later stage has started: the screen is complete
        for j in range(len(done), len(prototypes)):
            proto = prototypes[j]
            t0 = time.monotonic()
            row = records.IterationRow(
                attempt_id=self.attempt.id,
                idx=len(rows),
                patch=None,
                rationale=f"prototype {proto.name} ({proto.source}): {proto.rationale}",
                skill_ids=list(proto.skill_ids),
                cv_mean=None,
                cv_std=None,
                fold_scores=None,
                kept=False,
                incumbent_before=None,
                seconds=0.0,
                branch="screen",
                spec=proto.spec.model_dump(mode="json"),
                detail={"prototype": proto.name, "family": proto.family, "source": proto.source,
                        "fold": fold},
            )
            try:
                # the screen always completes (like the straight line's baseline): some
                # spec must be scored before refinement can start
                cv = cross_validate(
                    proto.spec, self.competition.problem, self.competition.train,
                    self.attempt.seed, only_fold=fold, fold_cache=self.fold_cache,
                )
            except HasteError as exc:
                row.error = f"{type(exc).__name__}: {exc}"
            else:
                row.cv_mean, row.cv_std, row.fold_scores = cv.mean, cv.std, list(cv.fold_scores)
            row.seconds = time.monotonic() - t0
            last = j == len(prototypes) - 1
            with self.conn.transaction():
                records.record_iteration(self.conn, row)
                if last:  # every score is known: the usage of recipe skills that made one
                    self._screen_usage(prototypes, [*done, row])
            self._report(row, self.attempt.budget_iterations)
            rows.append(row)
            done.append(row)
        return rows

    def _screen_usage(
        self, prototypes: list[Prototype], screen: list[records.IterationRow]
    ) -> None:
        """Record each skill prototype's screen outcome: kept = it won the screen, delta =
        its fold score against the best default prototype's (positive = better)."""
        if not self.record_usage:
            return
        ranked = self._rank_screen(prototypes, screen)
        winner = ranked[0].name if ranked else None
        sign = 1.0 if self.metric.higher_is_better else -1.0
        defaults = [
            r.cv_mean for p, r in zip(prototypes, screen, strict=False)
            if p.source == "default" and r.cv_mean is not None
        ]
        pick = max if self.metric.higher_is_better else min
        best_default = pick(defaults) if defaults else None
        for proto, row in zip(prototypes, screen, strict=False):
            if not proto.skill_ids or proto.source == "default":
                continue
            delta = (
                0.0 if row.cv_mean is None or best_default is None
                else sign * (row.cv_mean - best_default)
            )
            # 'screened': tried against the defaults outside the refinement iterations
            self.record_usage(self.attempt.id, row.idx, row.skill_ids, proto.name == winner,
                              delta, event="screened")

    def _rank_screen(
        self, prototypes: list[Prototype], rows: list[records.IterationRow]
    ) -> list[Prototype]:
        """Scored prototypes, best fold score first (ties: screen order)."""
        screen = [r for r in rows if r.branch == "screen"]
        scored = [(p, r) for p, r in zip(prototypes, screen, strict=False) if r.cv_mean is not None]
        sign = -1.0 if self.metric.higher_is_better else 1.0
        scored.sort(key=lambda pr: (sign * pr[1].cv_mean, pr[1].idx))  # type: ignore[operator]
        return [p for p, _ in scored]

    def _prototype_json(
        self, prototypes: list[Prototype], rows: list[records.IterationRow]
    ) -> dict[str, Any]:
        screen = [r for r in rows if r.branch == "screen"]
        entries = []
        for p, r in zip(prototypes, screen, strict=False):
            entries.append({
                "name": p.name, "family": p.family, "source": p.source, "skill_ids": p.skill_ids,
                "fold_score": r.cv_mean, "idx": r.idx, "error": r.error,
            })
        scores = [abs(e["fold_score"]) for e in entries if e["fold_score"] is not None]
        spread = max(scores) / min(scores) if scores and min(scores) > 0 else None
        ranked = self._rank_screen(prototypes, rows)
        return {
            "screened": entries,
            "winner": ranked[0].name if ranked else None,
            "runner_up": ranked[1].name if len(ranked) > 1 else None,
            "spread": spread,  # best/worst ratio of |fold score| (the paper saw up to 2.7)
        }

    # ---- stage 3: the branches ---------------------------------------------------------
    def _branch(
        self, name: str, start: Prototype, n_rows: int, rows: list[records.IterationRow]
    ) -> tuple[list[records.IterationRow], str]:
        later = STAGE_ORDER[STAGE_ORDER.index(name) + 1:]
        if any(r.branch in later for r in rows):
            return rows, "budget"  # a later stage has started: this branch is complete
        budget = self.attempt.budget_iterations
        branch_rows = [r for r in rows if r.branch == name]
        if not branch_rows:
            if name != "winner" and time.monotonic() > self.deadline:
                return rows, "time"
            row = self._branch_baseline(name, start, len(rows))
            rows.append(row)
            branch_rows.append(row)
        if branch_rows[0].cv_mean is None:
            return rows, "budget"  # the prototype failed its full cross-validation
        patience = self.config.patience or max(5, (n_rows - 1) // 2)
        incumbent, best_row, _ = branch_incumbent(start.spec, branch_rows)
        since_kept = iterations_since_kept(branch_rows)
        while len(branch_rows) < n_rows:
            if since_kept >= patience:
                return rows, "stagnation"
            if time.monotonic() > self.deadline:
                return rows, "time"
            idx = len(rows)
            escalate = needs_escalation(branch_rows)
            ctx = self._context(
                self.attempt, self.profile, incumbent, best_row, branch_rows, idx, budget,
                initial=start.spec, escalate=escalate,
            )
            row = self._iterate(self.attempt, idx, ctx, incumbent, best_row, self.deadline)
            if row is None:
                return rows, "exhausted"
            row.branch = name
            if escalate:
                row.detail = {**(row.detail or {}), "escalated": True}
            self._record(self.attempt, row, best_row)
            rows.append(row)
            branch_rows.append(row)
            incumbent, best_row, since_kept = advance_incumbent(
                incumbent, best_row, since_kept, row
            )
        return rows, "budget"

    def _branch_baseline(self, name: str, start: Prototype, idx: int) -> records.IterationRow:
        t0 = time.monotonic()
        row = records.IterationRow(
            attempt_id=self.attempt.id, idx=idx, patch=None,
            rationale=f"{name} branch starts from prototype {start.name}",
            skill_ids=list(start.skill_ids), cv_mean=None, cv_std=None, fold_scores=None,
            kept=False, incumbent_before=None, seconds=0.0, branch=name,
            spec=start.spec.model_dump(mode="json"),
            detail={"prototype": start.name, "family": start.family},
        )
        try:
            # the winner's baseline always completes; the runner-up's respects the clock
            cv = self._evaluate(
                start.spec, self.attempt.seed, None if name == "winner" else self.deadline
            )
        except HasteError as exc:
            if name == "winner":
                raise
            row.error = f"{type(exc).__name__}: {exc}"
        else:
            row.cv_mean, row.cv_std, row.fold_scores = cv.mean, cv.std, list(cv.fold_scores)
            row.kept = True
        row.seconds = time.monotonic() - t0
        records.record_iteration(self.conn, row)
        self._report(row, self.attempt.budget_iterations)
        return row

    # ---- stage 4: the ensemble ---------------------------------------------------------
    def ensemble_members(
        self, outcomes: dict[str, tuple[SolutionSpec, records.IterationRow, list[Any]]]
    ) -> list[tuple[str, SolutionSpec, records.IterationRow]]:
        """The top ENSEMBLE_SIZE distinct kept specs of both branches, best first; members of
        a different signature (family/pipeline) are preferred over near-copies."""
        kept = [
            (name, spec, row)
            for name, (_s, _b, pairs) in outcomes.items()
            for spec, row in pairs
            if row.fold_scores
        ]
        sign = -1.0 if self.metric.higher_is_better else 1.0
        kept.sort(key=lambda k: (sign * k[2].cv_mean, k[2].idx))  # type: ignore[operator]
        problem = self.competition.problem
        chosen: list[tuple[str, SolutionSpec, records.IterationRow]] = []
        keys: set[str] = set()
        sigs: set[tuple[Any, ...]] = set()
        for prefer_new_signature in (True, False):
            for name, spec, row in kept:
                if len(chosen) == ENSEMBLE_SIZE:
                    break
                if spec.key() in keys:
                    continue
                if prefer_new_signature and signature(spec, problem) in sigs:
                    continue
                chosen.append((name, spec, row))
                keys.add(spec.key())
                sigs.add(signature(spec, problem))
        chosen.sort(key=lambda k: (sign * k[2].cv_mean, k[2].idx))  # type: ignore[operator]
        return chosen

    def _ensemble(
        self,
        outcomes: dict[str, tuple[SolutionSpec, records.IterationRow, list[Any]]],
        best_row: records.IterationRow,
        rows: list[records.IterationRow],
    ) -> tuple[list[records.IterationRow], dict[str, Any] | None, str | None]:
        done = [r for r in rows if r.branch == "ensemble"]
        if done:
            return rows, self._ensemble_json(done[0]), None
        members = self.ensemble_members(outcomes)
        if len(members) < 2:
            return rows, None, None
        if time.monotonic() > self.deadline:
            return rows, None, "time"
        problem = self.competition.problem
        t0 = time.monotonic()
        row = records.IterationRow(
            attempt_id=self.attempt.id, idx=len(rows), patch=None,
            rationale=f"rank-average ensemble of the top {len(members)} distinct kept specs",
            skill_ids=[], cv_mean=None, cv_std=None, fold_scores=None, kept=False,
            incumbent_before=best_row.cv_mean, seconds=0.0, branch="ensemble",
            detail={
                "combine": combination(
                    self.metric, 2 if (self.profile.get("n_classes") or 0) > 2 else 1
                ),
                "members": [
                    {"branch": name, "idx": row.idx, "cv_mean": row.cv_mean,
                     "family": spec.model.family, "spec": spec.model_dump(mode="json")}
                    for name, spec, row in members
                ],
            },
        )
        try:
            cv = cross_validate_ensemble(
                [spec for _, spec, _ in members], problem, self.competition.train,
                self.attempt.seed, deadline=self.deadline,
            )
        except HasteError as exc:
            row.error = f"{type(exc).__name__}: {exc}"
        else:
            row.cv_mean, row.cv_std, row.fold_scores = cv.mean, cv.std, list(cv.fold_scores)
            # the existing keep rule, against the best single spec on the same folds
            row.kept = should_keep(
                row.fold_scores, best_row.fold_scores or [], best_row.cv_mean or 0.0,
                self.metric.higher_is_better,
            )
        row.seconds = time.monotonic() - t0
        records.record_iteration(self.conn, row)
        self._report(row, self.attempt.budget_iterations)
        rows.append(row)
        return rows, self._ensemble_json(row), None

    @staticmethod
    def _ensemble_json(row: records.IterationRow) -> dict[str, Any]:
        detail = row.detail or {}
        return {
            "idx": row.idx,
            "kept": row.kept,
            "cv_mean": row.cv_mean,
            "combine": detail.get("combine"),
            "members": detail.get("members", []),
            "error": row.error,
        }
