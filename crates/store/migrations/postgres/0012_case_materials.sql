-- wangban schema v12: every material each submission of a case named (the first submission is 1,
-- each accepted resubmission the next): what the reviewer API may serve for the case, what changed
-- between rounds, and what retention erases (earlier rounds' files too). Indexed by name, so
-- "does a kept case still name this file" is a lookup. Filled from the stored applications.
CREATE TABLE case_materials (
    case_id TEXT NOT NULL,
    submission BIGINT NOT NULL,
    material TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (case_id, submission, material)
);
CREATE INDEX case_materials_by_name ON case_materials (sha256);
INSERT INTO case_materials (case_id, submission, material, sha256)
SELECT c.case_id, 1, m.material, LOWER(c.application::jsonb -> 'materials' -> m.material ->> 'sha256')
FROM cases c
CROSS JOIN (VALUES ('photo'), ('signature'), ('id_card_front'), ('id_card_back')) AS m (material)
WHERE jsonb_typeof(c.application::jsonb -> 'materials' -> m.material) = 'object'
  AND jsonb_typeof(c.application::jsonb -> 'materials' -> m.material -> 'sha256') = 'string';
-- Stored files that did not hash to their names (integrity errors), by name: where they were
-- read (intake, the reviewer API), of which case, when first and last, how often. For operators.
CREATE TABLE material_problems (
    sha256 TEXT PRIMARY KEY,
    case_id TEXT,
    seen_by TEXT NOT NULL,
    first_at BIGINT NOT NULL,
    last_at BIGINT NOT NULL,
    times BIGINT NOT NULL
);
