-- wangban schema v12 (SQLite; the PostgreSQL file says what and why): the materials each
-- submission of a case named, filled from the stored applications.
CREATE TABLE case_materials (
    case_id TEXT NOT NULL,
    submission BIGINT NOT NULL,
    material TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (case_id, submission, material)
);
CREATE INDEX case_materials_by_name ON case_materials (sha256);
INSERT INTO case_materials (case_id, submission, material, sha256)
SELECT c.case_id, 1, m.material, LOWER(json_extract(c.application, '$.materials.' || m.material || '.sha256'))
FROM cases c
CROSS JOIN (SELECT 'photo' AS material UNION ALL SELECT 'signature'
            UNION ALL SELECT 'id_card_front' UNION ALL SELECT 'id_card_back') AS m
WHERE json_valid(c.application)
  AND json_type(c.application, '$.materials.' || m.material) = 'object'
  AND json_type(c.application, '$.materials.' || m.material || '.sha256') = 'text';
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
