#!/usr/bin/env bash
# Case 11: programs that only read files. config/examples/nginx-with-helper.yaml runs nginx with
# its SVID from files that `signet helper` writes (init container --once, then a sidecar that
# keeps them current and sends nginx SIGHUP). nginx serves mutual TLS with them: a client with
# the pod's own SVID is served, one without a certificate is refused.
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/../lib.sh"

cleanup() {
  kubectl -n "$DEMO_NS" delete deploy/nginx-mtls configmap/nginx-mtls --ignore-not-found >/dev/null 2>&1 || true
}
trap cleanup EXIT

ensure_demo
apply_example nginx-with-helper.yaml
kubectl -n "$DEMO_NS" rollout status deploy/nginx-mtls --timeout=240s >/dev/null ||
  fail "nginx with the helper did not become ready (the helper's /readyz gates it)"

files=$(kubectl -n "$DEMO_NS" exec deploy/nginx-mtls -c nginx -- ls -l /certs) ||
  fail "cannot list /certs in the nginx container"
log "files: ${files}"
for name in svid.pem svid_key.pem svid_bundle.pem; do
  grep -q " ${name}\$" <<<"$files" || fail "/certs has no ${name}"
done
grep -E '^-rw-------.* svid_key.pem$' <<<"$files" >/dev/null || fail "svid_key.pem is not mode 0600"

served() {
  kubectl -n "$DEMO_NS" exec deploy/nginx-mtls -c nginx -- \
    curl -sk --cert /certs/svid.pem --key /certs/svid_key.pem https://127.0.0.1:8443/ |
    grep -q '^hello'
}
retry 30 served || fail "nginx did not serve a client presenting the pod's SVID"
refused=$(kubectl -n "$DEMO_NS" exec deploy/nginx-mtls -c nginx -- \
  curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1:8443/) || true
[[ "$refused" == 400 ]] || fail "a client without a certificate got HTTP ${refused}, not 400"

helper_log=$(kubectl -n "$DEMO_NS" logs deploy/nginx-mtls -c signet-helper) ||
  fail "no log from the helper sidecar"
grep -q "wrote ${DEMO_ID}" <<<"$helper_log" || fail "the helper did not report writing ${DEMO_ID}: ${helper_log}"
log "ok: nginx serves mutual TLS from the files signet helper keeps current"
