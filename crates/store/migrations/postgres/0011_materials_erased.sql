-- wangban schema v11: when retention erased a case's uploaded materials from the materials store
-- (after its personal fields; a material another unerased case still names is kept).
ALTER TABLE cases ADD COLUMN materials_erased_at BIGINT;
