#!/usr/bin/env bash
# The test command: make sure RabbitMQ and PostgreSQL are running (install them from Debian's
# packages when missing), then run every test of the workspace against them.
# Fails loudly when a service cannot be brought up: no integration test is ever skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

export WANGBAN_TEST_AMQP_URL="${WANGBAN_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export WANGBAN_TEST_DATABASE_URL="${WANGBAN_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
wait_port() {
  for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 1; done
  echo "error: $2 did not open port $1 within 60 s" >&2; exit 1
}
apt_install() {
  echo "installing $* from Debian's packages" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! port_open 5672; then
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  echo "starting RabbitMQ" >&2
  as_root rabbitmq-server -detached
  wait_port 5672 RabbitMQ
fi
if ! port_open 5432; then
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  echo "starting PostgreSQL" >&2
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
  wait_port 5432 PostgreSQL
fi

# RabbitMQ over TLS (tests/tests/broker_tls.rs): a private CA and a server certificate for
# 127.0.0.1, and a TLS listener on 5671 added to the running local broker (not persisted: a broker
# restart drops it, and the next run adds it again). Set WANGBAN_TEST_AMQPS_URL and
# WANGBAN_TEST_AMQP_CA_FILE to use a TLS broker of your own instead.
if [ -z "${WANGBAN_TEST_AMQPS_URL:-}" ]; then
  bash scripts/broker-tls.sh
  export WANGBAN_TEST_AMQPS_URL="amqps://guest:guest@127.0.0.1:5671/%2f"
  export WANGBAN_TEST_AMQP_CA_FILE=/tmp/wangban-test-tls/ca.pem
fi

# The materials store's S3 backend is tested against a real S3 server: Garage, one node on
# 127.0.0.1:3900 (scripts/s3-server.sh installs it with cargo when missing — about 7 minutes, once —
# and starts it). Set WANGBAN_TEST_S3_ENDPOINT (and _REGION, _BUCKET, _ACCESS_KEY_ID,
# _SECRET_ACCESS_KEY) to use a store of your own instead.
if [ -z "${WANGBAN_TEST_S3_ENDPOINT:-}" ]; then
  bash scripts/s3-server.sh
fi

# A fresh Debian PostgreSQL has peer auth on the socket and md5 on TCP; our URL uses the
# `postgres` role on 127.0.0.1 with database `test`. Create the database when it is missing.
if command -v psql >/dev/null && ! psql "$WANGBAN_TEST_DATABASE_URL" -c 'select 1' >/dev/null 2>&1; then
  as_root su postgres -c "psql -c 'create database test'" >/dev/null 2>&1 || true
  psql "$WANGBAN_TEST_DATABASE_URL" -c 'select 1' >/dev/null || {
    echo "error: cannot connect to $WANGBAN_TEST_DATABASE_URL (set WANGBAN_TEST_DATABASE_URL)" >&2; exit 1; }
fi

# The dashboard test drives Debian's Chromium with playwright-core (no browser download).
if [ ! -x /usr/bin/chromium ]; then apt_install chromium; fi
# The pages are partly Chinese: a CJK font makes the screenshots readable (the tests pass without).
if command -v fc-list >/dev/null && [ -z "$(fc-list :lang=zh 2>/dev/null)" ]; then
  apt_install fonts-wqy-microhei || echo "warning: no CJK font; screenshots will show boxes" >&2
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then apt_install nodejs npm; fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

# `promtool check metrics` lints what /metrics exposes (tests/tests/operations.rs).
command -v promtool >/dev/null || apt_install --no-install-recommends prometheus

bash scripts/validate-deploy.sh

if cargo clippy --version >/dev/null 2>&1; then
  cargo fmt --all -- --check
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi
cargo test --workspace --locked "$@" -- --skip fault_injection_suite
# The reviewer and operations APIs against their OpenAPI descriptions (schemathesis).
bash scripts/api-conformance.sh
# docker-compose.yml for real: images built from Debian's packages, the stack up, the examples
# through it, the stack down.
bash scripts/compose-test.sh
# The fault-injection suite stops and restarts the broker and the database: it runs alone, last.
bash scripts/reliability.sh
