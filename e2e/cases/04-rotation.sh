#!/usr/bin/env bash
# Case 4: X509-SVIDs rotate before they expire. A ClusterSPIFFEID with ttl 2m (the CRD accepts
# 0s to 8760h); the agent renews at about half the lifetime. For 150 s (more than a whole
# lifetime) the workload's SVID is sampled every 5 s: it must never be expired, must change at
# least once (a new serial number; not_after moves with it), and each new one must arrive while
# the previous one still had time left.
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/../lib.sh"

NS=e2e-rotation
ID="spiffe://${TRUST_DOMAIN}/rotation/rotator"
cleanup() {
  kubectl delete csid e2e-rotation --ignore-not-found >/dev/null 2>&1 || true
  kubectl delete namespace "$NS" --ignore-not-found --timeout=120s >/dev/null 2>&1 || true
}
trap cleanup EXIT

ensure_namespace "$NS"
ensure_sa "$NS" rotator
kubectl apply -f - >/dev/null <<YAML
apiVersion: signet.dev/v1alpha1
kind: ClusterSPIFFEID
metadata:
  name: e2e-rotation
spec:
  spiffeIDTemplate: "spiffe://{{ .TrustDomain }}/rotation/{{ .PodSpec.ServiceAccountName }}"
  namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: ${NS}
  ttl: 2m
YAML
workload_pod "$NS" rotator rotator | kubectl apply -f - >/dev/null
wait_pod_running "$NS" rotator || fail "pod rotator did not start"
retry 45 has_id "$NS" pod/rotator "$ID" || fail "pod rotator never received ${ID}"

previous=""
previous_serial=""
changes=0
deadline=$((SECONDS + 150))
while ((SECONDS < deadline)); do
  json=$(svid_json "$NS" pod/rotator) || fail "signet svid fetch failed"
  svid=$(jq -c --arg id "$ID" '[.[] | select(.spiffe_id == $id)] | first // empty' <<<"$json") ||
    fail "could not parse the svid fetch output: ${json}"
  [[ -n "$svid" ]] || fail "the SVID for ${ID} disappeared: $(jq -c . <<<"$json")"
  not_after=$(jq -r '.not_after // empty' <<<"$svid") || fail "could not read not_after from ${svid}"
  serial=$(jq -r '.serial // empty' <<<"$svid") || fail "could not read serial from ${svid}"
  [[ -n "$not_after" ]] || fail "the SVID for ${ID} has no not_after: ${svid}"
  # Lowercase hex without the DER sign byte (e2e/lib.sh, svid_json).
  [[ "$serial" =~ ^[0-9a-f]+$ && "$serial" != 00* ]] || fail "unexpected serial '${serial}' in ${svid}"
  now=$(date +%s) || fail "date +%s failed"
  expires=$(epoch "$not_after") || fail "not_after '${not_after}' is not an RFC 3339 time"
  ((expires > now)) || fail "the agent served an expired SVID (not after ${not_after})"
  ((expires - now <= 120 + 15)) || fail "SVID lifetime $((expires - now))s exceeds ttl 2m"
  # A new SVID has a new serial (and, with ttl 2m, a later not_after); either change is a rotation,
  # but a new not_after under the same serial would be a re-issued certificate: refuse it.
  if [[ -n "$previous" && ("$serial" != "$previous_serial" || "$not_after" != "$previous") ]]; then
    [[ "$serial" != "$previous_serial" ]] ||
      fail "not_after changed (${previous} -> ${not_after}) but the serial ${serial} did not"
    previous_expires=$(epoch "$previous") || fail "not_after '${previous}' is not an RFC 3339 time"
    left=$((previous_expires - now))
    ((left >= 20)) || fail "rotated only ${left}s before the previous SVID expired"
    changes=$((changes + 1))
    log "rotated: serial ${previous_serial} -> ${serial}, not after ${previous} -> ${not_after} (previous had ${left}s left)"
  fi
  previous=$not_after
  previous_serial=$serial
  sleep 5
done
((changes >= 1)) || fail "no rotation in 150 s with ttl 2m"
log "ok: ${changes} rotation(s) in 150 s, never an expired SVID"
