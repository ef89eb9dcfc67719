-- wangban schema v2: what operators look at besides the audit chain
-- transient failures that were retried, per case (the audit chain records only what committed)
CREATE TABLE retries (
    case_id     TEXT NOT NULL,
    worker      TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    error       TEXT NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX retries_by_case ON retries (case_id, at);

-- cases per state over time, sampled by `wangban serve`
CREATE TABLE state_samples (
    at     BIGINT NOT NULL,
    state  TEXT NOT NULL,
    n      BIGINT NOT NULL
);
CREATE INDEX state_samples_by_time ON state_samples (at);
CREATE INDEX cases_by_fingerprint ON cases (id_fingerprint);
