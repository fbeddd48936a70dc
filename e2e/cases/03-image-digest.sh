#!/usr/bin/env bash
# Case 3: an image-digest selector is honoured. The digest comes from the running container's
# status.containerStatuses[].imageID; a ClusterSPIFFEID requiring it gives the pod a second
# identity, one requiring another digest gives nothing.
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/../lib.sh"

cleanup() {
  kubectl delete csid e2e-digest e2e-digest-wrong --ignore-not-found >/dev/null 2>&1 || true
}
trap cleanup EXIT

ensure_demo
pod=$(kubectl -n "$DEMO_NS" get pods -l app=demo -o jsonpath='{.items[0].metadata.name}') ||
  fail "could not list the demo pods"
image_id=$(kubectl -n "$DEMO_NS" get pod "$pod" -o jsonpath='{.status.containerStatuses[?(@.name=="demo")].imageID}') ||
  fail "could not read the imageID of pod ${pod}"
digest=$(grep -oE 'sha256:[0-9a-f]{64}' <<<"$image_id" | head -n 1) ||
  fail "no sha256 digest in imageID '${image_id}'"
[[ -n "$digest" ]] || fail "no sha256 digest in imageID '${image_id}'"
wrong=sha256:0000000000000000000000000000000000000000000000000000000000000000
log "container demo of ${pod}: imageID ${image_id}"

digest_id="spiffe://${TRUST_DOMAIN}/digest/demo"
wrong_id="spiffe://${TRUST_DOMAIN}/digest-wrong/demo"
identity() { # identity NAME PATH DIGEST
  cat <<YAML
apiVersion: signet.dev/v1alpha1
kind: ClusterSPIFFEID
metadata:
  name: $1
spec:
  spiffeIDTemplate: "spiffe://{{ .TrustDomain }}/$2/{{ .PodMeta.Namespace }}"
  namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: ${DEMO_NS}
  podSelector:
    matchLabels:
      app: demo
  workloadSelectorTemplates:
    - "k8s:container-image-digest:$3"
YAML
}
{ identity e2e-digest digest "$digest"; echo ---; identity e2e-digest-wrong digest-wrong "$wrong"; } | kubectl apply -f - >/dev/null

retry 45 has_id "$DEMO_NS" "pod/$pod" "$digest_id" || fail "pod ${pod} never received ${digest_id} (selector k8s:container-image-digest:${digest})"
has_id "$DEMO_NS" "pod/$pod" "$DEMO_ID" || fail "pod ${pod} lost ${DEMO_ID}"
# Both entries exist (the controller made one per selected pod); only the matching one is served.
retry 15 csid_stat_is e2e-digest-wrong entriesToSet -ge 1 ||
  fail "ClusterSPIFFEID e2e-digest-wrong has no entry"
for _ in 1 2 3 4 5; do
  lacks_id "$DEMO_NS" "pod/$pod" "$wrong_id" || fail "pod ${pod} holds ${wrong_id} though its digest is not ${wrong}"
  sleep 2
done
log "ok: ${pod} holds ${digest_id} for ${digest}; the wrong digest gives nothing"

kubectl delete csid e2e-digest e2e-digest-wrong >/dev/null
retry 30 lacks_id "$DEMO_NS" "pod/$pod" "$digest_id" || fail "${digest_id} was not withdrawn after its ClusterSPIFFEID was deleted"
log "ok: deleting the ClusterSPIFFEID withdrew ${digest_id}"
