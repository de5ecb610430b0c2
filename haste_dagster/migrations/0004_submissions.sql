-- Graded submissions: predictions on the hidden test split (numpy .npy bytes) and the
-- grade, so "grade reproducible from stored predictions" can be checked at any time.
CREATE TABLE submissions (
    attempt_id  bigint PRIMARY KEY REFERENCES attempts (id) ON DELETE CASCADE,
    predictions bytea NOT NULL,
    grade       jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
