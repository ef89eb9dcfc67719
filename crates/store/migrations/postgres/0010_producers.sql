-- wangban schema v10: each outbox row and scheduled event names the role that produced it (a
-- worker, or `http` for callbacks, desks and operators), so that each process relays only what
-- its own broker user may publish (topic permissions, docs/security.md). Rows written before
-- v10 have '' and are relayed by the `http` role.
ALTER TABLE outbox ADD COLUMN producer TEXT NOT NULL DEFAULT '';
ALTER TABLE scheduled ADD COLUMN producer TEXT NOT NULL DEFAULT '';
