#!/usr/bin/env bash
# A real S3-compatible server for the materials tests: Garage (garagehq.deuxfleurs.fr), one node
# on 127.0.0.1:3900 with the tests' bucket and key, installed with `cargo install garage` when
# missing (about 7 minutes, once per machine; a garage already on PATH is used as it is). Garage
# because it is an S3 API server of its own (not a mock), runs as one small process, and comes
# from a registry this machine reaches (crates.io). Writes the settings to
# /tmp/wangban-test-s3/env for scripts/test.sh to read; fails loudly when it cannot start.
set -euo pipefail
dir=/tmp/wangban-test-s3
port=3900
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! command -v garage >/dev/null; then
  echo "installing Garage (cargo install garage, about 7 minutes)" >&2
  cargo install --locked --quiet garage --version 2.5.0
fi
mkdir -p "$dir"
if [ ! -s "$dir/env" ]; then
  hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
  cat > "$dir/env" <<ENV
WANGBAN_TEST_S3_ENDPOINT=http://127.0.0.1:$port
WANGBAN_TEST_S3_REGION=garage
WANGBAN_TEST_S3_BUCKET=wangban-test-materials
WANGBAN_TEST_S3_ACCESS_KEY_ID=GK$(hex 12)
WANGBAN_TEST_S3_SECRET_ACCESS_KEY=$(hex 32)
ENV
  cat > "$dir/garage.toml" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:3901"
rpc_public_addr = "127.0.0.1:3901"
rpc_secret = "$(hex 32)"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$port"
root_domain = ".s3.garage.localhost"
TOML
fi
if ! port_open "$port"; then
  echo "starting Garage on 127.0.0.1:$port" >&2
  # shellcheck disable=SC1091
  set -a; . "$dir/env"; set +a
  GARAGE_DEFAULT_ACCESS_KEY="$WANGBAN_TEST_S3_ACCESS_KEY_ID" \
  GARAGE_DEFAULT_SECRET_KEY="$WANGBAN_TEST_S3_SECRET_ACCESS_KEY" \
  GARAGE_DEFAULT_BUCKET="$WANGBAN_TEST_S3_BUCKET" \
    nohup garage -c "$dir/garage.toml" server --single-node --default-bucket \
    > "$dir/garage.log" 2>&1 &
  for _ in $(seq 1 60); do port_open "$port" && break; sleep 1; done
  port_open "$port" || { echo "error: Garage did not listen on $port (see $dir/garage.log)" >&2; exit 1; }
fi
