-- wangban schema v9: a deadline belongs to the state the case was in when it was scheduled; it is
-- cancelled when the case leaves that state (a paid case's payment window, an answered
-- correction's lapse), so no stale deadline fires after the case moved on.
ALTER TABLE scheduled ADD COLUMN state TEXT;
CREATE INDEX scheduled_case_state ON scheduled (case_id, state);
