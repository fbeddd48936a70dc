#!/usr/bin/env bash
# Case 10: autoPopulateDNSNames. A ClusterSPIFFEID with autoPopulateDNSNames gives a pod behind a
# Service the Service's DNS names (<svc>.<ns>.svc.<cluster domain>, <svc>.<ns>.svc, <svc>.<ns>,
# <svc>) in its X509-SVID, after the names of its dnsNameTemplates; a pod no Service selects gets
# the template's names only; deleting the Service takes the names away again.
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/../lib.sh"

NS=e2e-dns
cleanup() {
  kubectl delete csid e2e-dns --ignore-not-found >/dev/null 2>&1 || true
  kubectl delete namespace "$NS" --ignore-not-found --timeout=120s >/dev/null 2>&1 || true
}
trap cleanup EXIT

ensure_namespace "$NS"
kubectl apply -f - >/dev/null <<YAML
apiVersion: signet.dev/v1alpha1
kind: ClusterSPIFFEID
metadata:
  name: e2e-dns
spec:
  spiffeIDTemplate: "spiffe://{{ .TrustDomain }}/dns/{{ .PodMeta.Name }}"
  namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: ${NS}
  dnsNameTemplates:
    - "{{ .PodMeta.Name }}.pods.example"
  autoPopulateDNSNames: true
YAML
workload_pod "$NS" web default | kubectl apply -f - >/dev/null
workload_pod "$NS" loner default | kubectl apply -f - >/dev/null
kubectl -n "$NS" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata:
  name: shop
spec:
  selector:
    app: web
  ports:
    - port: 80
      targetPort: 8080
YAML
wait_pod_running "$NS" web || fail "pod ${NS}/web did not start"
wait_pod_running "$NS" loner || fail "pod ${NS}/loner did not start"

# dns_names POD: the DNS names of POD's SVID, comma-separated.
dns_names() {
  local json
  json=$(svid_json "$NS" "pod/$1") || return 1
  jq -r '.[0].dns_names // [] | join(",")' <<<"$json"
}
web_expected="web.pods.example,shop.${NS}.svc.cluster.local,shop.${NS}.svc,shop.${NS},shop"
has_service_names() { [[ "$(dns_names web)" == "$web_expected" ]]; }
retry 60 has_service_names || fail "pod web has DNS names '$(dns_names web || true)', expected ${web_expected}"
[[ "$(dns_names loner)" == "loner.pods.example" ]] ||
  fail "pod loner (no Service) has DNS names '$(dns_names loner || true)'"
log "ok: pod web holds ${web_expected}"

kubectl -n "$NS" delete service shop --timeout=60s >/dev/null
template_only() { [[ "$(dns_names web)" == "web.pods.example" ]]; }
retry 90 template_only || fail "pod web kept the Service's names after the Service was deleted: $(dns_names web || true)"
log "ok: the Service's names went with the Service"
