"""Search priors: which kinds of move were tried and kept in a domain.

One skill of kind ``prior`` per domain (domain tier), rewritten as a new version whenever
the counts change. Its payload ``moves`` maps a move key (the heuristic's: a parameter or
step path, ``family:<name>``, ``trade:learning_rate``) to ``[tried, kept]`` over every
exploratory iteration of the domain's attempts; the heuristic policy weights its move draw
by them (``agents.heuristic.move_priors``), the offline analogue of the paper's kept rate
rising as skills accumulate.
"""

from __future__ import annotations

from typing import Any

from haste_dagster.skills.model import Skill
from haste_dagster.skills.store import SkillStore

MIN_TRIES = 3  # moves tried fewer times are left out of the guidance text (not the payload)


def prior_guidance(domain: str, moves: dict[str, list[int]], attempts: int) -> str:
    ranked = sorted(
        ((k, t, kp) for k, (t, kp) in moves.items() if t >= MIN_TRIES),
        key=lambda m: (-(m[2] + 1) / (m[1] + 2), m[0]),
    )
    tried = sum(t for t, _ in moves.values())
    kept = sum(k for _, k in moves.values())
    best = ", ".join(f"{k} (kept {kp}/{t})" for k, t, kp in ranked[:5]
                     if (kp + 1) / (t + 2) >= 0.5) or "none yet"
    worst = ", ".join(f"{k} (kept {kp}/{t})" for k, t, kp in ranked[-3:][::-1]
                      if (kp + 1) / (t + 2) < 0.5) or "none"
    return (
        f"When searching a {domain.replace('_', ' ')} competition, try first the kinds of "
        f"change that were kept most often in this domain: {best}; try last: {worst}. "
        f"Evidence: {kept} of {tried} exploratory changes kept over {attempts} attempts."
    )


def write_domain_prior(
    store: SkillStore, domain: str, moves: dict[str, list[int]], attempts: int
) -> Skill | None:
    """The domain's prior skill with these counts (new, a new version, or unchanged)."""
    moves = {k: [int(v[0]), int(v[1])] for k, v in sorted(moves.items()) if v[0] > 0}
    if not moves:
        return None
    payload: dict[str, Any] = {"moves": moves, "attempts": attempts}
    guidance = prior_guidance(domain, moves, attempts)
    title = f"Search prior: moves kept in {domain.replace('_', ' ')}"
    with store.conn.transaction():
        existing = [s for s in store.list(tier="domain", scope_key=domain, status=None,
                                          kind="prior")]
        if existing:
            return store.new_version(existing[0].id or "", guidance=guidance, payload=payload,
                                     created_by="promotion")
        return store.add(Skill(
            tier="domain", scope_key=domain, kind="prior", pattern=f"prior:{domain}",
            title=title, guidance=guidance, payload=payload, created_by="promotion",
        ))
