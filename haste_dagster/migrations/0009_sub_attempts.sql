-- Multi-target competitions are solved one target at a time: one attempt row per target
-- (a sub-attempt, holding that target's iterations) under the attempt that holds the
-- combined grade and submission. Single-target attempts keep both columns NULL.
ALTER TABLE attempts ADD COLUMN parent_id bigint REFERENCES attempts (id) ON DELETE CASCADE;
ALTER TABLE attempts ADD COLUMN target text;
ALTER TABLE attempts ADD CONSTRAINT attempts_sub_has_target
    CHECK ((parent_id IS NULL) = (target IS NULL));
CREATE UNIQUE INDEX attempts_sub_target ON attempts (parent_id, target)
    WHERE parent_id IS NOT NULL;
