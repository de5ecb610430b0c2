"""Extraction: competition skills from what an attempt kept.

Three kinds are written (see ``model.Kind``):

* **change**: each kept single change, as below;
* **recipe**: the attempt's best spec as a whole, as a patch on the domain default (family,
  parameters, feature steps, target transform), with its measured margin over the default
  and the profile it worked on; a later competition's prototype screen tries it;
* **rule**: each kept change that can be stated relative to the data (``skills.rules``),
  whose ``pattern`` is the same wherever the same lesson is learnt.

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
    before: dict[str, Any] | None = None  # the incumbent spec (JSON) the patch was applied to


@dataclass
class BestSpec:
    """What the recipe is made of: the attempt's best spec, the problem's domain default
    (both JSON) and the measured margin of the best over the default (positive = better)."""

    spec: dict[str, Any]
    default: dict[str, Any]
    margin: float


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
    best: BestSpec | None = None,
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
    skills += rule_skills(attempt_id, slug, domain, profile, kept_changes, dagster_run_id)
    if best is not None:
        recipe_skill = whole_spec_recipe(attempt_id, slug, domain, profile, best, dagster_run_id)
        if recipe_skill is not None:
            skills.append(recipe_skill)
    elif len(ranked) >= 2:
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


MAX_RULES = 4  # rule skills per attempt


def spec_diff(spec: dict[str, Any], default: dict[str, Any]) -> dict[str, Any] | None:
    """A patch that turns ``default`` into ``spec`` (validation left alone: a recipe must
    never change the folds it is compared on); None when they are equal."""
    ops: list[dict[str, Any]] = []
    if spec["model"] != default["model"]:
        ops.append({"op": "set_model", "family": spec["model"]["family"],
                    "params": dict(spec["model"]["params"])})
    if spec.get("target_transform") != default.get("target_transform"):
        ops.append({"op": "set", "path": "target_transform", "value": spec["target_transform"]})
    for step in ("numeric", "categorical", "text", "date", "forecast"):
        for name, value in sorted((spec.get(step) or {}).items()):
            if (default.get(step) or {}).get(name) != value:
                ops.append({"op": "set", "path": f"{step}.{name}", "value": value})
    return {"ops": ops} if ops else None


def _profile_phrase(profile: dict[str, Any]) -> str:
    task = str(profile.get("task") or "?").replace("_", " ")
    bits = [f"{task}", f"{profile.get('rows', '?')} rows"]
    if isinstance(profile.get("rows_per_feature"), int | float):
        bits.append(f"{profile['rows_per_feature']:.3g} rows per feature")
    skew = profile.get("target_skew")
    if isinstance(skew, int | float):
        bits.append(f"target skew {skew:.2f}")
    if isinstance(profile.get("text_mean_chars"), int | float):
        bits.append(f"texts of {profile['text_mean_chars']:.0f} characters on average")
    if isinstance(profile.get("seasonal_period"), int):
        bits.append(f"seasonal period {profile['seasonal_period']}")
    return ", ".join(bits)


def whole_spec_recipe(
    attempt_id: int, slug: str, domain: str, profile: dict[str, Any], best: BestSpec,
    dagster_run_id: str | None = None,
) -> Skill | None:
    """The recipe skill of an attempt, or None when its best spec is the default or did not
    beat it."""
    from haste_dagster.skills.model import normalise_action

    if not (math.isfinite(best.margin) and best.margin > 0):
        return None
    diff = spec_diff(best.spec, best.default)
    if diff is None:
        return None
    try:
        action = normalise_action(diff)
    except SkillError:
        return None
    assert action is not None
    family = best.spec["model"]["family"]
    conditions = profile_conditions(["model", *action_paths(action)], profile)
    where = "; ".join(c.describe() for c in conditions)
    return Skill(
        tier="competition",
        scope_key=slug,
        domain=domain,
        kind="recipe",
        pattern=f"recipe:{profile.get('task')}:{family}",
        title=_title(slug, action, prefix=f"recipe ({family}, +{best.margin:.3g} over default): "),
        conditions=conditions,
        guidance=(
            f"When the data looks like {slug}'s ({_profile_phrase(profile)}; precisely: "
            f"{where or 'always'}), start from this whole pipeline instead of the domain "
            f"default: {describe_action(action)}. Evidence: on {slug} it beat the default by "
            f"{best.margin:.4g} (cross-validated, in the metric's better direction)."
        ),
        action=action,
        payload={"margin": float(best.margin), "family": family},
        evidence=[Evidence(attempt_id=attempt_id, iteration=None, slug=slug, delta=best.margin)],
        created_by="extraction",
        source_attempt=attempt_id,
        dagster_run_id=dagster_run_id,
    )


def rule_skills(
    attempt_id: int, slug: str, domain: str, profile: dict[str, Any],
    kept_changes: list[KeptChange], dagster_run_id: str | None = None,
) -> list[Skill]:
    """One rule skill per distinct normalised rule among the kept changes that helped."""
    from haste_dagster.skills.model import normalise_action
    from haste_dagster.skills.rules import normalise_change

    by_key: dict[str, list[tuple[KeptChange, Any]]] = {}
    for change in kept_changes:
        if change.before is None or not (
            isinstance(change.delta, int | float) and math.isfinite(change.delta)
            and change.delta > 0
        ):
            continue
        try:
            action = normalise_action(change.patch)
        except (SkillError, SpecError):
            continue
        if action is None:
            continue
        rule = normalise_change(action, change.before, profile)
        if rule is not None:
            by_key.setdefault(rule.key, []).append((change, rule))
    ranked = sorted(by_key, key=lambda k: (-max(c.delta for c, _ in by_key[k]), k))
    out: list[Skill] = []
    for key in ranked[:MAX_RULES]:
        pairs = sorted(by_key[key], key=lambda p: p[0].idx)
        change, rule = max(pairs, key=lambda p: (p[0].delta, -p[0].idx))
        action = normalise_action(change.patch)
        where = "; ".join(c.describe() for c in rule.conditions)
        out.append(Skill(
            tier="competition",
            scope_key=slug,
            domain=domain,
            kind="rule",
            pattern=key,
            title=f"{slug}: rule {key}"[:200],
            conditions=rule.conditions,
            guidance=(
                f"When {where or 'always'}, {rule.text}. Evidence: on {slug} "
                f"({_profile_phrase(profile)}) this was kept and improved the cross-validated "
                f"score by {change.delta:.4g} ({describe_action(action or {})})."
            ),
            action=action,
            payload={"rule": rule.template, "text": rule.text},
            evidence=[Evidence(attempt_id=attempt_id, iteration=c.idx, slug=slug, delta=c.delta)
                      for c, _ in pairs],
            created_by="extraction",
            source_attempt=attempt_id,
            dagster_run_id=dagster_run_id,
        ))
    return out
