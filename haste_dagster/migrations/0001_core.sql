-- Competitions, attempts and their refinement iterations.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE competitions (
    slug        text PRIMARY KEY,
    domain      text NOT NULL,
    task        text NOT NULL,
    metric      text NOT NULL,
    definition  jsonb NOT NULL,
    profile     jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE attempts (
    id                bigserial PRIMARY KEY,
    slug              text NOT NULL,
    policy            text NOT NULL,
    loading           text NOT NULL CHECK (loading IN ('tiered', 'flat', 'none')),
    seed              integer NOT NULL,
    budget_iterations integer NOT NULL,
    status            text NOT NULL DEFAULT 'running'
                      CHECK (status IN ('running', 'finished', 'failed')),
    error             text,
    initial_spec      jsonb,
    best_spec         jsonb,
    best_cv           double precision,
    test_score        double precision,
    medal             text,
    result            jsonb,
    skills_loaded     jsonb NOT NULL DEFAULT '[]',
    dagster_run_id    text,
    label             text,
    started_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz
);
CREATE INDEX attempts_slug_idx ON attempts (slug, started_at DESC);

CREATE TABLE iterations (
    attempt_id        bigint NOT NULL REFERENCES attempts (id) ON DELETE CASCADE,
    idx               integer NOT NULL,
    patch             jsonb,
    rationale         text,
    skill_ids         jsonb NOT NULL DEFAULT '[]',
    cv_mean           double precision,
    cv_std            double precision,
    fold_scores       jsonb,
    kept              boolean NOT NULL DEFAULT false,
    incumbent_before  double precision,
    seconds           double precision NOT NULL DEFAULT 0,
    prompt_tokens     integer NOT NULL DEFAULT 0,
    completion_tokens integer NOT NULL DEFAULT 0,
    error             text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (attempt_id, idx)
);
