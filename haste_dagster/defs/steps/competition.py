"""The per-competition steps: competition data, attempt, submission, competition skills."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    MetadataValue,
)

from haste_dagster.defs import audit
from haste_dagster.defs.config import AttemptRunConfig
from haste_dagster.defs.plots import learning_curve_inline, learning_curve_png, markdown_image
from haste_dagster.defs.resources import (
    ArtifactsResource,
    DatabaseResource,
    LLMResource,
    SkillStoreResource,
)
from haste_dagster.defs.steps.result import (
    CheckOutcome,
    Log,
    StepResult,
)

if TYPE_CHECKING:  # the domain modules load when a step runs, not with the code location
    from pathlib import Path

    import psycopg

    from haste_dagster.agents.attempts import AttemptConfig, AttemptResult
    from haste_dagster.agents.records import AttemptRow, IterationRow
    from haste_dagster.competitions.registry import Competition
    from haste_dagster.skills.model import Skill
    from haste_dagster.skills.store import SkillStore


def load_competition(slug: str) -> Competition:
    from haste_dagster.competitions import load_competition as load

    return load(slug)


# --- per competition --------------------------------------------------------------------


def _record_competition(
    conn: psycopg.Connection, competition: Competition, profile: dict[str, Any]
) -> None:
    """Upsert the competitions row (definition + profile) that reports and queries join on."""
    from haste_dagster.agents.records import record_competition

    record_competition(conn, competition, profile)


def competition_data_step(slug: str, database: DatabaseResource) -> StepResult:
    from haste_dagster.competitions import profile_data

    competition = load_competition(slug)
    d = competition.definition
    profile = profile_data(competition).as_dict()
    with database.connection() as conn:
        _record_competition(conn, competition, profile)
    train_ids = set(competition.train["row_id"].tolist())
    test_ids = set(competition.test_features["row_id"].tolist())
    leaked = sorted(train_ids & test_ids)
    return StepResult(
        metadata={
            "domain": d.domain,
            "task": d.task,
            "metric": d.metric,
            "train_rows": len(train_ids),
            "test_rows": len(test_ids),
            "answers_sha256": competition.answers_sha256,
            "profile": MetadataValue.json(profile),
        },
        checks=[
            CheckOutcome(
                "no_test_rows_in_train",
                passed=not leaked,
                metadata={"leaked_rows": len(leaked), "examples": MetadataValue.json(leaked[:10])},
            )
        ],
        value=d.domain,
    )


def run_is_live(instance: DagsterInstance) -> Callable[[AttemptRow], bool]:
    """The liveness check of :func:`haste_dagster.agents.records.resumable_attempt` for
    Dagster: a run still going owns its attempt (resuming it would interleave iterations)."""

    def live(attempt: AttemptRow) -> bool:
        if attempt.dagster_run_id:
            run = instance.get_run_by_id(attempt.dagster_run_id)
            return run is not None and run.status not in (
                DagsterRunStatus.FAILURE,
                DagsterRunStatus.CANCELED,
            )
        return attempt.status != "failed"  # started outside Dagster (CLI), maybe still running

    return live


def resume_attempt_id(
    instance: DagsterInstance, conn: psycopg.Connection, slug: str, cfg: AttemptRunConfig
) -> int | None:
    """The attempt a run with ``cfg`` continues (``cfg.resume``), by the one resume rule."""
    from haste_dagster.agents import records

    if not cfg.resume:
        return None
    return records.resumable_attempt(conn, slug, cfg, run_is_live=run_is_live(instance))


def attempt_config(cfg: AttemptRunConfig) -> AttemptConfig:
    """The domain's attempt settings for a step's run config."""
    from haste_dagster.agents.attempts import AttemptConfig

    return AttemptConfig(
        policy=cfg.policy,
        loading=cfg.loading,
        iterations=cfg.iterations or None,  # 0: the competition's budget
        seed=cfg.seed,
        label=cfg.label,
        pipeline=cfg.pipeline,
    )


def fix_skills_step(
    slug: str,
    cfg: AttemptRunConfig,
    *,
    skill_store: SkillStoreResource,
    instance: DagsterInstance,
    run_id: str,
) -> int | None:
    """Open the attempt a later step with ``cfg`` will run (or the one it would resume) and
    fix its skills now (`attempts.fix_attempt_skills`): a campaign phase does this for all
    its attempts before any runs, so none of them depends on which finished first. None
    for a multi-target competition (its targets fix their own)."""
    from haste_dagster.agents.attempts import fix_attempt_skills
    from haste_dagster.agents.orchestrator import load_solvable

    competition = load_solvable(slug)
    if competition.definition.is_multi_target:
        return None
    with skill_store.open() as (conn, store):
        return fix_attempt_skills(
            conn, store, competition, attempt_config(cfg),
            resume_attempt_id=resume_attempt_id(instance, conn, slug, cfg),
            dagster_run_id=run_id,
        )


def attempt_step(
    slug: str,
    cfg: AttemptRunConfig,
    *,
    skill_store: SkillStoreResource,
    llm: LLMResource,
    artifacts: ArtifactsResource,
    instance: DagsterInstance,
    run_id: str,
    log: Log,
    attempt_id: int | None = None,
) -> StepResult:
    """Run the attempt: ``attempt_id`` (opened, its skills fixed, by `fix_skills_step`),
    else the one the resume rule finds, else a new one."""
    from haste_dagster.agents.competition_agent import run_attempt
    from haste_dagster.agents.orchestrator import load_solvable
    from haste_dagster.agents.records import get_attempt

    competition = load_solvable(slug)  # fails before the budget is spent, as `haste solve` does

    def progress(idx: int, budget: int, row: IterationRow) -> None:
        mark = "kept" if row.kept else ("error" if row.error else "reverted")
        log(f"{slug} iteration {idx}/{budget}: cv {row.cv_mean} {mark}")

    with skill_store.open() as (conn, store):
        resume_id = attempt_id or resume_attempt_id(instance, conn, slug, cfg)
        # resumed: it had started before (an attempt only fixed in advance starts now)
        resumed = resume_id is not None and get_attempt(conn, resume_id).initial_spec is not None
        if resumed:
            log(f"resuming attempt {resume_id}")
        result = run_attempt(
            conn,
            competition,
            attempt_config(cfg),
            store=store,
            policy=llm.policy(cfg.policy, conn, campaign_id=run_id),
            dagster_run_id=run_id,
            resume_attempt_id=resume_id,
            progress=progress,
        )
        outcomes = attempt_outcomes(store, result.attempt_id)

    png = learning_curve_png(
        result.iterations,
        artifacts.path(slug, f"attempt_{result.attempt_id}_learning_curve.png"),
        title=f"{slug} · attempt {result.attempt_id} ({result.policy}, {result.loading})",
        higher_is_better=competition.metric.higher_is_better,
    )
    metadata = attempt_metadata(result)
    metadata.update(outcomes)
    metadata.update(
        {
            **learning_curve_metadata(
                result.iterations, png, slug, competition.metric.higher_is_better
            ),
            "learning_curve_path": MetadataValue.path(str(png)),
            "resumed": resumed,
        }
    )
    if cfg.policy == "llm":
        metadata["llm"] = MetadataValue.json(llm.describe())  # endpoint and model, never the key
    return StepResult(metadata=metadata, value=result.attempt_id)


def learning_curve_metadata(
    iterations: list[dict[str, Any]], png: Path, slug: str, higher_is_better: bool
) -> dict[str, Any]:
    """`learning_curve`: a small inline SVG (the UI shows short Markdown inline); the full
    PNG opens from `learning_curve_full`."""
    direction = "higher" if higher_is_better else "lower"
    alt = f"learning curve of {slug}: CV score per iteration ({direction} is better)"
    inline = learning_curve_inline(iterations, higher_is_better=higher_is_better, alt=alt)
    full = MetadataValue.md(markdown_image(png, f"learning curve of {slug}"))
    return {
        "learning_curve": MetadataValue.md(inline) if inline else full,
        "learning_curve_full": full,
    }


def attempt_outcomes(store: SkillStore, attempt_id: int) -> dict[str, Any]:
    """`attempt` metadata of what became of each loaded skill (applied, kept, delta)."""
    return audit.attempt_outcomes_metadata(store.attempt_usage(attempt_id))


def attempt_metadata(result: AttemptResult) -> dict[str, Any]:
    """What the `attempt` asset records of a finished attempt (an AttemptResult), by
    whichever path ran it: the asset, the campaign step or the distributed job."""
    by_tier = Counter(str(entry.get("tier", "?")) for entry in result.skills_loaded)
    metadata: dict[str, Any] = {
        "attempt_id": result.attempt_id,
        "policy": result.policy,
        "loading": result.loading,
        "seed": result.seed,
        "iterations": len(result.iterations),
        "kept_rate": audit.rounded(result.kept_rate, 4),
        "stopped": result.stopped,
        "skills_loaded": MetadataValue.json([entry["id"] for entry in result.skills_loaded]),
        # Skills are versioned: record exactly which version each loaded id was.
        "skills_loaded_versions": MetadataValue.json(
            {entry["id"]: entry.get("version") for entry in result.skills_loaded}
        ),
        "skills_loaded_by_tier": MetadataValue.json(dict(by_tier)),
        "tokens": int(result.prompt_tokens + result.completion_tokens),
    }
    if result.best_cv is not None:
        metadata["best_cv"] = audit.rounded(result.best_cv)
    if result.extra.get("pipeline") == "staged":  # the specialist's stages
        metadata["pipeline"] = "staged"
        metadata["stages"] = MetadataValue.json(
            {k: result.extra.get(k) for k in ("split", "prototypes", "branches", "best_branch")}
        )
        ensemble = result.extra.get("ensemble")
        metadata["ensemble"] = MetadataValue.json(
            None if ensemble is None else {
                "kept": ensemble["kept"], "cv_mean": ensemble["cv_mean"],
                "combine": ensemble["combine"],
                "members": [
                    {k: m[k] for k in ("branch", "idx", "family", "cv_mean")}
                    for m in ensemble["members"]
                ],
            }
        )
        metadata["submission"] = result.extra.get("submission", "single")
    if "fold_cache" in result.extra:  # hits/misses/bytes of the fold-feature cache
        metadata["fold_cache"] = MetadataValue.json(result.extra["fold_cache"])
    return metadata


def submission_step(
    slug: str, attempt_id: int, database: DatabaseResource, device: str | None = None
) -> StepResult:
    """Fit the best spec on all training data, grade it, check the stored grade reproduces.

    ``device`` None: detected where this step runs (a GPU worker trains on CUDA)."""
    from haste_dagster.agents.submission import make_submission, regrade_stored
    from haste_dagster.solution.compile import detect_device

    competition = load_competition(slug)
    device = device or detect_device()
    with database.connection() as conn:
        grade = make_submission(conn, competition, attempt_id, device=device)
        # Read the predictions back from the database and grade them again.
        fresh, stored = regrade_stored(conn, competition, attempt_id)
    stored_score = float(stored["score"])
    same = abs(float(fresh.score) - stored_score) <= 1e-9 * max(1.0, abs(stored_score))
    same = same and fresh.medal == stored["medal"]
    metadata: dict[str, Any] = {
        "attempt_id": attempt_id,
        "attempt": audit.asset_link("attempt", slug),
        "score": audit.rounded(grade.score),
        "medal": str(grade.medal),
        "device": device,
        "n_teams": int(grade.n_teams),
        "bootstrap_se": audit.rounded(grade.bootstrap_se, 3),
    }
    if grade.thresholds is not None:  # None: an ungraded competition (no medals, no board)
        metadata["thresholds"] = MetadataValue.json(grade.thresholds.model_dump(mode="json"))
    if grade.rank is not None:
        metadata["rank"] = int(grade.rank)
    return StepResult(
        metadata=metadata,
        checks=[
            CheckOutcome(
                "grade_reproducible",
                passed=same,
                metadata={
                    "stored_score": stored_score,
                    "regraded_score": float(fresh.score),
                    "stored_medal": str(stored["medal"]),
                    "regraded_medal": str(fresh.medal),
                },
            )
        ],
        value=grade,
    )


def competition_skills_step(
    slug: str, attempt_id: int, skill_store: SkillStoreResource, run_id: str | None = None
) -> StepResult:
    """Extract the attempt's skills (``run_id``: the Dagster run, recorded on each skill)."""
    from haste_dagster.agents.orchestrator import extract_skills

    competition = load_competition(slug)
    with skill_store.open() as (conn, store):
        skills = extract_skills(conn, competition, attempt_id, store, dagster_run_id=run_id)
        audit_metadata = competition_skills_audit(conn, store, slug, attempt_id, skills)
    return StepResult(
        metadata={
            "attempt_id": attempt_id,
            "domain": competition.definition.domain,
            "skills": len(skills),
            "skill_ids": MetadataValue.json([s.id for s in skills]),
            "titles": MetadataValue.md(skill_list(skills)),
            **audit_metadata,
        },
        value=[s.id for s in skills],
    )


def competition_skills_audit(
    conn: psycopg.Connection, store: SkillStore, slug: str, attempt_id: int, extracted: list[Skill]
) -> dict[str, Any]:
    """Why the attempt gave the skills it gave, and every competition skill of ``slug`` so
    far (not only this materialization's) with its lineage and usage."""
    row = conn.execute(
        """SELECT count(*) FILTER (WHERE idx > 0) AS refinements,
                  count(*) FILTER (WHERE idx > 0 AND kept) AS kept
           FROM iterations WHERE attempt_id = %s""",
        (attempt_id,),
    ).fetchone()
    if extracted:
        note = (
            f"attempt {attempt_id} kept {row['kept']} of {row['refinements']} refinements → "
            f"{len(extracted)} competition skills"
        )
    elif row["kept"] == 0:
        note = (
            f"nothing kept → no skills: attempt {attempt_id} kept none of its "
            f"{row['refinements']} refinements, so there was nothing to extract"
        )
    else:
        note = (
            f"no skills: attempt {attempt_id} kept {row['kept']} refinements, but none "
            "improved the score by a finite positive delta"
        )
    every = store.list(tier="competition", scope_key=slug, status=None)
    return {
        "note": MetadataValue.text(note),
        **audit.skills_table_metadata(every),
    }


def skill_list(skills: list[Any]) -> str:
    return "\n".join(f"- `{s.id}` {s.title}" for s in skills) or "(none)"
