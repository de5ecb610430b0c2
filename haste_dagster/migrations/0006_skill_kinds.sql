-- Skills that can recur (issue 13): a skill's kind, the normalised pattern it stands for,
-- and a structured payload; cross-evaluation usage; promotion decisions with their reasons.
--
-- kind: 'change' (a kept literal patch, as before), 'recipe' (a whole best spec as a patch
-- on the domain default, tried in the prototype screen), 'rule' (a change stated relative
-- to the data: one pattern across competitions), 'prior' (which kinds of move were tried
-- and kept in a domain; seeds the heuristic's move priors).
-- pattern: the normalised identity promotion groups by (rules, recipes; NULL otherwise).
-- payload: kind-specific data (a recipe's margin, a rule's key, a prior's move counts).
ALTER TABLE skills
    ADD COLUMN kind text NOT NULL DEFAULT 'change'
        CHECK (kind IN ('change', 'recipe', 'rule', 'prior')),
    ADD COLUMN pattern text,
    ADD COLUMN payload jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(payload) = 'object');
CREATE INDEX skills_pattern ON skills (kind, pattern) WHERE is_current;

-- 'screened': a skill tried outside the refinement iterations (a prototype in the screen,
-- the skill-shaped initial spec against the plain-default control), with its delta against
-- the default on the same fold; iteration_idx numbers the evaluation within the attempt.
ALTER TABLE skill_usage DROP CONSTRAINT skill_usage_event_check;
ALTER TABLE skill_usage DROP CONSTRAINT skill_usage_check;
ALTER TABLE skill_usage ADD CONSTRAINT skill_usage_event_check
    CHECK (event IN ('loaded', 'applied', 'screened'));
ALTER TABLE skill_usage ADD CONSTRAINT skill_usage_check
    CHECK ((event = 'loaded') = (iteration_idx IS NULL));

-- Every promotion decision over a pattern, kept with its reason: promoted, refused, or a
-- conflict. One row per (tier, scope, pattern, evidence digest): re-running promotion on
-- the same evidence records nothing new; new evidence records a new decision, old ones stay.
CREATE TABLE skill_decisions (
    id          bigserial PRIMARY KEY,
    tier        text NOT NULL CHECK (tier IN ('global', 'domain')),
    scope_key   text NOT NULL DEFAULT '',  -- '' for global
    pattern     text NOT NULL,
    decision    text NOT NULL CHECK (decision IN ('promoted', 'refused', 'conflict')),
    reason      text NOT NULL,
    skill_id    text,
    source_ids  jsonb NOT NULL DEFAULT '[]',
    evidence    jsonb NOT NULL DEFAULT '[]',
    digest      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tier, scope_key, pattern, digest)
);
CREATE INDEX skill_decisions_pattern ON skill_decisions (pattern, id);
