#!/usr/bin/env bash
# Case 8: config/examples/clusterstaticentry.yaml serves a process outside any pod. The example
# is applied with this cluster's trust domain, cluster name and the UID of a worker node; a copy
# of the signet binary run as root on that node (docker exec into the kind node) as
# /usr/local/bin/node-backup gets the static identity through the host socket, and the same
# binary under another path does not.
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/../lib.sh"

ID="spiffe://${TRUST_DOMAIN}/host/node-backup"
HOST_SOCKET="unix:///run/signet/sockets/api.sock"
node=$(kubectl get nodes -l '!node-role.kubernetes.io/control-plane' -o jsonpath='{.items[0].metadata.name}')
[[ -n "$node" ]] || fail "no worker node"
tmp=$(mktemp -d)
cleanup() {
  kubectl delete cse node-backup --ignore-not-found >/dev/null 2>&1 || true
  docker exec "$node" rm -f /usr/local/bin/node-backup /usr/local/bin/not-backup >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

uid=$(kubectl get node "$node" -o jsonpath='{.metadata.uid}')
sed -e "s#spiffe://example.org/#spiffe://${TRUST_DOMAIN}/#g" \
  -e "s#/signet/agent/k8s/cluster/#/signet/agent/k8s/${SIGNET_CLUSTER_NAME}/#" \
  -e "s#00000000-0000-0000-0000-000000000000#${uid}#" \
  "${REPO_ROOT}/config/examples/clusterstaticentry.yaml" | kubectl apply -f - >/dev/null
ready() { [[ "$(kubectl get cse node-backup -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]; }
retry 30 ready || fail "ClusterStaticEntry node-backup is not Ready"

container=$(docker create "$IMAGE_REF")
docker cp "${container}:/usr/local/bin/signet" "${tmp}/signet" >/dev/null
docker rm "$container" >/dev/null
docker cp "${tmp}/signet" "${node}:/usr/local/bin/node-backup" >/dev/null
docker cp "${tmp}/signet" "${node}:/usr/local/bin/not-backup" >/dev/null
docker exec "$node" chmod 0755 /usr/local/bin/node-backup /usr/local/bin/not-backup

host_has_id() {
  local json
  json=$(docker exec "$node" /usr/local/bin/node-backup svid fetch -o json --socket "$HOST_SOCKET" 2>/dev/null) || return 1
  jq -e --arg id "$ID" 'any(.[]; .spiffe_id == $id and .hint == "node-backup")' >/dev/null <<<"$json"
}
retry 30 host_has_id || fail "/usr/local/bin/node-backup on ${node} did not get ${ID}"
log "ok: a root process /usr/local/bin/node-backup on ${node} holds ${ID}"

if out=$(docker exec "$node" /usr/local/bin/not-backup svid fetch -o json --socket "$HOST_SOCKET" 2>&1); then
  jq -e --arg id "$ID" 'all(.[]; .spiffe_id != $id)' >/dev/null <<<"$out" ||
    fail "/usr/local/bin/not-backup got ${ID} though unix:path does not match"
fi
log "ok: the same binary under another path does not get it"
