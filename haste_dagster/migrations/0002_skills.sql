-- Skills in three tiers, their lineage edges, and their usage by attempts.
--
-- Skills are never edited in place: a change inserts a new version (same id, version + 1)
-- and a `supersedes` edge. The only columns an UPDATE may touch are `is_current` (which
-- version is the newest, needed for the unique index below) and `embedding` (derived from
-- the content by the embedder; rewritten only when the store moves to another embedder).
-- A trigger enforces this.
--
-- The embedding column has a fixed dimension because an HNSW index needs one: 384, the
-- default embedder (all-MiniLM-L6-v2). skill_embedding_meta records which embedder filled
-- it; the store refuses an embedder of another dimension or name (see skills/store.py).
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE skill_embedding_meta (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    dim         integer NOT NULL CHECK (dim > 0),
    embedder    text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE skills (
    pk              bigserial PRIMARY KEY,
    id              text NOT NULL CHECK (id ~ '^sk_[0-9a-f]{16}$'),
    version         integer NOT NULL CHECK (version >= 1),
    is_current      boolean NOT NULL DEFAULT true,
    tier            text NOT NULL CHECK (tier IN ('global', 'domain', 'competition')),
    scope_key       text,
    -- competition skills: the domain of their competition (promotion groups by it)
    domain          text,
    title           text NOT NULL,
    conditions      jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(conditions) = 'array'),
    guidance        text NOT NULL,
    action          jsonb,
    evidence        jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(evidence) = 'array'),
    embedding       vector(384) NOT NULL,
    status          text NOT NULL DEFAULT 'active'
                    CHECK (status IN ('active', 'merged', 'retired')),
    created_by      text NOT NULL
                    CHECK (created_by IN ('extraction', 'promotion', 'consolidation', 'seed')),
    parent_ids      jsonb NOT NULL DEFAULT '[]',
    -- no foreign key: skills imported from skill_assets/ cite attempts of other databases
    source_attempt  bigint,
    dagster_run_id  text,
    content_hash    text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((tier = 'global') = (scope_key IS NULL)),
    CHECK ((tier = 'global') = (domain IS NULL)),
    CHECK (tier <> 'domain' OR domain = scope_key),
    UNIQUE (id, version)
);
-- One current version per id, and one current skill per content in a scope (idempotent add).
CREATE UNIQUE INDEX skills_current_id ON skills (id) WHERE is_current;
CREATE UNIQUE INDEX skills_current_content
    ON skills (tier, (COALESCE(scope_key, '')), content_hash) WHERE is_current;
CREATE INDEX skills_scope ON skills (tier, scope_key) WHERE is_current AND status = 'active';
CREATE INDEX skills_domain ON skills (domain, tier) WHERE is_current;
CREATE INDEX skills_content_hash ON skills (content_hash) WHERE is_current;
CREATE INDEX skills_embedding_hnsw ON skills USING hnsw (embedding vector_cosine_ops);
-- Tiered loading ranks only active global skills: a partial HNSW index over just those keeps
-- that search from wading through every other tier (22 ms -> 1 ms at 100,000 skills).
CREATE INDEX skills_global_hnsw ON skills USING hnsw (embedding vector_cosine_ops)
    WHERE tier = 'global' AND is_current AND status = 'active';

CREATE FUNCTION skills_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (to_jsonb(NEW) - 'is_current' - 'embedding') IS DISTINCT FROM
       (to_jsonb(OLD) - 'is_current' - 'embedding') THEN
        RAISE EXCEPTION 'skills are never edited in place (skill %, version %): insert a new version',
            OLD.id, OLD.version;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER skills_immutable BEFORE UPDATE ON skills
    FOR EACH ROW EXECUTE FUNCTION skills_immutable();

-- Prefilter for scoped loading: false only when a numeric condition (<, <=, >, >=) on a
-- numeric profile value fails, or the profile lacks a conditioned key. Everything else is
-- left to the Python check (Skill.conditions_hold), which stays the one definition.
CREATE FUNCTION skill_conditions_may_hold(conditions jsonb, profile jsonb)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(bool_and(
        CASE
            WHEN jsonb_typeof(profile -> (c ->> 'key')) IS NULL
                 OR jsonb_typeof(profile -> (c ->> 'key')) = 'null' THEN false
            WHEN jsonb_typeof(c -> 'value') <> 'number'
                 OR jsonb_typeof(profile -> (c ->> 'key')) <> 'number' THEN true
            WHEN c ->> 'op' = '<'  THEN (profile ->> (c ->> 'key'))::numeric <  (c ->> 'value')::numeric
            WHEN c ->> 'op' = '<=' THEN (profile ->> (c ->> 'key'))::numeric <= (c ->> 'value')::numeric
            WHEN c ->> 'op' = '>'  THEN (profile ->> (c ->> 'key'))::numeric >  (c ->> 'value')::numeric
            WHEN c ->> 'op' = '>=' THEN (profile ->> (c ->> 'key'))::numeric >= (c ->> 'value')::numeric
            ELSE true
        END), true)
    FROM jsonb_array_elements(conditions) AS c
$$;

-- Lineage between skill versions. promoted_from: src (domain/global) was abstracted from
-- dst; merged_into: src (a near-duplicate) was merged into dst; supersedes: src is the
-- next version of dst; conflicts_with: src and dst disagree, each stored in both
-- directions with `conditions` = where src holds.
CREATE TABLE skill_edges (
    id           bigserial PRIMARY KEY,
    src_id       text NOT NULL,
    src_version  integer NOT NULL,
    dst_id       text NOT NULL,
    dst_version  integer NOT NULL,
    kind         text NOT NULL
                 CHECK (kind IN ('promoted_from', 'merged_into', 'conflicts_with', 'supersedes')),
    conditions   jsonb NOT NULL DEFAULT '[]',
    reason       text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (src_id, src_version) REFERENCES skills (id, version),
    FOREIGN KEY (dst_id, dst_version) REFERENCES skills (id, version),
    UNIQUE (src_id, src_version, dst_id, dst_version, kind),
    CHECK (src_id <> dst_id OR kind = 'supersedes')
);
CREATE INDEX skill_edges_dst ON skill_edges (dst_id, kind);
CREATE INDEX skill_edges_src ON skill_edges (src_id, kind);

-- Which attempts loaded a skill (event 'loaded', iteration_idx NULL) and which iterations
-- applied it (event 'applied', with kept and the score delta, positive = better).
CREATE TABLE skill_usage (
    id             bigserial PRIMARY KEY,
    attempt_id     bigint NOT NULL REFERENCES attempts (id) ON DELETE CASCADE,
    iteration_idx  integer,
    skill_id       text NOT NULL,
    skill_version  integer NOT NULL,
    event          text NOT NULL CHECK (event IN ('loaded', 'applied')),
    kept           boolean,
    delta          double precision,
    created_at     timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (skill_id, skill_version) REFERENCES skills (id, version),
    CHECK ((event = 'loaded') = (iteration_idx IS NULL))
);
CREATE UNIQUE INDEX skill_usage_once
    ON skill_usage (attempt_id, skill_id, event, (COALESCE(iteration_idx, -1)));
CREATE INDEX skill_usage_skill ON skill_usage (skill_id, event);

-- Usage statistics per skill id (all versions).
CREATE VIEW skill_stats AS
SELECT skill_id,
       count(DISTINCT attempt_id) FILTER (WHERE event = 'loaded')       AS loaded,
       count(*) FILTER (WHERE event = 'applied')                         AS applied,
       count(*) FILTER (WHERE event = 'applied' AND kept)                AS kept,
       avg(delta) FILTER (WHERE event = 'applied')                       AS mean_delta,
       coalesce(sum(delta) FILTER (WHERE event = 'applied' AND kept), 0) AS kept_delta_sum
FROM skill_usage
GROUP BY skill_id;

-- "Which attempts used this skill, and did it help?" in one query:
--   SELECT * FROM skill_attempts WHERE skill_id = 'sk_…' ORDER BY attempt_id;
CREATE VIEW skill_attempts AS
SELECT u.skill_id,
       u.attempt_id,
       a.slug,
       a.loading,
       bool_or(u.event = 'loaded')                                     AS loaded,
       count(*) FILTER (WHERE u.event = 'applied')                     AS applied,
       coalesce(bool_or(u.kept) FILTER (WHERE u.event = 'applied'), false) AS kept,
       max(u.delta) FILTER (WHERE u.event = 'applied' AND u.kept)      AS kept_delta,
       array_agg(u.iteration_idx ORDER BY u.iteration_idx)
           FILTER (WHERE u.event = 'applied')                          AS iterations,
       array_agg(DISTINCT u.skill_version)                             AS versions
FROM skill_usage u
JOIN attempts a ON a.id = u.attempt_id
GROUP BY u.skill_id, u.attempt_id, a.slug, a.loading;
