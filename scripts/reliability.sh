#!/usr/bin/env bash
# Runs the fault-injection suite (tests/tests/faults.rs) on the local RabbitMQ and PostgreSQL and
# prints the table of docs/reliability.md (also written to target/reliability.md).
# It stops and restarts the broker and the database: run it alone, not beside other tests.
# WANGBAN_FAULTS=SIGKILL,backlog runs only the scenarios whose names contain those words.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -p wangban-tests --test faults --locked -- --nocapture --test-threads=1
echo
cat target/reliability.md
