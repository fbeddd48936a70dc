#!/usr/bin/env bash
# Case 5: deleting a pod removes its entry. Observed twice: on the control plane (the
# ClusterSPIFFEID's status.stats podsSelected and entriesToSet drop to 0) and on the node (the
# agent's signet_agent_entries gauge drops by one). A replacement pod of the same name has a new
# UID and gets a new entry and its identity.
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/../lib.sh"

NS=e2e-deletion
ID="spiffe://${TRUST_DOMAIN}/deletion/worker"
cleanup() {
  kubectl delete csid e2e-deletion --ignore-not-found >/dev/null 2>&1 || true
  kubectl delete namespace "$NS" --ignore-not-found --timeout=120s >/dev/null 2>&1 || true
}
trap cleanup EXIT

ensure_namespace "$NS"
ensure_sa "$NS" worker
kubectl apply -f - >/dev/null <<YAML
apiVersion: signet.dev/v1alpha1
kind: ClusterSPIFFEID
metadata:
  name: e2e-deletion
spec:
  spiffeIDTemplate: "spiffe://{{ .TrustDomain }}/deletion/{{ .PodSpec.ServiceAccountName }}"
  namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: ${NS}
  podSelector:
    matchLabels:
      e2e-case: deletion
YAML
workload_pod "$NS" victim worker e2e-case=deletion | kubectl apply -f - >/dev/null
wait_pod_running "$NS" victim || fail "pod victim did not start"
retry 45 has_id "$NS" pod/victim "$ID" || fail "pod victim never received ${ID}"
node=$(kubectl -n "$NS" get pod victim -o jsonpath='{.spec.nodeName}') || fail "could not read the node of pod victim"
uid=$(kubectl -n "$NS" get pod victim -o jsonpath='{.metadata.uid}') || fail "could not read the UID of pod victim"
counts_are() { csid_stat_is e2e-deletion podsSelected -eq "$1" && csid_stat_is e2e-deletion entriesToSet -eq "$1"; }
retry 30 counts_are 1 || fail "ClusterSPIFFEID e2e-deletion does not count the pod"
before=$(agent_metric "$node" signet_agent_entries) || fail "could not read the metrics of the agent of ${node}"
[[ -n "$before" ]] || fail "no signet_agent_entries on the agent of ${node}"
log "pod victim (uid ${uid}) on ${node}; its agent holds ${before} entries"

kubectl -n "$NS" delete pod victim --wait=true --timeout=60s >/dev/null
retry 30 counts_are 0 || fail "the entry of the deleted pod is still counted: podsSelected=$(csid_stat e2e-deletion podsSelected) entriesToSet=$(csid_stat e2e-deletion entriesToSet)"
entries_are() { [[ "$(agent_metric "$node" signet_agent_entries)" == "$1" ]]; }
retry 30 entries_are $((before - 1)) || fail "the agent of ${node} still holds $(agent_metric "$node" signet_agent_entries) entries (expected $((before - 1)))"
log "ok: deleting the pod removed its entry (status 0/0, agent ${before} -> $((before - 1)))"

workload_pod "$NS" victim worker e2e-case=deletion "$node" | kubectl apply -f - >/dev/null
wait_pod_running "$NS" victim || fail "the replacement pod did not start"
new_uid=$(kubectl -n "$NS" get pod victim -o jsonpath='{.metadata.uid}') || fail "could not read the UID of the replacement pod"
[[ "$new_uid" != "$uid" ]] || fail "the replacement pod has the old UID"
retry 45 has_id "$NS" pod/victim "$ID" || fail "the replacement pod never received ${ID}"
retry 30 counts_are 1 || fail "the replacement pod is not counted"
retry 30 entries_are "$before" || fail "the agent of ${node} did not get the replacement's entry"
log "ok: the replacement (uid ${new_uid}) got a new entry and ${ID}"
