"""What a scoped load adds beside a competition's own and its domain's skills: the profile
text global skills are ranked against, and the cross-evaluation candidates."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from haste_dagster.skills.model import Condition

MAX_CANDIDATES = 4  # cross-evaluation candidates an attempt loads
MAX_FOREIGN = 1  # of them, rules promoted in another domain (the evidence a global needs)
# Conditions that only restate the domain a skill was learnt in (every skill of a domain
# has its task): a foreign rule is judged on the rest, its data conditions, or it could
# never be tried anywhere else. Whether it translates to this task is the spec space's
# call (agents.policy.resolve_skill_views).
SOURCE_DOMAIN_KEYS = frozenset({"task"})
# Windows (a lower and an upper bound) on these keys only say what scale of data a skill
# was measured on: extraction's rows x0.25-x4, a rule's rows per feature or text length
# x0.5-x2. They say where it was seen, not where it fails, and a candidate gated by them
# could be tried only on data of its source's size, so nothing would ever widen them. A
# candidate is tried outside them, the nearest first (`scale_distance`); its measured
# effect there widens them at promotion (`pattern_promotion`) or makes a conflict pair
# where it hurt. A one-sided bound ("rows < 2000") is a threshold someone stated: it stays.
SCALE_KEYS = frozenset({"rows", "rows_per_feature", "text_mean_chars"})


class Candidate(Protocol):
    """What choosing candidates reads: a `Skill`, or a `store_rows.CandidateRow` (the same
    fields of a stored row, without decoding the rest)."""

    @property
    def id(self) -> str | None: ...
    @property
    def kind(self) -> str: ...
    @property
    def pattern(self) -> str | None: ...
    @property
    def conditions(self) -> list[Condition]: ...
    @property
    def effect(self) -> float | None: ...


C = TypeVar("C", bound=Candidate)


def is_foreign(tier: str, scope_key: str | None, domain: str | None) -> bool:
    """A domain skill of another domain than ``domain`` (the competition's, if known)."""
    return domain is not None and tier == "domain" and scope_key != domain


def is_candidate(tier: str, scope_key: str | None, slug: str | None, domain: str | None) -> bool:
    """A cross-evaluation candidate on competition ``slug`` of ``domain``: a competition
    skill of another competition, or a domain skill of another domain."""
    other_competition = slug is not None and tier == "competition" and scope_key != slug
    return other_competition or is_foreign(tier, scope_key, domain)


def conditions_here(
    conditions: Sequence[Condition],
    kind: str,
    tier: str,
    scope_key: str | None,
    *,
    slug: str | None,
    domain: str | None,
) -> list[Condition]:
    """The ``conditions`` a skill (of ``kind``, ``tier``, ``scope_key``) must meet on
    competition ``slug`` of ``domain``: all of them; for a cross-evaluation candidate
    (`is_candidate`) all but its ``SCALE_KEYS`` windows; for a foreign rule (promoted in
    another domain) also all but ``SOURCE_DOMAIN_KEYS``."""
    strip = set(_windows(conditions)) if is_candidate(tier, scope_key, slug, domain) else set()
    if kind == "rule" and is_foreign(tier, scope_key, domain):
        strip |= SOURCE_DOMAIN_KEYS
    return [c for c in conditions if c.key not in strip]


def _windows(conditions: Sequence[Condition]) -> dict[str, tuple[float, float]]:
    """(low, high) of each ``SCALE_KEYS`` key bounded on both sides by ``conditions``."""
    bounds: dict[str, dict[str, float]] = {}
    for c in conditions:
        if c.key in SCALE_KEYS and c.op in (">=", "<=") and isinstance(c.value, int | float):
            bounds.setdefault(c.key, {})[c.op] = float(c.value)
    return {k: (b[">="], b["<="]) for k, b in bounds.items() if len(b) == 2}


def scale_distance(conditions: Sequence[Condition], profile: dict[str, Any]) -> float:
    """How far ``profile`` lies from the data a skill was measured on: the sum, over its
    ``SCALE_KEYS`` windows, of |ln(value / the window's geometric centre)| (0 at the
    source's own scale; a key this profile lacks adds nothing)."""
    total = 0.0
    for key, (low, high) in _windows(conditions).items():
        value = profile.get(key)
        if low > 0 and isinstance(value, int | float) and value > 0:
            total += abs(math.log(float(value) / math.sqrt(low * high)))
    return total


def cross_candidates(
    skills: Sequence[C],
    covered: set[str],
    foreign: Sequence[C] = (),
    slug: str = "",
    profile: dict[str, Any] | None = None,
) -> list[C]:
    """Skills from elsewhere to be tried (and their measured effect recorded) here: one per
    pattern not covered by a skill already in scope.

    ``skills``: recipes and rules learnt on other competitions of the domain, at most
    ``MAX_CANDIDATES``: recipes first (one prototype each), then the rest; within each, the
    one measured on data nearest in scale to ``profile`` first (`scale_distance`: the
    nearest tasks' lessons are the likeliest to hold, as in meta-learned warm starts), then
    the best measured effect. ``foreign``: domain rules of *other* domains. A pattern
    becomes global only on evidence from a second domain and nothing else tries it there,
    so they keep ``MAX_FOREIGN`` places even when the domain fills the rest. Many do not
    translate to this data or task (a classifier family on a regression), which only the
    spec space can tell, so all of them are returned and the agent keeps the first
    ``MAX_FOREIGN`` that do (``agents.policy``). They are ordered by a hash of (``slug``,
    pattern), not by effect: the best one would otherwise take the place on every
    competition of every other domain, even where it keeps failing, and the rest would
    never gather evidence. The hash spreads the tries, reproducibly."""
    here = profile or {}
    own = _best_per_pattern(skills, covered, here)
    others = _best_per_pattern(foreign, covered | {s.pattern for s in own if s.pattern}, here)
    others.sort(key=lambda s: hashlib.sha256(f"{slug}\0{s.pattern}".encode()).hexdigest())
    return [*own[: MAX_CANDIDATES - (MAX_FOREIGN if others else 0)], *others]


def _best_per_pattern(
    skills: Sequence[C], covered: set[str], profile: dict[str, Any]
) -> list[C]:
    def rank(s: C) -> tuple[float, float]:
        return (round(scale_distance(s.conditions, profile), 6), -(s.effect or 0.0))

    best: dict[str, C] = {}
    for s in skills:
        if not s.pattern or s.pattern in covered or (s.effect or 0.0) <= 0:
            continue
        if s.pattern not in best or rank(s) < rank(best[s.pattern]):
            best[s.pattern] = s
    return sorted(best.values(), key=lambda s: (s.kind != "recipe", *rank(s), s.id or ""))


def describe_profile(slug: str, domain: str, profile: dict[str, Any]) -> str:
    """Text describing a competition, embedded to rank global skills by relevance.

    Phrased like skill guidance ("right-skewed target", "high-cardinality categoricals")
    so the embedding lands near the skills that suit the data.
    """
    p = profile
    parts = [f"Competition {slug} in domain {domain.replace('_', ' ')}."]
    if p.get("task"):
        parts.append(f"Task: {str(p['task']).replace('_', ' ')}.")
    if p.get("rows") is not None:
        parts.append(
            f"{p['rows']} training rows, {p.get('n_features', '?')} features "
            f"({p.get('n_numeric', 0)} numeric, {p.get('n_categorical', 0)} categorical, "
            f"{p.get('n_text', 0)} text, {p.get('n_date', 0)} date)."
        )
    if p.get("has_text"):
        parts.append("Free-text columns: text classification with word and character n-grams.")
    if p.get("is_forecast"):
        parts.append(
            f"Time series forecasting with horizon {p.get('horizon')}: lags, rolling means, "
            "time-ordered validation."
        )
    elif p.get("has_date"):
        parts.append("Date columns: calendar features.")
    skew = p.get("target_skew")
    if isinstance(skew, int | float) and abs(skew) >= 1:
        parts.append(f"Skewed regression target (skew {skew:.2f}): log-transform the target.")
    card = p.get("max_cardinality")
    if isinstance(card, int | float) and card >= 50:
        parts.append(f"High-cardinality categorical columns ({card} levels): target encoding.")
    share = p.get("minority_class_share")
    if isinstance(share, int | float) and share < 0.2:
        parts.append(f"Imbalanced classes (minority share {share:.2f}): class weights.")
    missing = p.get("missing_rate")
    if isinstance(missing, int | float) and missing >= 0.05:
        parts.append(f"Many missing values ({missing:.0%}): imputation, missing indicators.")
    rows = p.get("rows")
    if isinstance(rows, int | float) and rows < 2000:
        parts.append("Small dataset: regularise, fewer and shallower trees.")
    return " ".join(parts)
