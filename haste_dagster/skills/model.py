"""The Skill model: what a skill says, where it applies, what backs it, where it came from.

A skill's *content* (tier, scope, title, conditions, guidance, action) determines its
``content_hash``; the first version's hash also names it (``sk_<16 hex>``), and the id then
stays the same across versions. Evidence, status and provenance are not content: finding the
same pattern again adds no new skill.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from haste_dagster.errors import SkillError

Tier = Literal["global", "domain", "competition"]
Status = Literal["active", "merged", "retired"]
CreatedBy = Literal["extraction", "promotion", "consolidation", "seed"]
Op = Literal["<", "<=", ">", ">=", "==", "!="]
LoadingMode = Literal["tiered", "flat", "none"]
# change: a kept literal patch; recipe: a whole best spec as a patch on the domain default;
# rule: a change stated relative to the data; prior: per-domain move statistics.
Kind = Literal["change", "recipe", "rule", "prior"]
KINDS: tuple[str, ...] = ("change", "recipe", "rule", "prior")

TIERS: tuple[str, ...] = ("global", "domain", "competition")
TIER_RANK = {"competition": 0, "domain": 1, "global": 2}

# The data-profile vocabulary (competitions.profile.DataProfile); a condition on any other
# key is almost always a typo that would silently never hold, so it is refused.
PROFILE_KEYS: frozenset[str] = frozenset(
    {
        "task",
        "rows",
        "n_features",
        "n_numeric",
        "n_categorical",
        "n_text",
        "n_date",
        "missing_rate",
        "max_cardinality",
        "n_classes",
        "minority_class_share",
        "target_skew",
        "has_text",
        "has_date",
        "is_forecast",
        "horizon",
        "rows_per_feature",
        "text_mean_chars",
        "seasonal_period",
    }
)

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_ID = re.compile(r"^sk_[0-9a-f]{16}$")
_FROZEN = ConfigDict(extra="forbid", frozen=True)


class Condition(BaseModel):
    """``profile[key] <op> value``; false when the profile lacks the key or holds null."""

    model_config = _FROZEN
    key: str
    op: Op
    value: bool | int | float | str

    @field_validator("key")
    @classmethod
    def _known_key(cls, key: str) -> str:
        if key not in PROFILE_KEYS:
            raise ValueError(
                f"unknown data-profile key {key!r}; allowed: {', '.join(sorted(PROFILE_KEYS))}"
            )
        return key

    @field_validator("value")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"condition value must be finite, got {value!r}")
        return value

    def holds(self, profile: dict[str, Any]) -> bool:
        actual = profile.get(self.key)
        if actual is None:
            return False
        try:
            return bool(_OPS[self.op](actual, self.value))
        except TypeError:  # e.g. a number compared with a string: not applicable
            return False

    def describe(self) -> str:
        return f"{self.key} {self.op} {json.dumps(self.value)}"


class Evidence(BaseModel):
    """A measured effect: in attempt/iteration on competition ``slug`` the change moved the
    metric by ``delta`` (positive = better, in the metric's own direction)."""

    model_config = _FROZEN
    attempt_id: int | None = None
    iteration: int | None = None
    slug: str
    delta: float

    @field_validator("delta")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"evidence delta must be finite, got {value!r}")
        return value


class SkillStats(BaseModel):
    """Usage statistics derived from ``skill_usage`` (all versions of the skill)."""

    model_config = _FROZEN
    loaded: int = 0  # attempts that had the skill in scope
    applied: int = 0  # iterations whose change the skill motivated
    kept: int = 0  # of those, changes that were kept
    mean_delta: float | None = None  # mean delta over applications
    kept_delta_sum: float = 0.0  # sum of the deltas of the kept applications

    @property
    def kept_rate(self) -> float | None:
        return self.kept / self.applied if self.applied else None


class Provenance(BaseModel):
    model_config = _FROZEN
    created_by: CreatedBy
    parent_ids: list[str] = Field(default_factory=list)
    source_attempt: int | None = None
    dagster_run_id: str | None = None


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _clean_text(text: str) -> str:
    # Normalised line endings and no trailing spaces: the Markdown export must round-trip.
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return "\n".join(lines).strip()


def normalise_action(action: Any) -> dict[str, Any] | None:
    """A solution-spec Patch in its canonical JSON form; SkillError if it is not one."""
    if action is None:
        return None
    from haste_dagster.errors import SpecError
    from haste_dagster.solution.spec import parse_patch

    try:
        return parse_patch(action).model_dump(mode="json")
    except SpecError as exc:
        raise SkillError(f"skill action: {exc}") from None


def content_hash(
    tier: str,
    scope_key: str | None,
    title: str,
    conditions: list[Condition],
    guidance: str,
    action: dict[str, Any] | None,
    kind: str = "change",
    pattern: str | None = None,
) -> str:
    payload: dict[str, Any] = {
        "tier": tier,
        "scope_key": scope_key,
        "title": " ".join(title.split()).lower(),
        "conditions": sorted(canonical_json(c.model_dump()) for c in conditions),
        "guidance": " ".join(guidance.split()).lower(),
        "action": action,
    }
    # Only when not the defaults, so every skill written before kinds existed keeps its id.
    if kind != "change":
        payload["kind"] = kind
    if pattern is not None:
        payload["pattern"] = pattern
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def mean_effect(
    evidence_sum: float, evidence_n: int, applied: int, mean_delta: float | None
) -> float | None:
    """A skill's mean measured delta over its evidence (``evidence_n`` deltas summing to
    ``evidence_sum``) and its ``applied`` applications (mean delta ``mean_delta``); None
    when nothing was measured. `Skill.effect`, computable from a row's aggregates alone."""
    n = evidence_n + applied
    if n == 0:
        return None
    return (evidence_sum + (mean_delta or 0.0) * applied) / n


class Skill(BaseModel):
    """One version of a skill. Build new ones with ``id=None``; the store assigns the id."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    id: str | None = None
    version: int = Field(default=1, ge=1)
    tier: Tier
    scope_key: str | None = None
    # The domain of a competition skill's competition (promotion groups by it); equals
    # scope_key for domain skills; None for global ones.
    domain: str | None = None
    title: str = Field(min_length=3, max_length=200)
    conditions: list[Condition] = Field(default_factory=list)
    guidance: str = Field(min_length=1)
    action: dict[str, Any] | None = None
    kind: Kind = "change"
    # The normalised identity promotion groups by (a rule's key, a recipe's family): the
    # same lesson learnt on two competitions has one pattern whatever its literal values.
    pattern: str | None = None
    # Kind-specific data that is not content: a recipe's margin over the default, a prior's
    # move counts. Not hashed: a new measurement of the same recipe is the same skill.
    payload: dict[str, Any] = Field(default_factory=dict)
    evidence: list[Evidence] = Field(default_factory=list)
    stats: SkillStats = Field(default_factory=SkillStats)
    status: Status = "active"
    created_by: CreatedBy = "extraction"
    parent_ids: list[str] = Field(default_factory=list)
    source_attempt: int | None = None
    dagster_run_id: str | None = None
    content_hash: str = ""
    embedding: list[float] | None = Field(default=None, repr=False)
    created_at: datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, data: Any) -> Any:
        if isinstance(data, dict) and "action" in data:
            data = {**data, "action": normalise_action(data["action"])}
        return data

    @model_validator(mode="after")
    def _check(self) -> Skill:
        if self.tier == "global" and self.scope_key is not None:
            raise ValueError("a global skill has no scope_key")
        if self.tier != "global" and not (self.scope_key or "").strip():
            raise ValueError(f"a {self.tier} skill needs a scope_key (its domain or slug)")
        if self.tier == "domain":
            if self.domain not in (None, self.scope_key):
                raise ValueError(
                    f"a domain skill's domain must be its scope_key {self.scope_key!r}"
                )
            object.__setattr__(self, "domain", self.scope_key)
        elif self.tier == "global" and self.domain is not None:
            raise ValueError("a global skill has no domain")
        elif self.tier == "competition" and not (self.domain or "").strip():
            raise ValueError("a competition skill needs the domain of its competition")
        if self.id is not None and not _ID.match(self.id):
            raise ValueError(f"skill id {self.id!r} is not of the form sk_<16 hex digits>")
        object.__setattr__(self, "title", " ".join(self.title.split()))
        object.__setattr__(self, "guidance", _clean_text(self.guidance))
        object.__setattr__(self, "conditions", sorted_conditions(self.conditions))
        object.__setattr__(self, "parent_ids", sorted(set(self.parent_ids)))
        object.__setattr__(self, "evidence", sorted_evidence(self.evidence))
        object.__setattr__(
            self,
            "content_hash",
            content_hash(
                self.tier, self.scope_key, self.title, self.conditions, self.guidance,
                self.action, self.kind, self.pattern,
            ),
        )
        return self

    @property
    def provenance(self) -> Provenance:
        return Provenance(
            created_by=self.created_by,
            parent_ids=list(self.parent_ids),
            source_attempt=self.source_attempt,
            dagster_run_id=self.dagster_run_id,
        )

    def new_id(self) -> str:
        """The id a first version with this content gets: stable across databases."""
        return "sk_" + self.content_hash[:16]

    def embedding_text(self) -> str:
        """What is embedded: the title, the guidance and where the skill applies."""
        where = "; ".join(c.describe() for c in self.conditions)
        return f"{self.title}\n{self.guidance}" + (f"\nApplies when: {where}" if where else "")

    @property
    def utility(self) -> float:
        """Expected improvement one application brings: the mean, over every recorded trial
        (evidence, which records kept changes, plus applications), of the delta retained
        (the delta when kept, 0 when the change was dropped). 0 when never tried."""
        trials = len(self.evidence) + self.stats.applied
        if trials == 0:
            return 0.0
        return (sum(e.delta for e in self.evidence) + self.stats.kept_delta_sum) / trials

    @property
    def effect(self) -> float | None:
        """Mean measured delta (evidence and applications, kept or not); None if unmeasured.
        Promotion decides on this: positive = the change helped where it was tried."""
        return mean_effect(sum(e.delta for e in self.evidence), len(self.evidence),
                           self.stats.applied, self.stats.mean_delta)

    def conditions_hold(self, profile: dict[str, Any]) -> bool:
        return all(c.holds(profile) for c in self.conditions)

    def as_json(self, *, with_embedding: bool = False) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude={"embedding"})
        data["stats"]["kept_rate"] = self.stats.kept_rate
        data["utility"] = self.utility
        if with_embedding:
            data["embedding"] = self.embedding
        return data


def sorted_evidence(evidence: list[Evidence]) -> list[Evidence]:
    """Canonical order, duplicates dropped: the same measurement never counts twice."""

    def key(e: Evidence) -> tuple[Any, ...]:
        return (e.slug, e.attempt_id is None, e.attempt_id or 0, e.iteration or -1, e.delta)

    unique = {(e.slug, e.attempt_id, e.iteration): e for e in sorted(evidence, key=key)}
    return sorted(unique.values(), key=key)


def sorted_conditions(conditions: list[Condition]) -> list[Condition]:
    unique = {canonical_json(c.model_dump()): c for c in conditions}
    return [unique[k] for k in sorted(unique)]


def validate_skill(data: dict[str, Any], where: str = "skill") -> Skill:
    """A Skill from untrusted data; SkillError naming ``where`` and the bad field."""
    from pydantic import ValidationError

    try:
        return Skill.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'skill'}: {e['msg']}" for e in exc.errors()
        )
        raise SkillError(f"{where}: {problems}") from None
