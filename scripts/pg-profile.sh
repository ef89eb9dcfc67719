#!/usr/bin/env bash
# A sampling profile of PostgreSQL while something runs: every 50 ms, what each active backend of
# the database is doing (waiting on what, or on CPU) and its statement, counted.
# Usage: scripts/pg-profile.sh [samples=400] [database URL]   (run it beside `wangban-bench`)
set -euo pipefail
n="${1:-400}"
url="${2:-${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}}"
db="$(psql "$url" -Atc 'select current_database()')"
for _ in $(seq 1 "$n"); do
  psql "$url" -Atc "select coalesce(wait_event_type || ':' || wait_event, 'CPU') || '  ' ||
      left(regexp_replace(query, '\s+', ' ', 'g'), 70)
    from pg_stat_activity
    where state = 'active' and pid <> pg_backend_pid() and datname = '$db'"
  sleep 0.05
done | sort | uniq -c | sort -rn | head -20
