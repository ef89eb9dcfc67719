-- wangban schema v4: the review desk (manual review by the hukou district's exit-entry office)

-- offices and reviewers, loaded from the reviewers file at start (the file is the source; these
-- rows are its copy plus what the desk changes: availability)
CREATE TABLE review_offices (
    office_id   TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    -- hukou district codes the office serves, comma-separated; the longest prefix of a case's
    -- hukou_region that some office lists picks the office
    districts   TEXT NOT NULL
);
CREATE TABLE reviewers (
    reviewer_id  TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    -- SHA-256 (hex) of the reviewer's bearer token: the token itself is never stored
    token_sha256 TEXT NOT NULL UNIQUE,
    available    BIGINT NOT NULL,
    active       BIGINT NOT NULL
);
CREATE TABLE reviewer_offices (
    reviewer_id  TEXT NOT NULL,
    office_id    TEXT NOT NULL,
    -- 1: reviews the office's queue
    reviews      BIGINT NOT NULL,
    -- 1: supervises the office (takes its supervisor queue: escalated cases)
    supervises   BIGINT NOT NULL,
    PRIMARY KEY (reviewer_id, office_id)
);

-- one task per review round of a case
CREATE TABLE review_tasks (
    case_id      TEXT NOT NULL,
    round        BIGINT NOT NULL,
    office_id    TEXT NOT NULL,
    -- 'office' or, once the review clock ran out, 'supervisor'
    queue        TEXT NOT NULL,
    -- who holds it now (NULL: waiting in the queue)
    reviewer     TEXT,
    assigned_at  BIGINT,
    opened_at    BIGINT NOT NULL,
    escalated_at BIGINT,
    decided_at   BIGINT,
    decided_by   TEXT,
    decision     TEXT,
    PRIMARY KEY (case_id, round)
);
CREATE INDEX review_tasks_open ON review_tasks (office_id, decided_at, opened_at);
CREATE INDEX review_tasks_by_reviewer ON review_tasks (reviewer, decided_at);
