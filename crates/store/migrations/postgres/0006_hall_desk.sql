-- wangban schema v6: the pickup hall desk (the exit-entry hall of the hukou district, where the
-- applicant collects a document that is not sent by courier, or that the courier brought back)

-- halls and their staff, loaded from the reviewers file at start, as offices and reviewers are
CREATE TABLE halls (
    hall_id     TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    -- hukou district codes the hall serves, comma-separated; the longest prefix wins
    districts   TEXT NOT NULL
);
CREATE TABLE hall_staff (
    staff_id     TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    -- SHA-256 (hex) of the staff member's bearer token: the token itself is never stored
    token_sha256 TEXT NOT NULL UNIQUE,
    -- the halls they work at, comma-separated
    halls        TEXT NOT NULL,
    active       BIGINT NOT NULL
);

-- one row per document sent to a hall: sent by the centre (or brought back by the courier),
-- arrived at the counter, collected by the applicant
CREATE TABLE hall_documents (
    case_id      TEXT PRIMARY KEY,
    hall_id      TEXT NOT NULL,
    sent_at      BIGINT NOT NULL,
    arrived_at   BIGINT,
    arrived_by   TEXT,
    collected_at BIGINT,
    collected_by TEXT
);
CREATE INDEX hall_documents_by_hall ON hall_documents (hall_id, collected_at, arrived_at);
