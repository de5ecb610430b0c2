"""How skills are stored and read back: the SQL column lists, the usage-statistics join,
and the fast decoding of stored rows into Skills (see ``SkillStore``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import JsonbLoader

from haste_dagster.errors import SkillError
from haste_dagster.skills.model import (
    Condition,
    Evidence,
    Skill,
    SkillStats,
    canonical_json,
    mean_effect,
)

COLUMNS = """s.id, s.version, s.tier, s.scope_key, s.domain, s.title, s.conditions, s.guidance,
    s.action, s.evidence, s.status, s.created_by, s.parent_ids, s.source_attempt,
    s.dagster_run_id, s.content_hash, s.created_at, s.kind, s.pattern, s.payload"""

# Usage statistics of one skill id, through the skill_usage index (a LATERAL join, so a
# query for a few skills never aggregates the whole usage table).
def stats_join(alias: str) -> str:
    return _STATS_JOIN_TEMPLATE.replace("{alias}", alias)


# A screened use (tried against the default outside the iterations) counts as an
# application: kept when it beat the default, with its measured delta.
_STATS_JOIN_TEMPLATE = """LEFT JOIN LATERAL (
    SELECT count(DISTINCT u.attempt_id) FILTER (WHERE u.event = 'loaded') AS loaded,
           count(*) FILTER (WHERE u.event <> 'loaded') AS applied,
           count(*) FILTER (WHERE u.event <> 'loaded' AND u.kept) AS kept,
           avg(u.delta) FILTER (WHERE u.event <> 'loaded') AS mean_delta,
           coalesce(sum(u.delta) FILTER (WHERE u.event <> 'loaded' AND u.kept), 0)
               AS kept_delta_sum
    FROM skill_usage u WHERE u.skill_id = {alias}.id) st ON true"""

INSERT_COLUMNS = """id, version, tier, scope_key, domain, title, conditions, guidance, action,
    evidence, embedding, status, created_by, parent_ids, source_attempt, dagster_run_id,
    content_hash, kind, pattern, payload"""
N_INSERT = 20

SELECT_SKILLS = f"SELECT {COLUMNS}, st.* FROM skills s {stats_join('s')}"

# What choosing among cross-evaluation candidates reads (`CandidateRow`): a store holds
# many more of them than a load returns, and a whole row costs far more to decode.
SELECT_CANDIDATES = f"""SELECT s.id, s.tier, s.scope_key, s.kind, s.pattern, s.conditions,
    jsonb_array_length(s.evidence) AS evidence_n,
    (SELECT coalesce(sum((e ->> 'delta')::float8), 0) FROM jsonb_array_elements(s.evidence) e)
        AS evidence_sum,
    st.applied, st.mean_delta
    FROM skills s {stats_join('s')}"""

# Fields a new version may change; anything else (id, version, hash...) is the store's.
VERSIONED_FIELDS = (
    "tier",
    "scope_key",
    "domain",
    "title",
    "conditions",
    "guidance",
    "action",
    "evidence",
    "status",
    "created_by",
    "parent_ids",
    "source_attempt",
    "dagster_run_id",
    "kind",
    "pattern",
    "payload",
)


# The C scanner of one decoder, called directly: PostgreSQL writes jsonb text with no
# whitespace around the value, so ``decode``'s two whitespace matches and its Python frame
# (half the cost of decoding a short value) have nothing to do.
_JSON = json.JSONDecoder()
_JSON_SCAN = _JSON.scan_once


class JsonbText(JsonbLoader):
    """jsonb text → Python values, as psycopg's loader gives them, at a third of its cost:
    ``json.loads`` on bytes first sniffs their encoding, and a scoped load decodes five
    jsonb columns for each of ~150 rows."""

    def load(self, data: Any) -> Any:
        text = str(data, "utf-8")
        try:
            value, end = _JSON_SCAN(text, 0)
        except StopIteration:
            end = -1
        # anything but jsonb's own output (padding, trailing data): decode's error or value
        return value if end == len(text) else _JSON.decode(text)


_FIELDS: dict[type, frozenset[str]] = {}


def construct(cls: type, values: dict[str, Any]) -> Any:
    """``cls.model_construct(**values)`` for a row that holds every field of ``cls``, at a
    fraction of its cost (pydantic's walks every field for defaults and aliases; decoding is
    most of a scoped load at 100,000 skills). Anything else goes through model_construct."""
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _FIELDS[cls] = frozenset(cls.model_fields)
    if values.keys() != fields:
        return cls.model_construct(**values)
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", set(values))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


def row_stats(row: dict[str, Any]) -> SkillStats:
    return construct(
        SkillStats,
        {
            "loaded": row["loaded"] or 0,
            "applied": row["applied"] or 0,
            "kept": row["kept"] or 0,
            "mean_delta": row["mean_delta"],
            "kept_delta_sum": float(row["kept_delta_sum"] or 0.0),
        },
    )


def row_conditions(row: dict[str, Any]) -> list[Condition]:
    return [construct(Condition, dict(c)) for c in row["conditions"]]


def row_to_skill(row: dict[str, Any], conditions: list[Condition] | None = None) -> Skill:
    """A Skill from a stored row without re-validation: rows are validated when written and
    never edited (a trigger enforces it), and loading is on the hot path of every attempt.
    ``SkillStore.validate_all`` re-checks every stored version in full. ``conditions``: the
    row's already decoded conditions."""
    data = {k: row[k] for k in ("id", "version", *VERSIONED_FIELDS, "created_at")}
    data["conditions"] = row_conditions(row) if conditions is None else conditions
    data["evidence"] = [construct(Evidence, dict(e)) for e in data["evidence"]]
    data["parent_ids"] = list(data["parent_ids"])
    data["payload"] = dict(data["payload"] or {})
    data.update(stats=row_stats(row), content_hash=row["content_hash"], embedding=None)
    return construct(Skill, data)


@dataclass(frozen=True)
class CandidateRow:
    """What choosing a cross-evaluation candidate needs of a stored skill (`scope`)."""

    id: str
    tier: str
    scope_key: str | None
    kind: str
    pattern: str | None
    conditions: list[Condition]
    effect: float | None


def applicable_skills(rows: list[dict[str, Any]], profile: dict[str, Any]) -> list[Skill]:
    """The rows whose conditions hold on ``profile`` (`holding`), decoded."""
    return [row_to_skill(row, conditions) for row, conditions in holding(rows, profile)]


def applicable_candidates(
    rows: list[dict[str, Any]], profile: dict[str, Any], domain: str, slug: str
) -> list[CandidateRow]:
    """The ``SELECT_CANDIDATES`` rows whose conditions hold on ``profile`` (`holding`)."""
    return [
        CandidateRow(row["id"], row["tier"], row["scope_key"], row["kind"], row["pattern"],
                     conditions, mean_effect(float(row["evidence_sum"]), row["evidence_n"],
                                             row["applied"] or 0, row["mean_delta"]))
        for row, conditions in holding(rows, profile, domain, slug)
    ]


def holding(
    rows: list[dict[str, Any]],
    profile: dict[str, Any],
    domain: str | None = None,
    slug: str | None = None,
) -> Iterator[tuple[dict[str, Any], list[Condition]]]:
    """(row, its conditions) of the rows whose conditions hold on ``profile``
    (`Skill.conditions_hold`: every `Condition.holds`), checked before anything else of a
    row is decoded. With the competition's ``domain`` and ``slug``, a cross-evaluation
    candidate (a skill of another competition or another domain) is checked on
    `skills.scope.conditions_here`."""
    from haste_dagster.skills.scope import conditions_here

    for row in rows:
        conditions = row_conditions(row)
        here = conditions_here(conditions, row["kind"], row["tier"], row["scope_key"],
                               slug=slug, domain=domain)
        if all(c.holds(profile) for c in here):
            yield row, conditions


def validated_skill(row: dict[str, Any]) -> Skill:
    data = {k: row[k] for k in ("id", "version", *VERSIONED_FIELDS, "created_at")}
    try:
        skill = Skill.model_validate({**data, "stats": row_stats(row)})
    except (ValueError, SkillError) as exc:
        raise SkillError(
            f"skill {row['id']} v{row['version']}: stored row is invalid: {exc}"
        ) from None
    if skill.content_hash != row["content_hash"]:
        raise SkillError(
            f"skill {row['id']} v{row['version']}: content_hash does not match its content"
        )
    return skill




def same_version(a: Skill, b: Skill) -> bool:
    """Equal in everything a version records (creator and run aside: re-stating is no
    change, so a later run promoting the same pattern keeps the version that first did)."""
    fields = set(VERSIONED_FIELDS) - {"created_by", "dagster_run_id"}
    return canonical_json(a.model_dump(mode="json", include=fields)) == canonical_json(
        b.model_dump(mode="json", include=fields)
    )
