#!/usr/bin/env bash
# Case 8: config/examples/clusterstaticentry.yaml serves a process outside any pod. The example
# is applied with this cluster's trust domain, cluster name and the UID of a worker node; its one
# selector is unix:uid:0. A copy of the signet binary run as root on that node (docker exec into
# the kind node) gets the static identity through the host socket, and the same binary run as
# another uid does not. (unix:path is not used: the agent runs with all capabilities dropped, so
# the kernel's ptrace access check refuses it /proc/<pid>/exe of a root process that holds
# capabilities, and the selector would never be produced.)
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/../lib.sh"

ID="spiffe://${TRUST_DOMAIN}/host/node-backup"
HOST_SOCKET="unix:///run/signet/sockets/api.sock"
OTHER_UID=65532
node=$(kubectl get nodes -l '!node-role.kubernetes.io/control-plane' -o jsonpath='{.items[0].metadata.name}') ||
  fail "could not list the worker nodes"
[[ -n "$node" ]] || fail "no worker node"
tmp=$(mktemp -d) || fail "mktemp failed"
cleanup() {
  kubectl delete cse node-backup --ignore-not-found >/dev/null 2>&1 || true
  docker exec "$node" rm -f /usr/local/bin/node-backup >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

uid=$(kubectl get node "$node" -o jsonpath='{.metadata.uid}') || fail "could not read the UID of node ${node}"
[[ -n "$uid" ]] || fail "node ${node} has no UID"
sed -e "s#spiffe://example.org/#spiffe://${TRUST_DOMAIN}/#g" \
  -e "s#/signet/agent/k8s/cluster/#/signet/agent/k8s/${SIGNET_CLUSTER_NAME}/#" \
  -e "s#00000000-0000-0000-0000-000000000000#${uid}#" \
  "${REPO_ROOT}/config/examples/clusterstaticentry.yaml" | kubectl apply -f - >/dev/null
ready() { [[ "$(kubectl get cse node-backup -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]; }
retry 30 ready || fail "ClusterStaticEntry node-backup is not Ready"

container=$(docker create "$IMAGE_REF") || fail "docker create ${IMAGE_REF} failed"
docker cp "${container}:/usr/local/bin/signet" "${tmp}/signet" >/dev/null
docker rm "$container" >/dev/null
docker cp "${tmp}/signet" "${node}:/usr/local/bin/node-backup" >/dev/null
docker exec "$node" chmod 0755 /usr/local/bin/node-backup

host_has_id() {
  local json
  json=$(docker exec "$node" /usr/local/bin/node-backup svid fetch -o json --socket "$HOST_SOCKET" 2>/dev/null) || return 1
  jq -e --arg id "$ID" 'any(.[]; .spiffe_id == $id and .hint == "node-backup")' >/dev/null <<<"$json"
}
retry 30 host_has_id || fail "/usr/local/bin/node-backup on ${node} did not get ${ID}"
log "ok: a root process (unix:uid:0) /usr/local/bin/node-backup on ${node} holds ${ID}"

# The same binary as another uid: refused outright (no identity at all) or served without ID.
if out=$(docker exec --user "${OTHER_UID}:${OTHER_UID}" "$node" /usr/local/bin/node-backup svid fetch -o json \
  --socket "$HOST_SOCKET" 2>&1); then
  jq -e --arg id "$ID" 'all(.[]; .spiffe_id != $id)' >/dev/null <<<"$out" ||
    fail "uid ${OTHER_UID} got ${ID} though the entry selects unix:uid:0"
elif [[ "$out" != *"no identity"* ]]; then
  fail "uid ${OTHER_UID} could not ask the agent (expected a refusal for lack of an identity): ${out}"
fi
log "ok: the same binary as uid ${OTHER_UID} does not get it"
