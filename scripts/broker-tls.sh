#!/usr/bin/env bash
# Gives the local RabbitMQ a TLS listener on 127.0.0.1:5671 for the tests: a throwaway private CA
# and a server certificate for localhost/127.0.0.1 in /tmp/wangban-test-tls (readable by the
# broker's user), then `rabbit_networking:start_ssl_listener` on the running node. Idempotent: an
# existing listener that presents our certificate is kept. Fails loudly when it cannot be done.
set -euo pipefail
dir=/tmp/wangban-test-tls
port=5671
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -s "$dir/server.pem" ]; then
  mkdir -p "$dir"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=wangban test CA" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
    >"$dir/ext.cnf"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 3650 -extfile "$dir/ext.cnf" -out "$dir/server.pem" 2>/dev/null
  chmod 755 "$dir"
  chmod 644 "$dir"/*.pem "$dir/server.key"
fi

verified() {
  echo | timeout 5 openssl s_client -connect "127.0.0.1:$port" -CAfile "$dir/ca.pem" \
    -verify_return_error 2>/dev/null | grep -q 'Verify return code: 0'
}
verified && exit 0

command -v rabbitmqctl >/dev/null || {
  echo "error: no TLS broker on 127.0.0.1:$port and no rabbitmqctl to add one" \
       "(set WANGBAN_TEST_AMQPS_URL and WANGBAN_TEST_AMQP_CA_FILE)" >&2; exit 1; }
# A listener with other certificates (an earlier run's) is replaced.
as_root rabbitmqctl -q eval "rabbit_networking:stop_tcp_listener($port)." >/dev/null 2>&1 || true
as_root rabbitmqctl -q eval "rabbit_networking:start_ssl_listener($port, [
  {cacertfile, \"$dir/ca.pem\"}, {certfile, \"$dir/server.pem\"}, {keyfile, \"$dir/server.key\"},
  {verify, verify_none}, {fail_if_no_peer_cert, false}], 1)." >/dev/null
for _ in $(seq 1 20); do verified && exit 0; sleep 0.5; done
echo "error: RabbitMQ did not serve TLS with our certificate on 127.0.0.1:$port" >&2
exit 1
