#!/usr/bin/env bash
# Case 6: restarting the agent of the workload's node, then rolling the server, does not break
# workloads: the workload keeps fetching its SVID through the same CSI mount, a new pod still gets
# its identity, and credentials issued before the restarts stay valid (the X509-SVID's lifetime
# continues and its CA stays in the bundle; a JWT-SVID fetched before still validates against
# the bundle published after; hack/e2e-kind.sh sets server.jwtTtl=15m so it outlives the
# restarts).
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/../lib.sh"

tmp=$(mktemp -d) || fail "mktemp failed"
cleanup() {
  kubectl -n "$DEMO_NS" delete pod after-restart --ignore-not-found --timeout=120s >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

ensure_demo
pod=$(kubectl -n "$DEMO_NS" get pods -l app=demo -o jsonpath='{.items[0].metadata.name}') ||
  fail "could not list the demo pods"
node=$(kubectl -n "$DEMO_NS" get pod "$pod" -o jsonpath='{.spec.nodeName}') || fail "could not read the node of pod ${pod}"
json=$(svid_json "$DEMO_NS" "pod/$pod") || fail "signet svid fetch failed"
not_after=$(jq -r --arg id "$DEMO_ID" '.[] | select(.spiffe_id == $id) | .not_after' <<<"$json") ||
  fail "could not read not_after from: ${json}"
bundle_before=$(bundle_field bundle.pem) || fail "could not read bundle.pem of ConfigMap signet-bundle"
token=$(kubectl -n "$DEMO_NS" exec "pod/$pod" -c demo -- "$SIGNET" jwt fetch --audience e2e-restart \
  --spiffe-id "$DEMO_ID" -o json --socket "$SOCKET" | jq -r '.[0].token') ||
  fail "signet jwt fetch failed in ${pod}"
[[ -n "$not_after" && -n "$token" && "$token" != null ]] || fail "could not record the credentials before the restarts"

# --- agent
restarts_before=$(kubectl -n "$DEMO_NS" get pod "$pod" -o jsonpath='{.status.containerStatuses[0].restartCount}') ||
  fail "could not read the restart count of ${pod}"
old_agent=$(agent_pod_on "$node") || fail "could not find the agent pod on ${node}"
log "deleting agent ${old_agent} on ${node}"
kubectl -n "$E2E_NAMESPACE" delete pod "$old_agent" --wait=true --timeout=60s >/dev/null
new_agent_ready() {
  local name
  name=$(agent_pod_on "$node" 2>/dev/null) || return 1
  [[ -n "$name" && "$name" != "$old_agent" ]] || return 1
  kubectl -n "$E2E_NAMESPACE" wait --for=condition=Ready "pod/$name" --timeout=5s >/dev/null 2>&1
}
retry 60 new_agent_ready || fail "no new agent became ready on ${node}"
retry 30 has_id "$DEMO_NS" "pod/$pod" "$DEMO_ID" || fail "${pod} cannot fetch ${DEMO_ID} after the agent restart"
log "ok: ${pod} fetches ${DEMO_ID} from the new agent $(agent_pod_on "$node")"
# Its `signet svid watch` reconnected instead of exiting: the container did not restart.
restarts_after=$(kubectl -n "$DEMO_NS" get pod "$pod" -o jsonpath='{.status.containerStatuses[0].restartCount}') ||
  fail "could not read the restart count of ${pod}"
[[ "$restarts_after" == "$restarts_before" ]] ||
  fail "${pod} restarted across the agent restart (${restarts_before} -> ${restarts_after}): svid watch should reconnect"

# --- server
log "rolling the server"
kubectl -n "$E2E_NAMESPACE" rollout restart "deploy/${SERVER_DEPLOYMENT}" >/dev/null
kubectl -n "$E2E_NAMESPACE" rollout status "deploy/${SERVER_DEPLOYMENT}" --timeout=300s >/dev/null || fail "server rollout"
retry 30 has_id "$DEMO_NS" "pod/$pod" "$DEMO_ID" || fail "${pod} cannot fetch ${DEMO_ID} after the server restart"
workload_pod "$DEMO_NS" after-restart demo | kubectl apply -f - >/dev/null
wait_pod_running "$DEMO_NS" after-restart || fail "pod after-restart did not start"
retry 45 has_id "$DEMO_NS" pod/after-restart "$DEMO_ID" || fail "a pod created after the restarts got no identity"
log "ok: ${pod} and a new pod get ${DEMO_ID} after the server rolled"

# --- credentials issued before
expires=$(epoch "$not_after") || fail "not_after '${not_after}' is not an RFC 3339 time"
now=$(date +%s) || fail "date +%s failed"
((expires > now)) || fail "the X509-SVID issued before the restarts has expired"
# One line per certificate, so the bundles compare certificate by certificate.
one_per_line() { awk '/-----BEGIN CERTIFICATE-----/ { c = "" } { c = c $0 } /-----END CERTIFICATE-----/ { print c }'; }
certs_after=$(bundle_field bundle.pem | one_per_line) || fail "could not read bundle.pem after the restarts"
while IFS= read -r cert; do
  grep -qxF -e "$cert" <<<"$certs_after" ||
    fail "a CA certificate of the bundle before the restarts is no longer in the bundle"
done < <(one_per_line <<<"$bundle_before")
bundle_field bundle.spiffe >"${tmp}/bundle.spiffe"
chmod 0755 "$tmp" && chmod 0644 "${tmp}/bundle.spiffe"
out=$(docker run --rm -v "${tmp}:/b:ro" "$IMAGE_REF" jwt validate --bundle /b/bundle.spiffe \
  --trust-domain "$TRUST_DOMAIN" --audience e2e-restart "$token" 2>&1) ||
  fail "the JWT-SVID fetched before the restarts no longer validates: ${out}"
grep -qF "$DEMO_ID" <<<"$out" || fail "offline validation did not name ${DEMO_ID}: ${out}"
log "ok: credentials issued before the restarts are still valid (X509 until ${not_after}, CA kept, JWT validates)"
