#!/usr/bin/env bash
# The secrets of docker-compose.yml, made once on this host and never committed (.gitignore):
# a random password per broker user in deploy/secrets/broker/<user>, which the compose stack
# renders into the broker's definitions (as salted hashes) and gives each service as
# AMQP_PASSWORD_FILE. Existing files are kept, so running it again changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=deploy/secrets/broker
mkdir -p "$dir"
for user in wangban-intake wangban-review wangban-notify wangban-production wangban-courier wangban-ops wangban-portal; do
  if [ ! -s "$dir/$user" ]; then
    (umask 022; head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$dir/$user")
    echo "made $dir/$user"
  fi
done
