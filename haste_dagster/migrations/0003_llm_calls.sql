-- LLM token ledger and the orchestrator's promotion decisions.

-- One row per HTTP call to the LLM endpoint, failed ones included (ok = false, error set).
-- attempt_id has no foreign key on purpose: the ledger is an append-only audit log and a
-- call must be recordable even while its attempt row is written on another connection.
CREATE TABLE llm_calls (
    id                bigserial PRIMARY KEY,
    created_at        timestamptz NOT NULL DEFAULT now(),
    agent_level       text NOT NULL
                      CHECK (agent_level IN ('orchestrator', 'specialist', 'competition')),
    purpose           text NOT NULL,
    attempt_id        bigint,
    campaign_id       text,
    model             text NOT NULL,
    prompt_tokens     integer NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens integer NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    latency_s         double precision NOT NULL DEFAULT 0,
    ok                boolean NOT NULL,
    error             text
);
CREATE INDEX llm_calls_attempt_idx ON llm_calls (attempt_id) WHERE attempt_id IS NOT NULL;
CREATE INDEX llm_calls_campaign_idx ON llm_calls (campaign_id) WHERE campaign_id IS NOT NULL;

-- Every label the orchestrator's LLM gave a learning, and whether the evidence rule let it
-- through. The LLM proposes, evidence decides: `allowed` is the evidence verdict.
CREATE TABLE promotion_decisions (
    id               bigserial PRIMARY KEY,
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempt_id       bigint,
    learning         text NOT NULL,
    proposed_tier    text,
    label            text NOT NULL
                     CHECK (label IN ('skip', 'competition', 'domain', 'global', 'conflict')),
    allowed          boolean NOT NULL,
    reason           text NOT NULL,
    abstraction      text,
    conditions       text,
    related_skill_ids jsonb NOT NULL DEFAULT '[]',
    evidence         jsonb NOT NULL DEFAULT '[]'
);
CREATE INDEX promotion_decisions_attempt_idx ON promotion_decisions (attempt_id);
