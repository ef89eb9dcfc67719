#!/usr/bin/env bash
# The Celery peer of `wangban-bench`: installs Celery in a virtualenv (target/celery-venv), starts
# one Celery worker per stage on the local RabbitMQ, drives N chains (default 2000) and prints one
# JSON line. Usage: bench/celery/run.sh [N]. CELERY_POOL (prefork) and CELERY_CONCURRENCY (2) set
# each worker's pool; the threads pool with publisher confirms ran at 48 hops/s here (its threads
# share one broker connection and wait on each other's confirms), so prefork is the default.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/target/celery-venv"
n="${1:-2000}"
export DATABASE_URL="${CELERY_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test}"
export CELERY_BENCH_PREFIX="bench-celery-$$"
if [ ! -x "$venv/bin/celery" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r "$here/requirements.txt"
fi
psql "$DATABASE_URL" -qc "CREATE TABLE \"${CELERY_BENCH_PREFIX}_hops\" (chain_id TEXT NOT NULL, stage INT NOT NULL)"
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  psql "$DATABASE_URL" -qc "DROP TABLE IF EXISTS \"${CELERY_BENCH_PREFIX}_hops\"" || true
  for i in 1 2 3 4 5; do rabbitmqctl -q delete_queue "$CELERY_BENCH_PREFIX.stage$i" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
cd "$here"
for i in 1 2 3 4 5; do
  "$venv/bin/celery" -A chain worker -Q "$CELERY_BENCH_PREFIX.stage$i" \
    --pool "${CELERY_POOL:-prefork}" -c "${CELERY_CONCURRENCY:-2}" \
    --without-gossip --without-mingle --without-heartbeat -l warning -n "stage$i@%h" \
    >"/tmp/$CELERY_BENCH_PREFIX-stage$i.log" 2>&1 &
  pids+=($!)
done
sleep 5  # the workers declare their queues and start consuming
"$venv/bin/python" drive.py "$n"
