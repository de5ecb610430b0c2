"""Promotion of rules and recipes (patterns) from cross-evaluation evidence.

Part of promotion (``skills.promotion.promote_domain`` / ``promote_global`` call it): the
same evidence rule, over the measured uses recorded in skill_usage as well as each
skill's own evidence."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from haste_dagster.skills.extraction import describe_action
from haste_dagster.skills.model import Condition, Evidence, Skill, sorted_conditions
from haste_dagster.skills.promotion import (
    PromotionResult,
    Source,
    conditions_hull,
    evidence_allows,
    evidence_union,
    lock_promotions,
    median_of,
)
from haste_dagster.skills.store import SkillStore

# Rules and recipes carry a normalised ``pattern``: every competition skill with the same
# (kind, pattern) in a domain is one lesson. Its evidence per competition is the skills' own
# evidence (where they were learnt) plus every measured use recorded in skill_usage (where a
# skill from elsewhere was tried: prototype screen, initial spec against the control, a
# proposal), grouped by the competition it was measured on. The same rule as promotion.py
# decides: domain when it helped on >= 2 competitions of the domain and in more than it
# hurt; global when domain skills of the pattern helped in >= 2 domains. Helped somewhere and hurt
# elsewhere: a conflict pair, each edge with the conditions of the data it held on. Every
# decision is kept in skill_decisions with its reason; nothing is overwritten.

PATTERN_KINDS = ("rule", "recipe")


def _competitions(store: SkillStore, slugs: Iterable[str]) -> dict[str, dict[str, Any]]:
    """slug -> its row (domain, profile) for the competitions evidence was measured on."""
    rows = store.conn.execute(
        "SELECT slug, domain, profile FROM competitions WHERE slug = ANY(%s)",
        (sorted(set(slugs)),),
    ).fetchall()
    return {r["slug"]: r for r in rows}


def measured_by_competition(
    store: SkillStore, skills: Sequence[Skill]
) -> dict[str, list[tuple[str, float]]]:
    """competition slug -> [(skill id, delta)] over the skills' evidence and usage."""
    out: dict[str, list[tuple[str, float]]] = defaultdict(list)
    usage = store.measured_effects([s.id or "" for s in skills])
    for skill in skills:
        seen: set[tuple[int | None, int | None]] = set()
        for e in skill.evidence:
            out[e.slug].append((skill.id or "", e.delta))
            seen.add((e.attempt_id, e.iteration))
        for row in usage.get(skill.id or "", []):
            if (row["attempt_id"], row["iteration_idx"]) in seen and row["event"] == "applied":
                continue  # the kept change extraction already wrote down as evidence
            out[row["slug"]].append((skill.id or "", float(row["delta"])))
    return out


def _widen(conditions: Sequence[Condition], profile: dict[str, Any]) -> list[Condition]:
    """``conditions`` loosened just enough to hold on ``profile`` (a competition where the
    pattern was measured to help): bounds move to its value; an equality it breaks goes."""
    out = []
    for c in conditions:
        actual = profile.get(c.key)
        if c.holds(profile) or actual is None:
            out.append(c)
            continue
        if c.op in (">", ">=", "<", "<=") and isinstance(actual, int | float):
            out.append(Condition(key=c.key, op=c.op, value=actual))
        # == / != that this competition breaks: the pattern is not specific to it
    return sorted_conditions(out)


def _decision_digest(evidence: dict[str, list[tuple[str, float]]]) -> str:
    import hashlib

    from haste_dagster.skills.model import canonical_json

    flat = {k: sorted((i, round(d, 10)) for i, d in v) for k, v in evidence.items()}
    return hashlib.sha256(canonical_json(flat).encode()).hexdigest()[:24]


def record_decision(
    store: SkillStore, tier: str, scope_key: str | None, pattern: str, decision: str,
    reason: str, *, skill_id: str | None, source_ids: list[str],
    evidence: dict[str, list[tuple[str, float]]],
) -> None:
    from psycopg.types.json import Jsonb

    store.conn.execute(
        """INSERT INTO skill_decisions (tier, scope_key, pattern, decision, reason, skill_id,
               source_ids, evidence, digest)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
        (tier, scope_key or "", pattern, decision, reason, skill_id, Jsonb(sorted(source_ids)),
         Jsonb([{"where": k, "deltas": [d for _, d in v]} for k, v in sorted(evidence.items())]),
         _decision_digest(evidence) + f":{decision}"),
    )


def decisions(store: SkillStore, pattern: str | None = None) -> list[dict[str, Any]]:
    """Every promotion decision recorded (oldest first), optionally for one pattern."""
    with store.conn.transaction():
        rows = store.conn.execute(
            """SELECT tier, scope_key, pattern, decision, reason, skill_id, source_ids,
                      evidence, created_at FROM skill_decisions
               WHERE %s::text IS NULL OR pattern = %s ORDER BY id""",
            (pattern, pattern),
        ).fetchall()
    return [dict(r) for r in rows]


def _generalise_payload(kind: str, skills: Sequence[Skill]) -> dict[str, Any]:
    """A rule's template with its ratio/factor at the (log) median of the sources'; a
    recipe's payload from its best source."""
    best = max(skills, key=lambda s: (s.effect or 0.0, s.id or ""))
    payload = dict(best.payload)
    if kind == "rule" and isinstance(payload.get("rule"), dict):
        template = dict(payload["rule"])
        for key in ("ratio", "factor"):
            values = [float(s.payload["rule"][key]) for s in skills
                      if isinstance(s.payload.get("rule"), dict) and key in s.payload["rule"]]
            if values and key in template:
                template[key] = float(f"{median_of(values, False):.3g}")
        payload["rule"] = template
    return payload


def _evidence_sentence(per: dict[str, float], unit: str) -> str:
    parts = [f"{where} ({delta:+.3g})" for where, delta in sorted(per.items())]
    return f"measured on {len(per)} {unit}: {', '.join(parts)}"


def _promote_pattern(
    store: SkillStore, tier: str, scope_key: str | None, kind: str, pattern: str,
    members: list[Skill], evidence: dict[str, list[tuple[str, float]]], unit: str,
    result: PromotionResult, profiles: dict[str, list[dict[str, Any]]],
    run_id: str | None = None,
) -> None:
    """``profiles``: per ``where`` of the evidence, the profiles of the competitions there
    on which the pattern was measured to help (a conflict's hurt side takes its own)."""
    domain_of = {s.id: s.domain for s in members}
    sources = []
    for where, pairs in evidence.items():
        for skill_id, delta in pairs:
            sources.append(Source(
                competition=where if unit == "competitions" else None,
                domain=(domain_of.get(skill_id) if unit == "competitions" else where),
                delta=delta, skill_id=skill_id,
            ))
    allowed, reason = evidence_allows(tier, sources)
    per = {w: sum(d for _, d in p) / len(p) for w, p in evidence.items() if p}
    helped = sorted(w for w, m in per.items() if m > 0)
    hurt = sorted(w for w, m in per.items() if m < 0)
    helping = [s for s in members if any(i == s.id for w in helped for i, _ in evidence[w])]
    promoted: Skill | None = None
    if allowed and helping:
        widen_to = [p for where in helped for p in profiles.get(where, [])]
        promoted = _write_pattern_skill(store, tier, scope_key, kind, pattern, helping, per,
                                        helped, unit, reason, result, widen_to, run_id)
        result.skills.append(promoted)
    record_decision(store, tier, scope_key, pattern, "promoted" if promoted else "refused",
                    reason, skill_id=promoted.id if promoted else None,
                    source_ids=[s.id or "" for s in members], evidence=evidence)
    if helped and hurt and unit == "competitions":
        partner = promoted or max(helping, key=lambda s: (s.effect or 0.0, s.id or ""))
        for where in hurt:
            other = _hurt_side(store, partner, where, per[where],
                               next(iter(profiles.get(where, [])), None), run_id)
            _conflict_measured(store, partner, other, per, where, result)
            record_decision(
                store, tier, scope_key, pattern, "conflict",
                f"helped on {', '.join(helped)}, hurt on {where} ({per[where]:+.4g})",
                skill_id=other.id, source_ids=[partner.id or "", other.id or ""],
                evidence=evidence,
            )


def _write_pattern_skill(
    store: SkillStore, tier: str, scope_key: str | None, kind: str, pattern: str,
    helping: list[Skill], per: dict[str, float], helped: list[str], unit: str, reason: str,
    result: PromotionResult, widen_to: list[dict[str, Any]], run_id: str | None = None,
) -> Skill:
    best = max(helping, key=lambda s: (s.effect or 0.0, s.id or ""))
    conditions = conditions_hull([s.conditions for s in helping])
    for profile in widen_to:  # cross-evaluated there and helped: its data is in scope too
        conditions = _widen(conditions, profile)
    payload = _generalise_payload(kind, helping)
    scope_words = f"domain {scope_key.replace('_', ' ')}" if scope_key else "every domain"
    what = (str(best.payload.get("text") or describe_action(best.action or {}))
            if kind == "rule" else f"start from this recipe: {describe_action(best.action or {})}")
    where = "; ".join(c.describe() for c in conditions) or "always"
    guidance = (
        f"When {where}: {what}. "
        f"Evidence: {_evidence_sentence({w: per[w] for w in per}, unit)}; it helped on "
        f"{len(helped)} ({', '.join(helped)}), so it is a {tier} skill for {scope_words}."
    )
    title = f"{kind} {pattern} ({scope_words})"[:200]
    existing = [s for s in store.list(tier=tier, scope_key=scope_key, status=None, kind=kind)
                if s.pattern == pattern and s.scope_key == scope_key]
    evidence = evidence_union(helping)
    source_ids = {s.id or "" for s in helping}
    if not existing:
        skill = store.add(Skill(
            tier=tier, scope_key=scope_key, domain=scope_key if tier == "domain" else None,
            kind=kind, pattern=pattern, title=title, conditions=conditions, guidance=guidance,
            action=best.action, payload=payload, evidence=evidence, created_by="promotion",
            parent_ids=sorted(source_ids), dagster_run_id=run_id,
        ))
        result.changed.append(skill.id or "")
    else:
        current = existing[0]
        skill = store.new_version(
            current.id or "", title=title, guidance=guidance, action=best.action,
            conditions=conditions, payload=payload,
            evidence=[*current.evidence, *evidence],
            parent_ids=sorted(set(current.parent_ids) | source_ids), created_by="promotion",
            **({"dagster_run_id": run_id} if run_id is not None else {}),
        )
        if skill.version != current.version:
            result.changed.append(skill.id or "")
    for source in helping:
        if not store.has_edge(skill.id or "", source.id or "", "promoted_from"):
            store.add_edge(skill, source, "promoted_from", reason=reason)
            result.edges_added += 1
    return skill


def _hurt_side(
    store: SkillStore, partner: Skill, slug: str, delta: float, profile: dict[str, Any] | None,
    run_id: str | None = None,
) -> Skill:
    """The skill that states where the pattern hurt: a new competition skill on ``slug``
    (negative evidence, so it is never applied there) naming what hurt and where."""
    from haste_dagster.skills.extraction import action_paths, profile_conditions

    conditions = profile_conditions(action_paths(partner.action), profile) if (
        partner.action and profile) else []
    where = "; ".join(c.describe() for c in conditions) or "on this competition"
    return store.add(Skill(
        tier="competition", scope_key=slug, domain=partner.domain, kind=partner.kind,
        pattern=partner.pattern, title=f"{slug}: {partner.kind} {partner.pattern} hurt here"[:200],
        conditions=conditions,
        guidance=(f"When {where}: do not apply {partner.kind} {partner.pattern}. Evidence: "
                  f"tried on {slug} from {partner.scope_key or 'global'}, it moved the score "
                  f"by {delta:+.4g} (worse)."),
        action=partner.action, payload={**partner.payload, "hurt": True},
        evidence=[Evidence(slug=slug, delta=delta)], created_by="promotion",
        parent_ids=[partner.id or ""], dagster_run_id=run_id,
    ))


def _conflict_measured(
    store: SkillStore, a: Skill, b: Skill, per: dict[str, float], hurt: str,
    result: PromotionResult,
) -> None:
    helped = {w: d for w, d in per.items() if d > 0}
    reason = (f"{a.kind} {a.pattern} helped on "
              f"{', '.join(f'{w} ({d:+.3g})' for w, d in sorted(helped.items()))} and hurt on "
              f"{hurt} ({per[hurt]:+.3g})")
    for src, dst in ((a, b), (b, a)):
        if not store.has_edge(src.id or "", dst.id or "", "conflicts_with"):
            store.add_edge(src, dst, "conflicts_with", conditions=src.conditions, reason=reason)
            result.edges_added += 1
    result.conflicts.append((a.id or "", b.id or ""))


def promote_patterns_domain(
    store: SkillStore, domain: str, *, dagster_run_id: str | None = None
) -> PromotionResult:
    """Domain skills of kind rule/recipe from cross-evaluation evidence (see above)."""
    result = PromotionResult([], [], 0, [])
    with store.conn.transaction():
        lock_promotions(store)
        for kind in PATTERN_KINDS:
            groups: dict[str, list[Skill]] = defaultdict(list)
            for s in store.list(tier="competition", status="active", domain=domain, kind=kind):
                if s.pattern and not s.payload.get("hurt"):
                    groups[s.pattern].append(s)
            for pattern in sorted(groups):
                members = groups[pattern]
                evidence = measured_by_competition(store, members)
                profiles = {slug: [dict(row["profile"])]
                            for slug, row in _competitions(store, evidence).items()
                            if row["profile"] is not None}
                _promote_pattern(store, "domain", domain, kind, pattern, members, evidence,
                                 "competitions", result, profiles, dagster_run_id)
    return result


def promote_patterns_global(
    store: SkillStore, *, dagster_run_id: str | None = None
) -> PromotionResult:
    """Global skills of kind rule/recipe: the pattern's domain skills helped in >= 2
    domains. A use counts for the domain of the competition it was measured on, so a
    domain rule cross-evaluated in another domain (``skills.scope``) brings that domain's
    verdict; each domain's verdict is the mean measured effect there."""
    result = PromotionResult([], [], 0, [])
    with store.conn.transaction():
        lock_promotions(store)
        for kind in PATTERN_KINDS:
            groups: dict[str, list[Skill]] = defaultdict(list)
            for s in store.list(tier="domain", status="active", kind=kind):
                if s.pattern:
                    groups[s.pattern].append(s)
            for pattern in sorted(groups):
                members = groups[pattern]
                evidence: dict[str, list[tuple[str, float]]] = defaultdict(list)
                measured = measured_by_competition(store, members)
                domain_of = {s.id: s.domain or "" for s in members}
                measured_in = _competitions(store, measured)
                helped_on: dict[str, list[dict[str, Any]]] = defaultdict(list)
                for slug, pairs in measured.items():
                    row = measured_in.get(slug)
                    for skill_id, delta in pairs:
                        evidence[(row and row["domain"]) or domain_of[skill_id]].append(
                            (skill_id, delta))
                    if row and row["profile"] is not None and sum(d for _, d in pairs) > 0:
                        helped_on[row["domain"]].append(dict(row["profile"]))
                _promote_pattern(store, "global", None, kind, pattern, members, dict(evidence),
                                 "domains", result, helped_on, dagster_run_id)
    return result
