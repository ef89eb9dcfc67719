-- The database role wangban's workers use: all they need, and no way to rewrite history.
-- Run as the schema's owner after the first `wangban serve` (or any command) has migrated it,
-- with search_path set to wangban's schema; then give each worker a login role IN ROLE
-- wangban_worker, e.g.  CREATE ROLE wangban_intake LOGIN PASSWORD '…' IN ROLE wangban_worker;
DO $$ BEGIN
    CREATE ROLE wangban_worker NOLOGIN;
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

GRANT USAGE ON SCHEMA public TO wangban_worker;
DO $$ BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO wangban_worker', current_schema());
END $$;

GRANT SELECT, INSERT, UPDATE, DELETE ON cases, inbox, outbox, effects, dead_letters, retries, state_samples,
    callback_nonces, unmatched_payments, review_offices, reviewers, reviewer_offices, review_tasks, effect_commands,
    halls, hall_staff, hall_documents, scheduled
    TO wangban_worker;
GRANT SELECT ON schema_migrations TO wangban_worker;
-- What each submission of a case named is history too: added to, never changed.
GRANT SELECT, INSERT ON case_materials TO wangban_worker;
GRANT SELECT, INSERT, UPDATE ON material_problems TO wangban_worker;
-- The audit log is append-only for the workers: no UPDATE, no DELETE, no TRUNCATE.
GRANT SELECT, INSERT ON audit TO wangban_worker;
REVOKE UPDATE, DELETE, TRUNCATE ON audit FROM wangban_worker;
DO $$ BEGIN
    EXECUTE format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA %I TO wangban_worker', current_schema());
END $$;
