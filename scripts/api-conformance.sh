#!/usr/bin/env bash
# The HTTP APIs against their own OpenAPI descriptions: schemathesis (PyPI, in a venv under
# target/) runs every check on the reviewer, hall desk and operations APIs of a `wangban serve` on
# the embedded default (SQLite, in-process bus) at 127.0.0.1, with a staffed desk and halls and an
# operator token.
# Bounded (30 examples per operation) and seeded, so a run is reproducible; any failure fails the
# test command. Part of scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/schemathesis-venv
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'schemathesis==4.32.5'
fi
cargo build --quiet --bin wangban
bin=target/debug/wangban

dir=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT

minted=$("$bin" reviewer-token)
token=$(awk '/^token:/{print $2}' <<<"$minted")
digest=$(awk '/^token_sha256:/{print $2}' <<<"$minted")
minted=$("$bin" reviewer-token)
staff=$(awk '/^token:/{print $2}' <<<"$minted")
staff_digest=$(awk '/^token_sha256:/{print $2}' <<<"$minted")
python3 - "$digest" "$staff_digest" "$dir/reviewers.json" <<'EOF'
import json, sys
desk = json.load(open("deploy/review/reviewers.example.json"))
desk["reviewers"][0]["token_sha256"] = sys.argv[1]
desk["hall_staff"][0]["token_sha256"] = sys.argv[2]
json.dump(desk, open(sys.argv[3], "w"))
EOF
operator=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"

env -u AMQP_URL DATABASE_URL="sqlite://$dir/api.sqlite" WANGBAN_REVIEWERS_FILE="$dir/reviewers.json" \
  WANGBAN_HTTP_ADDR="127.0.0.1:$port" WANGBAN_OPERATOR_TOKEN="$operator" \
  WANGBAN_HTTP_AUTH_FAILURES_PER_MINUTE=1000000 RUST_LOG=warn \
  "$bin" serve >"$dir/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 60); do
  python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$base/readyz" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$dir/serve.log" >&2; echo "error: wangban serve exited" >&2; exit 1; }
  sleep 0.5
done

status=0
for api in review hall ops; do
  case $api in review) bearer=$token ;; hall) bearer=$staff ;; ops) bearer=$operator ;; esac
  echo "schemathesis: the $api API" >&2
  "$venv/bin/schemathesis" run "$base/api/$api/openapi.json" --url "$base" \
    -H "Authorization: Bearer $bearer" --checks all --max-examples 30 --seed 20261201 \
    --no-color >"$dir/$api.txt" 2>&1 || { status=1; cat "$dir/$api.txt" >&2; }
  grep -E "generated" "$dir/$api.txt" >&2 || true
done
exit $status
