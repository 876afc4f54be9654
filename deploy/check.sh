#!/usr/bin/env bash
# Checks deploy/: every overlay renders, every object validates against its
# schema (Kubernetes built-ins with kubernetes-validate, KEDA kinds against the
# CRDs in ../shared/schemas/keda), one autoscaler per Deployment, the manifests
# agree with the code (queue keys, settings, port, probe paths, drain timing),
# and the alert rules pass `promtool check rules`. CI runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/deploy-check
mkdir -p "$out/rendered"
rm -f "$out"/rendered/*

command -v kubectl >/dev/null || { echo "check.sh: kubectl is needed (client only) to render kustomize overlays"; exit 1; }
for o in deploy/k8s/overlays/*/; do
  name=$(basename "$o")
  kubectl kustomize "$o" > "$out/rendered/$name.yaml"
done

venv="$out/venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" 2>/dev/null || { sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo; $sudo apt-get install -y -qq python3-venv >/dev/null; python3 -m venv "$venv"; }
fi
"$venv/bin/python" -c "import kubernetes_validate, jsonschema, yaml" 2>/dev/null \
  || "$venv/bin/pip" install -q kubernetes-validate==1.34.* jsonschema pyyaml

cargo build -q -p spoolctl -p spool-encoder-worker
# Below Linux's ephemeral range (32768 and up), where an outgoing
# connection can hold a port between the draw and the bind.
port=$((20000 + RANDOM % 6000))
rport=$((26000 + RANDOM % 6000))
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >/dev/null &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null || true' EXIT
until redis-cli -p "$rport" ping >/dev/null 2>&1; do sleep 0.1; done

CHECK_OUT=$(mktemp -d) "$venv/bin/python" deploy/check.py "$out/rendered" target/debug/spoolctl \
  target/debug/spool-encoder-worker "redis://127.0.0.1:$rport" "$port"

if command -v promtool >/dev/null; then
  promtool check rules "$out/rendered/rules.yml.out"
else
  echo "check.sh: promtool not installed (Debian package prometheus): alert rules not checked"
  exit 1
fi
echo "deploy/check.sh: all overlays valid"
