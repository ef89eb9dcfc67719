-- wangban schema v1 (SQLite)

CREATE TABLE cases (
    case_id          TEXT PRIMARY KEY,
    application_id   TEXT NOT NULL UNIQUE,
    -- keyed digest of the ID number (never the number); NULL when the number is invalid
    id_fingerprint   TEXT,
    document_kind    TEXT,
    delivery_method  TEXT NOT NULL,
    state            TEXT NOT NULL,
    is_open          BIGINT NOT NULL,
    version          BIGINT NOT NULL,
    review_round     BIGINT NOT NULL,
    reviewer         TEXT,
    -- the application JSON: the only place personal data is kept
    application      TEXT NOT NULL,
    audit_seq        BIGINT NOT NULL,
    audit_head       TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    state_since      BIGINT NOT NULL
);
-- one open case per person and document kind (duplicate_active_application)
CREATE UNIQUE INDEX cases_one_open_per_person_and_kind
    ON cases (id_fingerprint, document_kind) WHERE is_open = 1;
CREATE INDEX cases_by_state ON cases (state, state_since);

-- append-only, hash-chained per case
CREATE TABLE audit (
    case_id    TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    at         BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    event_id   TEXT,
    detail     TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL,
    PRIMARY KEY (case_id, seq)
);

CREATE TABLE inbox (
    consumer    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    handled_at  BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

-- one row per effect on the outside world: (case, purpose) happens once
CREATE TABLE effects (
    case_id  TEXT NOT NULL,
    purpose  TEXT NOT NULL,
    detail   TEXT NOT NULL,
    at       BIGINT NOT NULL,
    PRIMARY KEY (case_id, purpose)
);

CREATE TABLE outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id      TEXT NOT NULL,
    routing_key   TEXT NOT NULL,
    payload       TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    published_at  BIGINT
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;

CREATE TABLE dead_letters (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    worker       TEXT NOT NULL,
    event_id     TEXT,
    event_type   TEXT,
    case_id      TEXT,
    reason       TEXT NOT NULL,
    payload      BLOB NOT NULL,
    failures     BIGINT NOT NULL,
    first_at     BIGINT NOT NULL,
    last_at      BIGINT NOT NULL,
    replayed_at  BIGINT
);
