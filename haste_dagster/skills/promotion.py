"""Promotion (heuristic, no LLM): recurring competition patterns become domain skills, and
recurring domain patterns become global skills.

A *pattern* is a normalised action: the same patch operations on the same spec paths,
with equal categorical values and numeric values within a factor of 2 of each other
(``max_depth`` 8 and 10 are one pattern, 3 and 10 are two). Each source skill's *effect*
is its mean measured delta (evidence plus recorded applications).

The decision is ``evidence_allows(tier, sources)``, a small pure function over evidence:

* domain: the pattern helped (effect > 0) in at least 2 distinct competitions of one
  domain, and in more competitions than it hurt (effect < 0);
* global: likewise across at least 2 distinct domains.

An LLM labeller may propose promotions; this rule still decides. A promoted skill gets the
generalised action (median of the sources' numeric values), the hull of the sources'
conditions (the loosest bound per key that every source constrains), the union of their
evidence and a ``promoted_from`` edge to each source. A pattern that helped somewhere and
hurt elsewhere gets a ``conflicts_with`` edge pair (promoted skill or best helping source
<-> each hurting source), each edge carrying the conditions under which its source holds;
nothing is overwritten. Re-running changes nothing unless the evidence changed.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from haste_dagster.skills.extraction import describe_action
from haste_dagster.skills.model import Condition, Evidence, Skill, sorted_conditions
from haste_dagster.skills.store import SkillStore

MIN_SUPPORT = 2  # distinct competitions (domain tier) or domains (global tier)
RATIO = 2.0  # numeric values within this factor are the same pattern


# ---- the evidence rule ---------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One piece of evidence for a pattern: where it was measured and its effect."""

    competition: str | None
    domain: str | None
    delta: float | None  # None = cited without a measurement (counts as support)
    skill_id: str | None = None


def as_source(item: Any) -> Source:
    """A Source from a dict (``competition``/``slug``, ``domain``, ``delta``) or a Skill."""
    if isinstance(item, Source):
        return item
    if isinstance(item, Skill):
        return Source(
            competition=item.scope_key if item.tier == "competition" else None,
            domain=item.domain,
            delta=item.effect,
            skill_id=item.id,
        )
    if isinstance(item, dict):
        delta = item.get("delta")
        return Source(
            competition=item.get("competition") or item.get("slug"),
            domain=item.get("domain"),
            delta=float(delta) if isinstance(delta, int | float) else None,
            skill_id=item.get("skill_id"),
        )
    raise TypeError(f"not an evidence source: {item!r}")


def _verdicts(groups: dict[str, list[float | None]]) -> tuple[list[str], list[str]]:
    """(helped, hurt) group names: mean measured delta > 0 / < 0; unmeasured = helped."""
    helped, hurt = [], []
    for name in sorted(groups):
        measured = [d for d in groups[name] if d is not None]
        mean = sum(measured) / len(measured) if measured else None
        if mean is None or mean > 0:
            helped.append(name)
        elif mean < 0:
            hurt.append(name)
    return helped, hurt


def evidence_allows(tier: str, sources: Iterable[Any]) -> tuple[bool, str]:
    """Whether ``sources`` justify a skill of ``tier``, and why (pure; no database)."""
    items = [as_source(s) for s in sources]
    if tier == "competition":
        return True, "competition skills need no cross-competition evidence"
    if tier == "domain":
        domains = sorted({s.domain for s in items if s.domain})
        if len(domains) != 1:
            return False, f"a domain skill needs sources from one domain, got {domains or 'none'}"
        groups: dict[str, list[float | None]] = defaultdict(list)
        for s in items:
            if s.competition:
                groups[s.competition].append(s.delta)
        unit, scope = "competitions", f"of domain {domains[0]}"
    elif tier == "global":
        groups = defaultdict(list)
        for s in items:
            if s.domain:
                groups[s.domain].append(s.delta)
        unit, scope = "domains", "across domains"
    else:
        return False, f"unknown tier {tier!r}"
    helped, hurt = _verdicts(groups)
    said = f"helped in {len(helped)} {unit} {scope} ({', '.join(helped) or '-'})"
    if hurt:
        said += f", hurt in {len(hurt)} ({', '.join(hurt)})"
    if len(helped) < MIN_SUPPORT:
        return False, f"{said}; needs >= {MIN_SUPPORT}"
    if len(helped) <= len(hurt):
        return False, f"{said}; contradicting evidence outweighs it"
    return True, said


# ---- patterns --------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def action_signature(action: dict[str, Any]) -> tuple[Any, ...]:
    """The action with numeric values blanked: equal signatures = same kind of change."""
    out: list[Any] = []
    for op in action["ops"]:
        kind = op["op"]
        if kind == "set_model":
            params = tuple(
                sorted((k, "#" if _is_number(v) else repr(v)) for k, v in op["params"].items())
            )
            out.append((kind, op["family"], params))
        elif kind == "unset":
            out.append((kind, op["path"]))
        elif kind == "set":
            value = op["value"]
            out.append((kind, op["path"], "#" if _is_number(value) else repr(value)))
        else:  # add/remove: list items (lags, date parts) are specific, keep them exact
            out.append((kind, op["path"], repr(op["value"])))
    return tuple(out)


def numeric_values(action: dict[str, Any]) -> list[float]:
    values: list[float] = []
    for op in action["ops"]:
        if op["op"] == "set_model":
            values += [float(v) for _, v in sorted(op["params"].items()) if _is_number(v)]
        elif op["op"] == "set" and _is_number(op["value"]):
            values.append(float(op["value"]))
    return values


def compatible(a: Sequence[float], b: Sequence[float], ratio: float = RATIO) -> bool:
    """Numeric values pairwise within ``ratio`` of each other (same sign; 0 only with 0)."""
    for x, y in zip(a, b, strict=True):
        if x == y:
            continue
        if x == 0 or y == 0 or (x > 0) != (y > 0):
            return False
        if max(abs(x), abs(y)) / min(abs(x), abs(y)) > ratio:
            return False
    return True


def cluster_patterns(skills: Sequence[Skill]) -> list[list[Skill]]:
    """Skills with actions grouped into patterns (deterministic complete linkage)."""
    by_signature: dict[tuple[Any, ...], list[Skill]] = defaultdict(list)
    for skill in skills:
        if skill.action:
            by_signature[action_signature(skill.action)].append(skill)
    clusters: list[list[Skill]] = []
    for signature in sorted(by_signature, key=repr):
        members = sorted(
            by_signature[signature], key=lambda s: (numeric_values(s.action or {}), s.id)
        )
        groups: list[list[Skill]] = []
        for skill in members:
            values = numeric_values(skill.action or {})
            for group in groups:
                if all(compatible(values, numeric_values(o.action or {})) for o in group):
                    group.append(skill)
                    break
            else:
                groups.append([skill])
        clusters += groups
    return clusters


def generalise_action(actions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The first action with each numeric value replaced by the median over ``actions``."""
    columns = list(zip(*(numeric_values(a) for a in actions), strict=True))
    first = actions[0]
    medians = iter(
        [median_of(col, all(float(v).is_integer() for v in col)) for col in columns]
    )
    ops = []
    for op in first["ops"]:
        op = dict(op)
        if op["op"] == "set_model":
            op["params"] = {
                k: (next(medians) if _is_number(v) else v) for k, v in sorted(op["params"].items())
            }
        elif op["op"] == "set" and _is_number(op["value"]):
            op["value"] = next(medians)
        ops.append(op)
    return {"ops": ops}


def median_of(values: Sequence[float], integer: bool) -> float | int:
    if all(v > 0 for v in values) and len(set(values)) > 1:
        # Scale parameters (learning rates, C) are compared in log space.
        value = math.exp(statistics.median(math.log(v) for v in values))
    else:
        value = statistics.median(values)
    if integer:
        return int(round(value))
    return float(f"{value:.4g}")


def _lower_key(c: Condition) -> tuple[Any, bool]:
    return (c.value, c.op == ">")  # at equal values ">" is the tighter lower bound


def _upper_key(c: Condition) -> tuple[Any, bool]:
    return (c.value, c.op == "<=")  # at equal values "<" is the tighter upper bound


def conditions_hull(condition_sets: Sequence[Sequence[Condition]]) -> list[Condition]:
    """The loosest conditions every source satisfies: per key, a bound survives only if
    every source bounds that side (at the loosest of their bounds); ``==``/``!=`` survive
    if every source states the same value."""
    from haste_dagster.skills.model import canonical_json

    if not condition_sets:
        return []
    per_source: list[dict[str, list[Condition]]] = []
    for conditions in condition_sets:
        keyed: dict[str, list[Condition]] = defaultdict(list)
        for c in conditions:
            keyed[c.key].append(c)
        per_source.append(keyed)
    out: list[Condition] = []
    for key in sorted(set.intersection(*(set(s) for s in per_source))):
        lists = [s[key] for s in per_source]
        for op in ("==", "!="):
            chosen = [[c for c in lst if c.op == op] for lst in lists]
            if all(chosen):
                values = {canonical_json(c.value) for group in chosen for c in group}
                if len(values) == 1:
                    out.append(chosen[0][0])
        try:
            lower = [[c for c in lst if c.op in (">", ">=")] for lst in lists]
            if all(lower):  # each source's effective bound is its tightest; take the loosest
                out.append(min((max(g, key=_lower_key) for g in lower), key=_lower_key))
            upper = [[c for c in lst if c.op in ("<", "<=")] for lst in lists]
            if all(upper):
                out.append(max((min(g, key=_upper_key) for g in upper), key=_upper_key))
        except TypeError:  # bounds of mixed types (a string and a number): drop them
            continue
    return sorted_conditions(out)


# ---- promotion ------------------------------------------------------------------------


@dataclass
class PromotionResult:
    skills: list[Skill]  # promoted skills the evidence supports (new, updated or unchanged)
    changed: list[str]  # ids written in this run (new skills or new versions)
    edges_added: int
    conflicts: list[tuple[str, str]]


def evidence_union(skills: Iterable[Skill]) -> list[Evidence]:
    return [e for s in skills for e in s.evidence]


def _existing(
    store: SkillStore, tier: str, scope_key: str | None, signature: tuple[Any, ...],
    values: list[float], source_ids: set[str],
) -> Skill | None:
    """The literal change in the target scope that already stands for this pattern, if
    any. Only a ``change``: a rule or recipe with the same action belongs to pattern
    promotion, and rewriting it here made the two paths take turns on it, writing two new
    versions on every pass."""
    candidates = []
    for skill in store.list(tier=tier, scope_key=scope_key, status=None, kind="change"):
        if skill.scope_key != scope_key or not skill.action:
            continue
        if action_signature(skill.action) != signature:
            continue
        if not compatible(numeric_values(skill.action), values):
            continue
        overlap = len(source_ids & set(skill.parent_ids))
        candidates.append((-overlap, not skill.parent_ids, skill.id or "", skill))
    return min(candidates, key=lambda c: c[:3])[3] if candidates else None


def _promote(
    store: SkillStore, tier: str, scope_key: str | None, sources: list[Skill],
    unit: str, dagster_run_id: str | None = None,
) -> PromotionResult:
    result = PromotionResult([], [], 0, [])
    for cluster in cluster_patterns([s for s in sources if s.effect is not None]):
        allowed, reason = evidence_allows(tier, cluster)
        helped = [s for s in cluster if (s.effect or 0) > 0]
        hurt = [s for s in cluster if (s.effect or 0) < 0]
        promoted: Skill | None = None
        if allowed:
            promoted = _write_promoted(
                store, tier, scope_key, helped, reason, unit, result, dagster_run_id
            )
            result.skills.append(promoted)
        if hurt and helped:
            partner = promoted or max(helped, key=lambda s: (s.effect or 0, s.id or ""))
            for other in sorted(hurt, key=lambda s: s.id or ""):
                _conflict(store, partner, other, result)
    return result


def _write_promoted(
    store: SkillStore, tier: str, scope_key: str | None, helped: list[Skill], reason: str,
    unit: str, result: PromotionResult, dagster_run_id: str | None = None,
) -> Skill:
    helped = sorted(helped, key=lambda s: (s.scope_key or s.domain or "", s.id or ""))
    action = generalise_action([s.action or {} for s in helped])
    signature = action_signature(action)
    source_ids = {s.id or "" for s in helped}
    conditions = conditions_hull([s.conditions for s in helped])
    where = sorted({(s.scope_key if unit == "competitions" else s.domain) or "" for s in helped})
    scope_words = f"domain {scope_key.replace('_', ' ')}" if scope_key else "every domain"
    title = f"{describe_action(action)} ({scope_words})"
    guidance = (
        f"Apply {describe_action(action)}. This change helped in {len(where)} {unit}: "
        f"{', '.join(where)}; it is promoted to a {tier} skill because it recurred, and "
        "holds where every source's data did (see the conditions)."
    )
    existing = _existing(store, tier, scope_key, signature, numeric_values(action), source_ids)
    evidence = evidence_union(helped)
    if existing is None:
        skill = store.add(
            Skill(
                tier=tier, scope_key=scope_key, domain=scope_key if tier == "domain" else None,
                title=title[:200], conditions=conditions, guidance=guidance, action=action,
                evidence=evidence, created_by="promotion", parent_ids=sorted(source_ids),
                dagster_run_id=dagster_run_id,
            )
        )
        result.changed.append(skill.id or "")
    else:
        changes: dict[str, Any] = {
            "evidence": [*existing.evidence, *evidence],
            "parent_ids": sorted(set(existing.parent_ids) | source_ids),
        }
        if existing.created_by == "promotion" or existing.parent_ids:
            # A skill this rule wrote: its generated content follows the evidence. A seed
            # or curated skill keeps its text; it only gains evidence and parents.
            changes.update(title=title[:200], guidance=guidance, action=action,
                           conditions=conditions)
        if dagster_run_id is not None:
            changes["dagster_run_id"] = dagster_run_id  # a new version records its run
        skill = store.new_version(existing.id or "", **changes, created_by="promotion")
        if skill.version != existing.version:
            result.changed.append(skill.id or "")
    for source in helped:
        if not store.has_edge(skill.id or "", source.id or "", "promoted_from"):
            store.add_edge(skill, source, "promoted_from", reason=reason)
            result.edges_added += 1
    return skill


def _conflict(store: SkillStore, a: Skill, b: Skill, result: PromotionResult) -> None:
    """A conflicts_with pair; each edge carries the conditions its source holds under."""
    reason = (
        f"same change ({describe_action(a.action or {})}) measured {a.effect:+.4g} in "
        f"{a.scope_key or 'global'} and {b.effect:+.4g} in {b.scope_key or 'global'}"
    )
    for src, dst in ((a, b), (b, a)):
        if not store.has_edge(src.id or "", dst.id or "", "conflicts_with"):
            store.add_edge(src, dst, "conflicts_with", conditions=src.conditions, reason=reason)
            result.edges_added += 1
    result.conflicts.append((a.id or "", b.id or ""))


# One advisory lock for every writer of promoted skills (promotion from any caller, and
# consolidation): they write new versions of the same skills, and two interleaving would fail
# on the store's unique indexes. The second waits, then reads the first one's result.
# Transaction-scoped and re-entrant, so nested callers may take it again.
PROMOTION_LOCK_KEY = 0x5C111


def lock_promotions(store: SkillStore) -> None:
    """Wait for the promotion lock; held until the caller's transaction ends."""
    store.conn.execute("SELECT pg_advisory_xact_lock(%s)", (PROMOTION_LOCK_KEY,))


def promote_domain(
    store: SkillStore, domain: str, *, dagster_run_id: str | None = None
) -> PromotionResult:
    """``dagster_run_id``: the run that promotes, recorded on the skills it writes."""
    from haste_dagster.skills.pattern_promotion import promote_patterns_domain

    with store.conn.transaction():
        lock_promotions(store)
        sources = store.list(tier="competition", status="active", domain=domain, kind="change")
        result = _promote(store, "domain", domain, sources, "competitions", dagster_run_id)
        return _merge(result, promote_patterns_domain(store, domain, dagster_run_id=dagster_run_id))


def promote_global(store: SkillStore, *, dagster_run_id: str | None = None) -> PromotionResult:
    # pattern_promotion builds on this module's rule and results, hence the late import
    from haste_dagster.skills.pattern_promotion import promote_patterns_global

    with store.conn.transaction():
        lock_promotions(store)
        sources = store.list(tier="domain", status="active", kind="change")
        result = _promote(store, "global", None, sources, "domains", dagster_run_id)
        return _merge(result, promote_patterns_global(store, dagster_run_id=dagster_run_id))


def _merge(a: PromotionResult, b: PromotionResult) -> PromotionResult:
    return PromotionResult(a.skills + b.skills, a.changed + b.changed,
                           a.edges_added + b.edges_added, a.conflicts + b.conflicts)


def promote_domain_skills(
    store: SkillStore, domain: str, *, dagster_run_id: str | None = None
) -> list[Skill]:
    """Domain skills of ``domain`` that competition evidence supports (new, updated or
    already there); conflicts among the competition skills get edges. Idempotent."""
    return promote_domain(store, domain, dagster_run_id=dagster_run_id).skills


def promote_global_skills(store: SkillStore, *, dagster_run_id: str | None = None) -> list[Skill]:
    """Global skills that domain evidence (>= 2 domains) supports. Idempotent."""
    return promote_global(store, dagster_run_id=dagster_run_id).skills
