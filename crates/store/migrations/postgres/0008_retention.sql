-- wangban schema v8: retention. When a closed case's personal data was erased (NULL: kept).
ALTER TABLE cases ADD COLUMN erased_at BIGINT;
