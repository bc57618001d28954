#!/usr/bin/env bash
# Checks the Kubernetes manifests of infra/k8s offline: no cluster, no kubeconfig.
# - kustomization.yaml lists every manifest but the optional ones (OPTIONAL below), and each
#   manifest opens with its header comment;
# - every manifest of a built-in kind validates against the schemas of KUBERNETES_VERSION,
#   strictly (an unknown or mistyped field fails), with PyPI's `kubernetes-validate`, installed
#   in a project-local virtual environment (.venv-k8s); a kind it has no schema for fails too,
#   so a mistyped kind or apiVersion cannot pass as "unknown";
# - custom resources (CUSTOM below, whose schemas come with their operators) only parse and
#   are of the kind expected;
# - the NATS configuration in nats.yaml passes `nats-server -t` (scripts/nats-server.sh).
# The versions are pinned here, and only here.
set -euo pipefail
KUBERNETES_VALIDATE_VERSION=1.37.0
KUBERNETES_VERSION=1.37.0
# Not in kustomization.yaml on purpose: an example to adapt, and a resource that needs the
# Prometheus Operator.
OPTIONAL="edge-ingress.yaml servicemonitor.yaml"
CUSTOM="servicemonitor.yaml"

root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/infra/k8s"
venv="$root/.venv-k8s"
bin="$venv/bin/kubernetes-validate"
if [[ ! -x "$bin" ]] || [[ "$("$bin" --version 2>/dev/null)" != "$KUBERNETES_VALIDATE_VERSION" ]]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" >&2
fi

# The listing, the headers and the custom resources (PyYAML comes with kubernetes-validate).
OPTIONAL="$OPTIONAL" CUSTOM="$CUSTOM" "$venv/bin/python" - "$dir" <<'EOF'
import os, sys, yaml

dir = sys.argv[1]
optional = set(os.environ["OPTIONAL"].split())
custom = set(os.environ["CUSTOM"].split())
expected_custom = {("monitoring.coreos.com/v1", "ServiceMonitor")}
failures = []

files = sorted(f for f in os.listdir(dir) if f.endswith((".yaml", ".yml")))
for f in files:
    with open(os.path.join(dir, f)) as fh:
        if not fh.readline().startswith("#"):
            failures.append(f"{f}: does not open with a comment saying what it is")

with open(os.path.join(dir, "kustomization.yaml")) as fh:
    listed = yaml.safe_load(fh).get("resources") or []
manifests = set(files) - {"kustomization.yaml"}
for f in sorted(set(listed) - manifests):
    failures.append(f"kustomization.yaml lists {f}, which is not in infra/k8s")
for f in sorted(manifests - set(listed) - optional):
    failures.append(f"{f} is not listed in kustomization.yaml (or add it to OPTIONAL in scripts/check-k8s.sh)")
for f in sorted(optional & set(listed)):
    failures.append(f"{f} is optional but listed in kustomization.yaml")
for f in sorted(optional - manifests):
    failures.append(f"{f} is named in OPTIONAL but missing from infra/k8s")

for f in sorted(custom):
    try:
        with open(os.path.join(dir, f)) as fh:
            docs = [d for d in yaml.safe_load_all(fh) if d]
    except (OSError, yaml.YAMLError) as e:
        failures.append(f"{f}: {e}")
        continue
    for d in docs:
        kind = (d.get("apiVersion"), d.get("kind"))
        if kind not in expected_custom:
            failures.append(f"{f}: unexpected {kind[0]} {kind[1]}")
        elif not (d.get("metadata") or {}).get("name") or not d.get("spec"):
            failures.append(f"{f}: {kind[1]} without metadata.name or spec")

for failure in failures:
    print(f"check-k8s: {failure}", file=sys.stderr)
sys.exit(1 if failures else 0)
EOF

# Every built-in manifest, strictly. kubernetes-validate only warns about a kind it has no
# schema for; any output at all is a failure here.
manifests=()
for f in "$dir"/*.yaml; do
  name=$(basename "$f")
  [[ "$name" == kustomization.yaml || " $CUSTOM " == *" $name "* ]] && continue
  manifests+=("$f")
done
status=0
out=$("$bin" --strict --quiet --kubernetes-version "$KUBERNETES_VERSION" "${manifests[@]}" 2>&1) || status=$?
if [[ $status -ne 0 || -n "$out" ]]; then
  echo "$out" >&2
  echo "check-k8s: infra/k8s does not validate against Kubernetes $KUBERNETES_VERSION" >&2
  exit 1
fi

# The NATS server's own check of the configuration it is given in nats.yaml.
nats_conf=$(mktemp)
trap 'rm -f "$nats_conf"' EXIT
"$venv/bin/python" - "$dir/nats.yaml" "$nats_conf" <<'EOF'
import sys, yaml

with open(sys.argv[1]) as fh:
    docs = [d for d in yaml.safe_load_all(fh) if d]
config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "nats-config")
with open(sys.argv[2], "w") as fh:
    fh.write(config["data"]["nats-server.conf"])
EOF
nats_server=$("$root/scripts/nats-server.sh")
if ! out=$(SERVER_NAME=nats-0 "$nats_server" --config "$nats_conf" -t 2>&1); then
  echo "$out" >&2
  echo "check-k8s: the NATS configuration in infra/k8s/nats.yaml is not valid" >&2
  exit 1
fi

echo "infra/k8s: ${#manifests[@]} manifest files valid against Kubernetes $KUBERNETES_VERSION (strict), kustomization.yaml complete, NATS configuration valid"
