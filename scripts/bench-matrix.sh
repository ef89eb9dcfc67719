#!/usr/bin/env bash
# The runs behind docs/performance.md: wangban-bench at several N, replicas and offered loads, on
# the local RabbitMQ and PostgreSQL. Each run's JSON line goes to target/bench/<name>.json and its
# table to target/bench/<name>.txt; then bench/plot.py draws the offered-load plot.
# Usage: scripts/bench-matrix.sh [names...]   (default: all; names: n1k n10k n100k r2 r4 rate10 …)
set -euo pipefail
cd "$(dirname "$0")/.."
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
cargo build --release --quiet --bin wangban --bin wangban-bench
out=target/bench
mkdir -p "$out"
run() {
  local name=$1; shift
  echo "== $name: wangban-bench $*" >&2
  ./target/release/wangban-bench "$@" >"$out/$name.txt"
  tail -n 1 "$out/$name.txt" >"$out/$name.json"
  cat "$out/$name.txt"
}
all=(n1k n10k r2 r4 rate10 rate20 rate40 rate60 rate80 rate100 embedded n100k)
for name in "${@:-${all[@]}}"; do
  case $name in
    n1k) run n1k --cases 1000 ;;
    n10k) run n10k --cases 10000 ;;
    n100k) run n100k --cases 100000 ;;
    r2) run r2 --cases 2000 --replicas 2 ;;
    r4) run r4 --cases 2000 --replicas 4 ;;
    rate*) run "$name" --cases 1000 --rate "${name#rate}" --no-baseline ;;
    embedded) run embedded --cases 10000 --embedded ;;
    *) echo "unknown run $name" >&2; exit 2 ;;
  esac
done
