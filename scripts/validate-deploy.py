#!/usr/bin/env python3
"""Checks what a schema validator cannot: the Kubernetes manifests agree with each other and with
the RabbitMQ definitions (every worker has a Deployment probed on /healthz and /readyz and a KEDA
ScaledObject on its own quorum queue; every secret key referenced exists). Exit 1 naming the first
problem."""
import json, sys, glob
import yaml

WORKERS = ["intake", "review", "notify", "production", "courier"]
docs = [d for f in sorted(glob.glob("deploy/kubernetes/*.yaml")) for d in yaml.safe_load_all(open(f)) if d]
definitions = json.load(open("deploy/rabbitmq/definitions.json"))
queues = {q["name"]: q for q in definitions["queues"]}
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d

def fail(msg):
    print(f"deploy check: {msg}")
    sys.exit(1)

secret_keys = set(by_kind.get("Secret", {}).get("wangban", {}).get("stringData", {}))
auths = by_kind.get("TriggerAuthentication", {})
for name, dep in by_kind.get("Deployment", {}).items():
    c = dep["spec"]["template"]["spec"]["containers"][0]
    if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
        fail(f"{name}: liveness probe must be /healthz")
    if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
        fail(f"{name}: readiness probe must be /readyz")
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref["key"] not in secret_keys:
            fail(f"{name}: secret key {ref['key']} is not in the wangban Secret")
    if dep["spec"]["template"]["spec"].get("securityContext", {}).get("runAsNonRoot") is not True:
        fail(f"{name}: must run as non-root")
for w in WORKERS:
    dep = by_kind.get("Deployment", {}).get(f"wangban-{w}")
    if not dep:
        fail(f"no Deployment for worker {w}")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    if args != ["serve", "--workers", w]:
        fail(f"wangban-{w} runs {args}")
    so = by_kind.get("ScaledObject", {}).get(f"wangban-{w}")
    if not so:
        fail(f"no ScaledObject for worker {w}")
    spec = so["spec"]
    if spec["scaleTargetRef"]["name"] != f"wangban-{w}":
        fail(f"ScaledObject wangban-{w} scales {spec['scaleTargetRef']['name']}")
    if not 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]:
        fail(f"ScaledObject wangban-{w}: bad replica bounds")
    for t in spec["triggers"]:
        if t["type"] != "rabbitmq":
            fail(f"ScaledObject wangban-{w}: trigger {t['type']}")
        q = t["metadata"]["queueName"]
        if q != f"wangban.{w}" or q not in queues:
            fail(f"ScaledObject wangban-{w}: queue {q} is not the worker's queue in the definitions")
        if queues[q]["arguments"].get("x-queue-type") != "quorum":
            fail(f"{q} is not a quorum queue")
        if t["authenticationRef"]["name"] not in auths:
            fail(f"ScaledObject wangban-{w}: no TriggerAuthentication {t['authenticationRef']['name']}")
for a in auths.values():
    for ref in a["spec"]["secretTargetRef"]:
        if ref["key"] not in secret_keys:
            fail(f"TriggerAuthentication {a['metadata']['name']}: secret key {ref['key']} missing")
# The staffed review desk: the review worker (it dispatches) and the HTTP deployment (it serves the
# reviewer API) read the same reviewers file from the ConfigMap, and the file itself is valid JSON
# with offices and reviewers.
reviewers = by_kind.get("ConfigMap", {}).get("wangban-reviewers")
if not reviewers:
    fail("no ConfigMap wangban-reviewers")
desk = json.loads(reviewers["data"]["reviewers.json"])
if not desk.get("offices") or not desk.get("reviewers"):
    fail("wangban-reviewers: reviewers.json needs offices and reviewers")
for name in ["wangban-review", "wangban-ops"]:
    spec = by_kind["Deployment"][name]["spec"]["template"]["spec"]
    c = spec["containers"][0]
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    path = env.get("WANGBAN_REVIEWERS_FILE")
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v.get("configMap", {}).get("name") for v in spec.get("volumes", [])}
    if not path or not any(volumes.get(v) == "wangban-reviewers" and path == f"{p}/reviewers.json"
                           for v, p in mounts.items()):
        fail(f"{name}: WANGBAN_REVIEWERS_FILE must name reviewers.json of the mounted wangban-reviewers ConfigMap")
if definitions.get("users") or definitions.get("permissions"):
    fail("definitions: the committed template must hold no users (importing it would reset their "
         "passwords); a deployment renders them with `wangban topology --passwords DIR`")
secret = by_kind.get("Secret", {}).get("wangban", {}).get("stringData", {})
for w in WORKERS + ["ops"]:
    url = secret.get(f"AMQP_URL_{w.upper()}", "")
    if f"://wangban-{w}:" not in url:
        fail(f"Secret wangban: AMQP_URL_{w.upper()} must log in as the broker user wangban-{w}")
# Topic permissions: each process relays only what its own broker user may publish.
def relay_of(env):
    return env.get("WANGBAN_RELAY")
for w in WORKERS + ["ops"]:
    want = "http" if w == "ops" else w
    c = by_kind["Deployment"][f"wangban-{w}"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    if relay_of(env) != want:
        fail(f"wangban-{w}: WANGBAN_RELAY must be {want} (its broker user may publish only that)")
compose = yaml.safe_load(open("docker-compose.yml"))
for w in WORKERS + ["ops"]:
    want = "http" if w == "ops" else w
    env = compose["services"][w].get("environment", {})
    if relay_of(env) != want:
        fail(f"docker-compose.yml {w}: WANGBAN_RELAY must be {want}")
    if env.get("AMQP_PASSWORD_FILE") != f"/run/secrets/broker/wangban-{w}":
        fail(f"docker-compose.yml {w}: must log in as wangban-{w}")
print(f"deploy check: {len(docs)} Kubernetes objects consistent with each other and with the RabbitMQ definitions")
