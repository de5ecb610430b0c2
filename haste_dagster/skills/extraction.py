"""Extraction: competition skills from what an attempt kept.

After an attempt, each kept change (a spec patch that beat the incumbent) is a candidate
skill of the competition tier: its action is the patch, its conditions are ranges around
the competition's data profile on the traits the patch is about, its evidence is the
measured delta. The largest deltas come first; at most four single changes are kept, plus
one "recipe" skill combining every kept change when there were two or more, so an attempt
yields 0 (nothing kept), 1, or 3 to 5 skills. Re-running extraction for the same attempt
writes nothing new: the skills' content is a pure function of the attempt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from haste_dagster.errors import SkillError, SpecError
from haste_dagster.skills.model import Condition, Evidence, Skill, canonical_json
from haste_dagster.skills.store import SkillStore

MAX_SINGLE = 4  # single-change skills per attempt (plus one recipe: at most 5)


@dataclass
class KeptChange:
    """One kept refinement step: iteration ``idx`` applied ``patch`` (a Patch as JSON) and
    improved the CV score by ``delta`` (in the metric's better direction: positive =
    better), for ``rationale``, motivated by the skills ``skill_ids``."""

    idx: int
    patch: dict[str, Any]
    delta: float
    rationale: str | None = ""
    skill_ids: list[str] = field(default_factory=list)


def describe_action(action: dict[str, Any]) -> str:
    from haste_dagster.solution.spec import parse_patch

    return parse_patch(action).describe()


def action_paths(action: dict[str, Any]) -> list[str]:
    from haste_dagster.solution.spec import parse_patch

    return parse_patch(action).paths()


def profile_conditions(paths: list[str], profile: dict[str, Any]) -> list[Condition]:
    """Where a change about ``paths`` should apply, judged from the profile it worked on.

    Always the task and a rows range (x0.25 to x4: scale changes what model settings
    suit); then the traits the touched steps depend on, with thresholds at half the
    observed value so similar data qualifies.
    """
    heads = {p.split(".")[0] for p in paths}
    leaves = {p.split(".")[-1] for p in paths}
    out: list[Condition] = []

    def add(key: str, op: str, value: Any) -> None:
        out.append(Condition(key=key, op=op, value=value))  # type: ignore[arg-type]

    if isinstance(profile.get("task"), str):
        add("task", "==", profile["task"])
    rows = profile.get("rows")
    if isinstance(rows, int) and rows > 0:
        add("rows", ">=", max(1, rows // 4))
        add("rows", "<=", rows * 4)
    if "text" in heads and profile.get("has_text") is not None:
        add("has_text", "==", bool(profile["has_text"]))
    if "forecast" in heads and profile.get("is_forecast") is not None:
        add("is_forecast", "==", bool(profile["is_forecast"]))
    if "date" in heads and profile.get("has_date") is not None:
        add("has_date", "==", bool(profile["has_date"]))
    if "categorical" in heads:
        add("n_categorical", ">=", 1)
        card = profile.get("max_cardinality")
        if isinstance(card, int) and card >= 4:
            add("max_cardinality", ">=", card // 2)
    if "numeric" in heads:
        add("n_numeric", ">=", 1)
        missing = profile.get("missing_rate")
        if leaves & {"impute", "missing_indicator"} and isinstance(missing, float) and missing:
            add("missing_rate", ">=", round(missing / 2, 4))
    if "target_transform" in heads or "log1p_skewed" in leaves:
        skew = profile.get("target_skew")
        if isinstance(skew, int | float) and math.isfinite(skew):
            if skew >= 0.5:
                add("target_skew", ">=", round(skew / 2, 3))
            else:
                add("target_skew", "<", 0.5)
    if "class_weight" in leaves:
        share = profile.get("minority_class_share")
        if isinstance(share, int | float) and share > 0:
            add("minority_class_share", "<=", round(min(0.5, share * 2), 4))
    return out


def _guidance(slug: str, domain: str, profile: dict[str, Any], action: dict[str, Any],
              rationale: str | None, skill_ids: list[str]) -> str:
    task = str(profile.get("task") or "?").replace("_", " ")
    text = (
        f"On {slug} ({domain.replace('_', ' ')}, {task}, {profile.get('rows', '?')} rows) "
        f"this change beat the incumbent solution and was kept: {describe_action(action)}."
    )
    if rationale and rationale.strip():
        text += f"\n\nWhy it was tried: {' '.join(rationale.split())[:500]}"
    if skill_ids:
        text += f"\n\nSuggested by skills: {', '.join(sorted(set(skill_ids)))}."
    return text


def _title(slug: str, action: dict[str, Any], prefix: str = "") -> str:
    title = f"{slug}: {prefix}{describe_action(action)}"
    return title if len(title) <= 200 else title[:197] + "..."


def extract_competition_skills(
    store: SkillStore,
    *,
    attempt_id: int,
    slug: str,
    domain: str,
    profile: dict[str, Any],
    kept_changes: list[KeptChange],
    dagster_run_id: str | None = None,
) -> list[Skill]:
    """Write the competition skills an attempt taught (see the module doc); idempotent."""
    from haste_dagster.skills.model import normalise_action

    groups: dict[str, list[KeptChange]] = {}
    actions: dict[str, dict[str, Any]] = {}
    for change in kept_changes:
        if not (isinstance(change.delta, int | float) and math.isfinite(change.delta)):
            continue
        if change.delta <= 0:
            continue  # extraction keeps what helped; harmful changes were not kept
        try:
            action = normalise_action(change.patch)
        except (SkillError, SpecError):
            continue
        if action is None:
            continue
        key = canonical_json(action)
        groups.setdefault(key, []).append(change)
        actions[key] = action
    # One skill per distinct action; the best delta of its applications ranks it.
    ranked = sorted(
        groups, key=lambda k: (-max(c.delta for c in groups[k]), min(c.idx for c in groups[k]))
    )
    skills: list[Skill] = []
    for key in ranked[:MAX_SINGLE]:
        changes = sorted(groups[key], key=lambda c: c.idx)
        first = max(changes, key=lambda c: (c.delta, -c.idx))
        action = actions[key]
        skills.append(
            Skill(
                tier="competition",
                scope_key=slug,
                domain=domain,
                title=_title(slug, action),
                conditions=profile_conditions(action_paths(action), profile),
                guidance=_guidance(slug, domain, profile, action, first.rationale,
                                   [i for c in changes for i in c.skill_ids]),
                action=action,
                evidence=[
                    Evidence(attempt_id=attempt_id, iteration=c.idx, slug=slug, delta=c.delta)
                    for c in changes
                ],
                created_by="extraction",
                parent_ids=sorted({i for c in changes for i in c.skill_ids}),
                source_attempt=attempt_id,
                dagster_run_id=dagster_run_id,
            )
        )
    if len(ranked) >= 2:
        # The whole recipe, in the order it was kept: later ops see earlier ones applied.
        ordered = sorted((c for k in ranked for c in groups[k]), key=lambda c: c.idx)
        ops: list[dict[str, Any]] = []
        for change in ordered:
            for op in actions[canonical_json(normalise_action(change.patch))]["ops"]:
                if op not in ops:
                    ops.append(op)
        recipe = normalise_action({"ops": ops})
        assert recipe is not None
        total = sum(max(c.delta for c in groups[k]) for k in ranked)
        skills.append(
            Skill(
                tier="competition",
                scope_key=slug,
                domain=domain,
                title=_title(slug, recipe, prefix=f"recipe of {len(ranked)} kept changes: "),
                conditions=profile_conditions(action_paths(recipe), profile),
                guidance=(
                    f"On {slug} every one of these {len(ranked)} changes was kept in turn; "
                    f"together they improved the cross-validated score by about {total:.4g}. "
                    f"Apply them as one starting point: {describe_action(recipe)}."
                ),
                action=recipe,
                evidence=[
                    Evidence(attempt_id=attempt_id, iteration=c.idx, slug=slug, delta=c.delta)
                    for c in ordered
                ],
                created_by="extraction",
                source_attempt=attempt_id,
                dagster_run_id=dagster_run_id,
            )
        )
    return store.add_many(skills) if skills else []
