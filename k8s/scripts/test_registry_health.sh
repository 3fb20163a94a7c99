#!/usr/bin/env bash
# test_registry_health.sh: the guide's registry health check, against this registry's API.
#
# Kubernetes mode (default): the StatefulSet (DATABASE_TYPE=postgresql: the Deployment) exists
# and all its pods are Ready; every pod answers /health and /ready, reports its role and names
# the same leader, or decider (GET /api/v1/cluster); the ClusterIP Service answers /health, /api/v1/agents and
# /api/v1/capabilities. Requests are made from inside the registry pods with the image's
# python3 (`kubectl exec`), so no extra image has to be pulled; USE_CURL_POD=1 also runs the
# guide's throwaway curlimages/curl pod against the Service.
#
# Local mode: REGISTRY_URL=http://127.0.0.1:8080 checks one node directly (after
# `kubectl port-forward svc/mcp-mesh-registry 8080:8080`, or a node started with `make run`).
#
# Environment: NAMESPACE (mcp-mesh), STATEFULSET (mcp-mesh-registry: the StatefulSet, or in
# DATABASE_TYPE=postgresql the Deployment), REGISTRY_SVC
# (mcp-mesh-registry), REGISTRY_PORT (8080), KUBECTL (kubectl), REGISTRY_URL, USE_CURL_POD.
# Exit status 0 when every check passed, 1 otherwise.
set -euo pipefail

NAMESPACE=${NAMESPACE:-mcp-mesh}
STATEFULSET=${STATEFULSET:-mcp-mesh-registry}
REGISTRY_SVC=${REGISTRY_SVC:-mcp-mesh-registry}
REGISTRY_PORT=${REGISTRY_PORT:-8080}
KUBECTL=${KUBECTL:-kubectl}
REGISTRY_URL=${REGISTRY_URL:-}
USE_CURL_POD=${USE_CURL_POD:-0}

# GET a URL and print the body; fails (non-zero) on any status other than 200.
FETCH='import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
    sys.stdout.write(r.read().decode())'

# Read GET /api/v1/cluster on stdin; print "<role> <leader>" ("single-node" mode: "leader self";
# postgresql mode: "decider" or "replica", and the decider's instance id, the pod's name).
CLUSTER_SUMMARY='import json, sys
c = json.load(sys.stdin)
if c.get("mode") in ("raft", "postgresql"):
    print(c.get("role", "unknown"), c.get("leader") or "-")
else:
    print("leader", "self")'

fail() {
  echo "ERROR: $*" >&2
  exit 1
}

check_local() {
  local base=${REGISTRY_URL%/}
  echo "Testing MCP Mesh Registry at $base..."
  python3 -c "$FETCH" "$base/health" >/dev/null || fail "$base/health is not 200"
  python3 -c "$FETCH" "$base/ready" >/dev/null || fail "$base/ready is not 200 (not ready)"
  local summary
  summary=$(python3 -c "$FETCH" "$base/api/v1/cluster" | python3 -c "$CLUSTER_SUMMARY") ||
    fail "$base/api/v1/cluster failed"
  read -r role leader <<<"$summary"
  [ "$leader" != "-" ] || fail "no leader known (role $role)"
  echo "role: $role, leader: $leader"
  python3 -c "$FETCH" "$base/api/v1/agents" >/dev/null || fail "$base/api/v1/agents failed"
  python3 -c "$FETCH" "$base/api/v1/capabilities" >/dev/null || fail "$base/api/v1/capabilities failed"
  python3 -c "$FETCH" "$base/metrics" | grep -q '^mcp_registry_agents_total' ||
    fail "$base/metrics has no mcp_registry_agents_total"
  echo "Registry health check passed!"
}

# Run python3 -c "$FETCH" URL inside pod $1.
pod_fetch() {
  local pod=$1 url=$2
  "$KUBECTL" exec -n "$NAMESPACE" "$pod" -c registry -- python3 -c "$FETCH" "$url"
}

check_kubernetes() {
  echo "Testing MCP Mesh Registry deployment..."

  # The StatefulSet (Raft modes), or the Deployment of DATABASE_TYPE=postgresql
  local kind
  if "$KUBECTL" get statefulset "$STATEFULSET" -n "$NAMESPACE" &>/dev/null; then
    kind=statefulset
  elif "$KUBECTL" get deployment "$STATEFULSET" -n "$NAMESPACE" &>/dev/null; then
    kind=deployment
  else
    fail "Registry StatefulSet (or Deployment) not found"
  fi

  # Check all pods are ready
  local ready desired
  ready=$("$KUBECTL" get "$kind" "$STATEFULSET" -n "$NAMESPACE" -o jsonpath='{.status.readyReplicas}')
  desired=$("$KUBECTL" get "$kind" "$STATEFULSET" -n "$NAMESPACE" -o jsonpath='{.spec.replicas}')
  ready=${ready:-0}
  if [ "$ready" != "$desired" ]; then
    fail "Only $ready/$desired pods ready"
  fi
  echo "pods ready: $ready/$desired"

  # The pods: ordinal names of the StatefulSet, the Deployment's by its label
  local pods=() i
  if [ "$kind" = statefulset ]; then
    for ((i = 0; i < desired; i++)); do
      pods+=("$STATEFULSET-$i")
    done
  else
    read -r -a pods <<<"$("$KUBECTL" get pods -n "$NAMESPACE" \
      -l "app.kubernetes.io/name=$STATEFULSET" --field-selector=status.phase=Running \
      -o jsonpath='{.items[*].metadata.name}')"
  fi
  [ "${#pods[@]}" -gt 0 ] || fail "no registry pods found"

  # Every pod: liveness, readiness, and one leader (decider) that all agree on
  local leaders=() pod summary role leader
  for pod in "${pods[@]}"; do
    pod_fetch "$pod" "http://127.0.0.1:$REGISTRY_PORT/health" >/dev/null ||
      fail "$pod: /health is not 200"
    pod_fetch "$pod" "http://127.0.0.1:$REGISTRY_PORT/ready" >/dev/null ||
      fail "$pod: /ready is not 200"
    summary=$(pod_fetch "$pod" "http://127.0.0.1:$REGISTRY_PORT/api/v1/cluster" |
      python3 -c "$CLUSTER_SUMMARY") || fail "$pod: /api/v1/cluster failed"
    read -r role leader <<<"$summary"
    [ "$leader" != "-" ] || fail "$pod: no leader known (role $role)"
    if [ "$leader" = "self" ]; then
      leader=$pod
    fi
    echo "$pod: $role, leader $leader"
    leaders+=("$leader")
  done
  local distinct
  distinct=$(printf '%s\n' "${leaders[@]}" | sort -u | wc -l)
  [ "$distinct" -eq 1 ] || fail "pods disagree about the leader: $(printf '%s ' "${leaders[@]}")"

  # Test service endpoint (through the ClusterIP Service's DNS name)
  local svc="http://$REGISTRY_SVC.$NAMESPACE:$REGISTRY_PORT"
  pod_fetch "${pods[0]}" "$svc/health" || fail "$svc/health failed"
  echo
  pod_fetch "${pods[0]}" "$svc/api/v1/agents" >/dev/null || fail "$svc/api/v1/agents failed"
  pod_fetch "${pods[0]}" "$svc/api/v1/capabilities" >/dev/null ||
    fail "$svc/api/v1/capabilities failed"
  if [ "$USE_CURL_POD" = "1" ]; then
    "$KUBECTL" run test-curl -n "$NAMESPACE" --rm -i --image=curlimages/curl --restart=Never -- \
      curl -sf "$svc/health" || fail "curl pod could not reach $svc/health"
  fi

  echo "Registry health check passed!"
}

if [ -n "$REGISTRY_URL" ]; then
  check_local
else
  command -v "$KUBECTL" >/dev/null || fail "$KUBECTL not found (set KUBECTL, or REGISTRY_URL for local mode)"
  check_kubernetes
fi
