-- wangban schema v5: effects as commands, carried out after the decision commits
-- (portable SQL: one file serves PostgreSQL and SQLite)

-- one row per effect a worker asked for, keyed like `effects` and like the party's idempotency
-- key: requested in the deciding transaction, claimed by the party's executor, which calls the
-- party with no transaction open and then marks it done (or schedules the next attempt, or gives
-- up: `dead`, for an operator to retry). No personal data: the executor reads it from the case.
CREATE TABLE effect_commands (
    case_id         TEXT NOT NULL,
    purpose         TEXT NOT NULL,
    party           TEXT NOT NULL,
    -- the command (wangban_domain::effects::Effect as JSON)
    command         TEXT NOT NULL,
    -- pending | done | dead
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    last_error      TEXT,
    -- not to be tried before (ms): the next attempt's time, or the end of a running attempt's lease
    not_before      BIGINT NOT NULL,
    -- the event whose handling asked for it, and its story: the answer's causation and correlation
    cause_id        TEXT NOT NULL,
    correlation_id  TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (case_id, purpose)
);
CREATE INDEX effect_commands_due ON effect_commands (party, not_before) WHERE state = 'pending';
CREATE INDEX effect_commands_dead ON effect_commands (updated_at) WHERE state = 'dead';
