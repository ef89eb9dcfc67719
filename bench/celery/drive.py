"""Submits N chains to the Celery peer and waits until every one reached stage 5; prints a
progress line, then one JSON line: chains/s, hop deliveries/s, end-to-end seconds."""
import json
import sys
import time

import psycopg

from chain import DATABASE_URL, PREFIX, STAGE_TASKS, STAGES

n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
size = int(sys.argv[2]) if len(sys.argv) > 2 else 449  # wangban's mean event size
payload = "x" * size
with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
    started = time.monotonic()
    for i in range(n):
        STAGE_TASKS[0].apply_async((f"c{i}", payload), queue=f"{PREFIX}.stage1")
    submitted = time.monotonic() - started
    while True:
        done = conn.execute(f'SELECT COUNT(*) FROM "{PREFIX}_hops" WHERE stage = %s',
                            (STAGES,)).fetchone()[0]
        elapsed = time.monotonic() - started
        print(f"\r[celery] {done}/{n} chains through {STAGES} stages, {elapsed:.1f} s   ",
              end="", file=sys.stderr, flush=True)
        if done >= n:
            break
        if elapsed > 1800:
            sys.exit(f"\nonly {done}/{n} chains finished in 30 minutes")
        time.sleep(0.5)
    hops = conn.execute(f'SELECT COUNT(*) FROM "{PREFIX}_hops"').fetchone()[0]
print(file=sys.stderr)
print(json.dumps({"peer": "celery", "chains": n, "stages": STAGES, "seconds": round(elapsed, 1),
                  "submit_seconds": round(submitted, 1),
                  "chains_per_s": round(n / elapsed, 1), "hops_per_s": round(hops / elapsed, 0)}))
