#!/usr/bin/env bash
# Case 2: a pod of another service account does not get the demo identity.
#
# In namespace demo the ClusterSPIFFEID `demo` selects every pod and adds the selector
# k8s:sa:demo. A pod of service account `other` there is therefore selected (so the chart's
# fallback identity does not apply to it) but cannot satisfy k8s:sa:demo: it gets no identity
# at all, and `signet svid watch` exits with "the agent has no identity for this process".
# A pod in a namespace no ClusterSPIFFEID selects gets the fallback identity, not the demo one.
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/../lib.sh"

FALLBACK_NS=e2e-fallback
cleanup() {
  kubectl -n "$DEMO_NS" delete pod other --ignore-not-found --timeout=120s >/dev/null 2>&1 || true
  kubectl delete namespace "$FALLBACK_NS" --ignore-not-found --timeout=120s >/dev/null 2>&1 || true
}
trap cleanup EXIT

ensure_demo
ensure_sa "$DEMO_NS" other
kubectl -n "$DEMO_NS" delete pod other --ignore-not-found >/dev/null
workload_pod "$DEMO_NS" other other | kubectl apply -f - >/dev/null

# The container asks for its SVID and exits when refused; after two restarts (the entry has long
# reached the agent by then) the refusal is not a start-up race.
refused_twice() {
  local restarts code
  # A retried predicate: a failed lookup means "not yet", not a failed case.
  restarts=$(kubectl -n "$DEMO_NS" get pod other -o jsonpath='{.status.containerStatuses[0].restartCount}') || return 1
  code=$(kubectl -n "$DEMO_NS" get pod other -o jsonpath='{.status.containerStatuses[0].lastState.terminated.exitCode}') || return 1
  [[ "${restarts:-0}" -ge 2 && "$code" == 1 ]] || return 1
  kubectl -n "$DEMO_NS" logs pod/other -c demo --previous 2>/dev/null | grep -q "has no identity for this process"
}
retry 75 refused_twice || fail "pod other (service account other) was not refused an identity"
log "ok: pod other (sa other) is refused: $(kubectl -n "$DEMO_NS" logs pod/other -c demo --previous 2>/dev/null | tail -n 1)"
retry 15 csid_stat_is demo podsSelected -ge 2 || fail "ClusterSPIFFEID demo should count pod other as selected"
has_id "$DEMO_NS" deploy/demo "$DEMO_ID" || fail "deploy/demo lost ${DEMO_ID}"

ensure_namespace "$FALLBACK_NS"
workload_pod "$FALLBACK_NS" plain default | kubectl apply -f - >/dev/null
wait_pod_running "$FALLBACK_NS" plain || fail "pod ${FALLBACK_NS}/plain did not start"
fallback_id="spiffe://${TRUST_DOMAIN}/ns/${FALLBACK_NS}/sa/default"
retry 45 has_id "$FALLBACK_NS" pod/plain "$fallback_id" || fail "pod plain did not get the fallback ${fallback_id}"
lacks_id "$FALLBACK_NS" pod/plain "$DEMO_ID" || fail "pod plain holds ${DEMO_ID}"
log "ok: a pod of namespace ${FALLBACK_NS} holds only the fallback ${fallback_id}"
