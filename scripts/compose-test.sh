#!/usr/bin/env bash
# The compose stack, for real: builds the wangban image and the RabbitMQ and PostgreSQL images
# from Debian's packages on a base image made with debootstrap (nothing is pulled from a
# registry), brings docker-compose.yml up as a user would, hands the example applications to
# intake as the portal (its own broker user) and waits until each case reaches the state it must,
# drives the demo's applications of every scenario through it (`wangban demo --external` as the
# portal and the applicants), checks the store's invariants, and takes the stack down. Exit 1 naming what did not happen.
#   bash scripts/compose-test.sh        (run by scripts/test.sh)
# Needs root (or sudo) for the Docker engine; installs docker.io, docker-compose and debootstrap
# from Debian's packages when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  echo "installing $* from Debian's packages" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
stack_up=""
fail() {
  echo "compose test: $*" >&2
  if [ -n "$stack_up" ]; then compose ps >&2 || true; compose logs --tail 40 >&2 || true; fi
  exit 1
}
step() { echo "compose test: $*" >&2; }

command -v dockerd >/dev/null || apt_install docker.io
command -v docker-compose >/dev/null || apt_install docker-compose
command -v debootstrap >/dev/null || apt_install debootstrap
if ! as_root docker info >/dev/null 2>&1; then
  step "starting the Docker engine"
  mkdir -p target
  as_root sh -c 'nohup dockerd > /var/log/wangban-dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do as_root docker info >/dev/null 2>&1 && break; sleep 1; done
  as_root docker info >/dev/null 2>&1 || fail "the Docker engine did not start (/var/log/wangban-dockerd.log)"
fi
docker() { as_root env DOCKER_BUILDKIT=0 docker "$@"; }
# The windows short enough to see unpaid applications lapse and unanswered corrections lapse.
compose() { as_root env WANGBAN_PAYMENT_WINDOW_SECS=6 WANGBAN_PAYMENT_REMINDER_SECS=3 \
  WANGBAN_RESUBMIT_WITHIN_SECS=30 WANGBAN_BASE_IMAGE="$base" WANGBAN_HTTP_PORT="$http_port" \
  WANGBAN_AMQP_PORT="$amqp_port" WANGBAN_RABBITMQ_MANAGEMENT_PORT="$mgmt_port" \
  WANGBAN_OPERATOR_TOKEN="$token" docker-compose -p "$project" "$@"; }

# A Debian base image, made once per machine from Debian's packages.
base=wangban-base:bookworm
if ! docker image inspect "$base" >/dev/null 2>&1; then
  step "making $base with debootstrap"
  rootfs=$(mktemp -d)
  as_root debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  as_root tar -C "$rootfs" -c . | docker import - "$base" >/dev/null
  as_root rm -rf "$rootfs"
fi

step "building the images"
cargo build --quiet --release --bin wangban
docker build -q --target prebuilt --build-arg "BASE=$base" -t wangban:latest . >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
project="wangban-test-$$"
http_port=$(free_port); amqp_port=$(free_port); mgmt_port=$(free_port)
token="compose-test-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
bash scripts/compose-secrets.sh >/dev/null
compose build -q rabbitmq postgres
cleanup() { compose down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT

step "bringing the stack up (project $project, HTTP on 127.0.0.1:$http_port)"
stack_up=1
compose up -d --no-build >/dev/null 2>&1 || fail "docker-compose up failed"
ready=""
for _ in $(seq 1 120); do
  if target/release/wangban probe "http://127.0.0.1:$http_port/readyz"; then ready=1; break; fi
  sleep 1
done
[ -n "$ready" ] || fail "the operations service was not ready within 120 s"
for service in intake review notify production courier; do
  for _ in $(seq 1 60); do
    state=$(docker inspect -f '{{.State.Health.Status}}' "$(compose ps -q "$service")" 2>/dev/null || true)
    [ "$state" = healthy ] && break
    sleep 1
  done
  [ "$state" = healthy ] || fail "$service is $state, not healthy"
done

step "uploading the examples' files into the stack's materials store"
compose run --rm --no-deps -T --entrypoint cp -v "$PWD/examples/materials:/upload:ro" \
  ops -r /upload/. /var/lib/wangban/materials/ >&2 || fail "the examples' files could not be uploaded"

step "handing the example applications to intake as wangban-portal"
compose run --rm --no-deps -T \
  -e WANGBAN_DECLARE=own -e AMQP_URL=amqp://wangban-portal@rabbitmq:5672/%2f \
  -e AMQP_PASSWORD_FILE=/run/secrets/broker/wangban-portal \
  -v "$PWD/examples/applications:/examples:ro" \
  ops submit /examples/accepted-passport-courier.json /examples/rejected-three-reasons.json \
  /examples/accepted-permit-pickup.json /examples/invalid-missing-phone.json >&2 \
  || fail "the portal could not hand the applications over"

# Each case reaches its state: by application id, through the operations API.
state_of() {
  curl -fsS -H "Authorization: Bearer $token" \
    "http://127.0.0.1:$http_port/api/ops/cases/$1" 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["case"]["state"])' 2>/dev/null || true
}
wait_state() { # application id, wanted states (space-separated)
  local got=""
  for _ in $(seq 1 120); do
    got=$(state_of "$1")
    for want in $2; do [ "$got" = "$want" ] && { step "$1: $got"; return 0; }; done
    sleep 1
  done
  fail "$1 is ${got:-unknown}, not $2, after 120 s"
}
wait_state "$(python3 -c 'import json; print(json.load(open("examples/applications/accepted-passport-courier.json"))["application_id"])')" delivered
wait_state "$(python3 -c 'import json; print(json.load(open("examples/applications/rejected-three-reasons.json"))["application_id"])')" rejected
wait_state "$(python3 -c 'import json; print(json.load(open("examples/applications/accepted-permit-pickup.json"))["application_id"])')" collected
# The malformed one is refused: a dead letter of intake naming the field, nothing else.
dead=""
for _ in $(seq 1 60); do
  dead=$(curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$http_port/api/ops/dead-letters" 2>/dev/null || true)
  case "$dead" in *phone*) break ;; esac
  sleep 1
done
case "$dead" in *phone*) step "the malformed application is a dead letter naming its field" ;;
  *) fail "no dead letter names the missing phone: $dead" ;; esac

step "driving the demo's applications (every scenario) through the stack"
demo=$(compose run --rm --no-deps -T \
  -e WANGBAN_DECLARE=own -e AMQP_URL=amqp://wangban-portal@rabbitmq:5672/%2f \
  -e AMQP_PASSWORD_FILE=/run/secrets/broker/wangban-portal \
  ops demo --external --cases 46 --seed 7 --json) || fail "the demo's cases did not all end as expected: $demo"
echo "$demo" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read().strip().splitlines()[-1])
assert r["cases"] == 46 and r["unexpected"] == 0, r
print("compose test: demo: %d cases, 0 unexpected; final states %s" % (r["cases"], r["by_state"]), file=sys.stderr)
' || fail "the demo's report: $demo"

step "checking the store's invariants"
compose run --rm --no-deps -T ops verify >&2 || fail "wangban verify found a violation"
stack_up=""
step "the stack ran the examples; taking it down"
