-- An attempt's skills are fixed once: when it starts, or earlier, when a parallel campaign
-- phase fixes every attempt of the phase against the store as it stood when the phase began
-- (so the order in which a work queue runs them cannot change what any of them loads).
-- NULL means "not fixed yet"; '[]' means "fixed, and nothing was in scope".
ALTER TABLE attempts ALTER COLUMN skills_loaded DROP NOT NULL,
                     ALTER COLUMN skills_loaded DROP DEFAULT;
-- Attempts that never started their loop had the old default, not a choice of skills.
UPDATE attempts SET skills_loaded = NULL
 WHERE initial_spec IS NULL AND status <> 'finished' AND skills_loaded = '[]'::jsonb;
