#!/usr/bin/env bash
# Case 9: AuthorizationPolicy enforced by `signet proxy` sidecars. The backend pod runs the proxy
# inbound in STRICT mode in front of a small HTTP application (the proxy's own /livez and
# /metrics endpoint, so no other image is needed); the frontend pod runs the proxy outbound and a
# curl container calling http://127.0.0.1:9000. Both get the chart's default identity
# (spiffe://<td>/ns/<ns>/sa/<sa>). Checks: with no policy the default (allow-trust-domain)
# admits the frontend; an ALLOW policy selecting the backend pod is Accepted with one target pod
# and restricts it to GET /livez (/metrics: 403); editing the policy applies without a restart;
# a DENY wins over the ALLOW; a pod without an SVID is refused by the STRICT listener; the
# server explains decisions with `signet authz check`; denials are counted by the proxy.
# Needs the curl image (CURL_IMAGE) from a registry.
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/../lib.sh"

NS=authz-e2e
CURL_IMAGE=${CURL_IMAGE:-curlimages/curl:8.11.1}
BACKEND_ID="spiffe://${TRUST_DOMAIN}/ns/${NS}/sa/backend"
FRONTEND_ID="spiffe://${TRUST_DOMAIN}/ns/${NS}/sa/frontend"

ensure_namespace "$NS"
ensure_sa "$NS" backend
ensure_sa "$NS" frontend
kubectl -n "$NS" delete authorizationpolicies --all >/dev/null 2>&1 || true

csi_volume="  volumes:
    - name: spiffe-workload-api
      csi: {driver: ${CSI_DRIVER}, readOnly: true}"
proxy_container() { # proxy_container ARGS_JSON
  cat <<YAML
    - name: proxy
      image: ${IMAGE_REF}
      imagePullPolicy: IfNotPresent
      args: $1
      env: [{name: SPIFFE_ENDPOINT_SOCKET, value: "${SOCKET}"}]
      volumeMounts: [{name: spiffe-workload-api, mountPath: /spiffe-workload-api, readOnly: true}]
      securityContext: {runAsNonRoot: true, runAsUser: 65532, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
YAML
}

kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: backend, namespace: ${NS}, labels: {app: backend}}
spec:
  serviceAccountName: backend
  automountServiceAccountToken: false
  containers:
$(proxy_container '["proxy", "--inbound-listen=0.0.0.0:8443", "--inbound-forward=127.0.0.1:9090", "--metrics-address=127.0.0.1:9090"]')
${csi_volume}
---
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: ${NS}}
spec:
  selector: {app: backend}
  ports: [{port: 8443, targetPort: 8443}]
---
apiVersion: v1
kind: Pod
metadata: {name: frontend, namespace: ${NS}, labels: {app: frontend}}
spec:
  serviceAccountName: frontend
  automountServiceAccountToken: false
  containers:
$(proxy_container "[\"proxy\", \"--outbound=127.0.0.1:9000,backend.${NS}.svc:8443,${BACKEND_ID}\", \"--metrics-address=127.0.0.1:9091\"]")
    - name: client
      image: ${CURL_IMAGE}
      command: ["sleep", "3600"]
      securityContext: {runAsNonRoot: true, runAsUser: 100, allowPrivilegeEscalation: false}
${csi_volume}
---
apiVersion: v1
kind: Pod
metadata: {name: stranger, namespace: ${NS}}
spec:
  automountServiceAccountToken: false
  containers:
    - name: client
      image: ${CURL_IMAGE}
      command: ["sleep", "3600"]
      securityContext: {runAsNonRoot: true, runAsUser: 100, allowPrivilegeEscalation: false}
YAML
for pod in backend frontend stranger; do
  wait_pod_running "$NS" "$pod" || fail "pod ${pod} did not start"
done

# code PATH: the HTTP status the frontend gets for GET PATH through the proxies.
code() {
  kubectl -n "$NS" exec frontend -c client -- curl -s -o /dev/null -w '%{http_code}' \
    --max-time 10 "http://127.0.0.1:9000$1" 2>/dev/null || true
}
expect_code() { # expect_code PATH CODE
  [[ "$(code "$1")" == "$2" ]]
}

retry 30 expect_code /livez 200 || fail "no policy: GET /livez should pass (default allow-trust-domain), got $(code /livez)"
log "ok: default policy admits ${FRONTEND_ID}"

policy() { # policy PATHS_JSON
  cat <<YAML
apiVersion: signet.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: backend-readers, namespace: ${NS}}
spec:
  selector: {matchLabels: {app: backend}}
  action: ALLOW
  rules:
    - from: [{spiffeIDs: ["${FRONTEND_ID}"]}]
      to: [{ports: [8443], methods: [GET], paths: $1}]
YAML
}
policy '["/livez"]' | kubectl apply -f - >/dev/null
accepted() {
  local status
  status=$(kubectl -n "$NS" get authorizationpolicy backend-readers -o json | jq -c '.status') || return 1
  jq -e '(.conditions[] | select(.type == "Accepted") | .status == "True") and .targets.pods == 1' >/dev/null <<<"$status"
}
retry 30 accepted || fail "backend-readers not Accepted with one target pod: $(kubectl -n "$NS" get authz backend-readers -o jsonpath='{.status}')"
retry 30 expect_code /metrics 403 || fail "GET /metrics should be denied, got $(code /metrics)"
expect_code /livez 200 || fail "GET /livez should still pass, got $(code /livez)"
log "ok: ALLOW policy restricts the backend to GET /livez"

out=$(kubectl -n "$E2E_NAMESPACE" exec "deploy/${SERVER_DEPLOYMENT}" -- "$SIGNET" authz check \
  --admin-socket /var/lib/signet/server/admin.sock --from "$FRONTEND_ID" --to "$BACKEND_ID" \
  --port 8443 --method GET --path /metrics 2>&1) || fail "signet authz check failed: ${out}"
if ! grep -q "^DENY" <<<"$out" || ! grep -qF "${NS}/backend-readers" <<<"$out"; then
  fail "authz check did not explain the denial: ${out}"
fi
log "ok: signet authz check: $(head -1 <<<"$out")"

policy '["/livez", "/metrics"]' | kubectl apply -f - >/dev/null
retry 30 expect_code /metrics 200 || fail "the edited policy should allow /metrics, got $(code /metrics)"
log "ok: the policy edit applied without restarting anything"

# The backend's application is the proxy's own metrics endpoint: the earlier denial is counted.
body=$(kubectl -n "$NS" exec frontend -c client -- curl -s --max-time 10 http://127.0.0.1:9000/metrics) ||
  fail "cannot read the backend proxy's metrics"
grep -q 'signet_authz_denied_total{policy="",action="ALLOW",enforcement="Enforce"} [1-9]' <<<"$body" ||
  fail "the denial of GET /metrics was not counted: $(grep signet_authz <<<"$body")"
log "ok: the denial is counted in signet_authz_denied_total"

kubectl apply -f - >/dev/null <<YAML
apiVersion: signet.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-metrics, namespace: ${NS}}
spec:
  targetSPIFFEIDs: ["${BACKEND_ID}"]
  action: DENY
  rules: [{to: [{paths: ["/metrics"]}]}]
YAML
retry 30 expect_code /metrics 403 || fail "DENY should win over ALLOW, got $(code /metrics)"
log "ok: DENY wins over ALLOW"

out=$(kubectl -n "$NS" exec stranger -c client -- curl -sk --max-time 10 -o /dev/null -w '%{http_code}' \
  "https://backend.${NS}.svc:8443/livez" 2>&1) && [[ "$out" == 2* ]] &&
  fail "a client without an SVID got through: ${out}"
out=$(kubectl -n "$NS" exec stranger -c client -- curl -s --max-time 10 -o /dev/null -w '%{http_code}' \
  "http://backend.${NS}.svc:8443/livez" 2>&1) && [[ "$out" == 2* ]] &&
  fail "a plaintext client got through: ${out}"
log "ok: STRICT refuses clients without an SVID"

kubectl -n "$NS" delete authorizationpolicies --all >/dev/null
retry 30 expect_code /metrics 200 || fail "after deleting the policies the default should apply, got $(code /metrics)"
log "ok: deleting the policies restores the default"
