-- wangban schema v7: deadlines scheduled with the decision that set them (payment reminder and
-- lapse, correction lapse). The relay moves a row into the outbox once the clock passes its
-- due time, in one transaction (rows locked, so one process fires each), and deletes it.
CREATE TABLE scheduled (
    -- the event's id, derived from the case and the deadline: scheduling twice keeps one row
    event_id     TEXT PRIMARY KEY,
    case_id      TEXT NOT NULL,
    routing_key  TEXT NOT NULL,
    -- the envelope JSON, as the outbox holds it
    payload      TEXT NOT NULL,
    due_at       BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX scheduled_due ON scheduled (due_at);
CREATE INDEX scheduled_case ON scheduled (case_id);
