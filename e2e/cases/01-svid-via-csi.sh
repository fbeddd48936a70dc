#!/usr/bin/env bash
# Case 1: a pod gets the SPIFFE ID its ClusterSPIFFEID renders, through the CSI-mounted socket.
# Uses config/examples/workload-deployment.yaml and clusterspiffeid-namespace-sa.yaml.
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/../lib.sh"

ensure_demo

pod=$(kubectl -n "$DEMO_NS" get pods -l app=demo -o jsonpath='{.items[0].metadata.name}') ||
  fail "could not list the demo pods"
driver=$(kubectl -n "$DEMO_NS" get pod "$pod" -o jsonpath='{.spec.volumes[?(@.name=="spiffe-workload-api")].csi.driver}') ||
  fail "could not read the volumes of pod $pod"
[[ "$driver" == "$CSI_DRIVER" ]] || fail "pod $pod does not use the CSI driver (got '$driver')"

json=$(svid_json "$DEMO_NS" "pod/$pod") || fail "signet svid fetch failed in $pod"
log "pod $pod: $(jq -c . <<<"$json")"
jq -e --arg id "$DEMO_ID" 'any(.[]; .spiffe_id == $id and .hint == "demo" and .chain_length >= 1)' >/dev/null <<<"$json" ||
  fail "pod $pod does not hold ${DEMO_ID} with hint demo"
# The chart's fallback identity does not apply: the demo ClusterSPIFFEID selects the pod.
jq -e --arg id "spiffe://${TRUST_DOMAIN}/ns/demo/sa/demo" 'all(.[]; .spiffe_id != $id)' >/dev/null <<<"$json" ||
  fail "pod $pod also holds the fallback identity"

not_after=$(jq -r --arg id "$DEMO_ID" '.[] | select(.spiffe_id == $id) | .not_after' <<<"$json") ||
  fail "could not read not_after from: ${json}"
expires=$(epoch "$not_after") || fail "not_after '${not_after}' is not an RFC 3339 time"
now=$(date +%s) || fail "date +%s failed"
remaining=$((expires - now))
((remaining > 0 && remaining <= 3600 + 60)) || fail "SVID lifetime ${remaining}s does not match ttl 1h"

# The controller reports the identity Ready with the pod selected.
check_status() {
  [[ "$(kubectl get csid demo -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]] &&
    csid_stat_is demo podsSelected -ge 1 && csid_stat_is demo entriesToSet -ge 1
}
retry 30 check_status || fail "ClusterSPIFFEID demo is not Ready with a selected pod"
log "ok: ${pod} holds ${DEMO_ID} (expires ${not_after}) through ${CSI_DRIVER}"
