-- The specialist's staged pipeline (prototype screen → winner and runner-up branches →
-- ensemble). An attempt says which pipeline ran it and keeps its plan (the screened
-- prototypes, the budget split) so a resume follows the same plan; each iteration says
-- which stage/branch it belongs to. Straight-line attempts keep branch 'main'.
ALTER TABLE attempts ADD COLUMN pipeline text NOT NULL DEFAULT 'straight'
    CHECK (pipeline IN ('straight', 'staged'));
ALTER TABLE attempts ADD COLUMN plan jsonb;

ALTER TABLE iterations ADD COLUMN branch text NOT NULL DEFAULT 'main'
    CHECK (branch IN ('main', 'screen', 'winner', 'runner_up', 'ensemble'));
-- The whole spec a row evaluated when it is not the incumbent plus a patch (a screened
-- prototype, the start of a branch), and stage details (prototype name, ensemble members).
ALTER TABLE iterations ADD COLUMN spec jsonb;
ALTER TABLE iterations ADD COLUMN detail jsonb;
