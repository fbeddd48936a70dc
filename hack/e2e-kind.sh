#!/usr/bin/env bash
# The kind end-to-end suite: creates a kind cluster, builds and loads the Signet image, installs
# the Helm chart and runs e2e/cases/*.sh against real pods. See e2e/README.md.
#
# Needs docker, kind, kubectl, helm and jq. Environment:
#   KIND_CLUSTER_NAME  cluster name                          [signet-e2e]
#   KIND_NODE_IMAGE    kindest/node image (Kubernetes >= 1.29) [kind's default]
#   IMAGE, TAG         image to build and load                [signet, e2e]
#   SKIP_BUILD=1       use an existing IMAGE:TAG instead of building it
#   TRUST_DOMAIN       trust domain of the installation       [e2e.signet.test]
#   E2E_CASES          case name prefixes to run, e.g. "01 07" [all]
#   E2E_LOG_LEVEL      log level of the server and agents      [info]
#   E2E_ARTIFACTS      where diagnostics of failed cases go    [target/e2e-artifacts]
#   SKIP_CLEANUP=1     keep the cluster (a cluster that already existed is never deleted)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO_ROOT"

export KIND_CLUSTER_NAME="${KIND_CLUSTER_NAME:-signet-e2e}"
IMAGE="${IMAGE:-signet}"
TAG="${TAG:-e2e}"
export REPO_ROOT
export IMAGE_REF="${IMAGE}:${TAG}"
export TRUST_DOMAIN="${TRUST_DOMAIN:-e2e.signet.test}"
export SIGNET_CLUSTER_NAME=e2e
export E2E_NAMESPACE=signet
export E2E_RELEASE=signet
export E2E_ARTIFACTS="${E2E_ARTIFACTS:-${REPO_ROOT}/target/e2e-artifacts}"
export E2E_CASE=setup
# shellcheck source=e2e/lib.sh
source "${REPO_ROOT}/e2e/lib.sh"

for tool in docker kind kubectl helm jq; do
  command -v "$tool" >/dev/null 2>&1 || { echo "hack/e2e-kind.sh needs $tool on PATH" >&2; exit 2; }
done

created_cluster=0
cleanup() {
  local status=$?
  if [[ "${SKIP_CLEANUP:-0}" == 1 ]]; then
    log "SKIP_CLEANUP=1: keeping cluster ${KIND_CLUSTER_NAME} (kubectl context kind-${KIND_CLUSTER_NAME})"
  elif ((created_cluster)); then
    log "deleting cluster ${KIND_CLUSTER_NAME}"
    kind delete cluster --name "$KIND_CLUSTER_NAME" >/dev/null 2>&1 || true
  fi
  exit "$status"
}
trap cleanup EXIT

# --- cluster
if kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER_NAME"; then
  log "reusing existing kind cluster ${KIND_CLUSTER_NAME}"
else
  log "creating kind cluster ${KIND_CLUSTER_NAME}"
  node_image=()
  if [[ -n "${KIND_NODE_IMAGE:-}" ]]; then
    node_image=(--image "$KIND_NODE_IMAGE")
  fi
  created_cluster=1
  kind create cluster --name "$KIND_CLUSTER_NAME" --config e2e/kind-config.yaml \
    ${node_image[@]+"${node_image[@]}"} --wait 180s
fi
kubectl config use-context "kind-${KIND_CLUSTER_NAME}" >/dev/null
kubectl version >&2

# --- image
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  IMAGE="$IMAGE" TAG="$TAG" hack/build-image.sh >/dev/null
fi
log "loading ${IMAGE_REF} into the cluster"
kind load docker-image "$IMAGE_REF" --name "$KIND_CLUSTER_NAME"

# --- install
log "installing the chart into namespace ${E2E_NAMESPACE}"
kubectl create namespace "$E2E_NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl label namespace "$E2E_NAMESPACE" pod-security.kubernetes.io/enforce=privileged --overwrite >/dev/null
log_level="${E2E_LOG_LEVEL:-info}"
log_level="${log_level//,/\\,}" # helm --set splits on unescaped commas
helm_args=(
  --namespace "$E2E_NAMESPACE"
  --set "trustDomain=${TRUST_DOMAIN}"
  --set "clusterName=${SIGNET_CLUSTER_NAME}"
  --set "image.repository=${IMAGE}"
  --set "image.tag=${TAG}"
  --set image.pullPolicy=Never
  --set "server.logLevel=${log_level}"
  --set "agent.logLevel=${log_level}"
  --set server.logFormat=text
  --set agent.logFormat=text
  # Case 06 validates a JWT-SVID fetched before restarting the agent and the server.
  --set server.jwtTtl=15m
  --wait --timeout 5m
)
# helm --wait returns once the server is ready and every agent pod is ready, which needs the
# bundle ConfigMap the server publishes.
helm upgrade --install "$E2E_RELEASE" charts/signet "${helm_args[@]}" || fail "helm install failed"
kubectl -n "$E2E_NAMESPACE" rollout status "deploy/${SERVER_DEPLOYMENT}" --timeout=180s || fail "server rollout"
retry 60 kubectl -n "$E2E_NAMESPACE" get configmap signet-bundle >/dev/null 2>&1 ||
  fail "the server never published ConfigMap signet-bundle"
[[ -n "$(bundle_field bundle.pem)" && -n "$(bundle_field bundle.spiffe)" ]] ||
  fail "ConfigMap signet-bundle lacks bundle.pem or bundle.spiffe"
kubectl -n "$E2E_NAMESPACE" rollout status "ds/${AGENT_DAEMONSET}" --timeout=180s || fail "agent rollout"

# The default ClusterSPIFFEID is not a Helm object: the server's leader applies it
# (--default-identity-template; charts/signet/README.md, "Default identity") shortly after it
# becomes leader, so poll for it. Its name is what the chart passes the server
# (--default-identity-name), which must be the name e2e/lib.sh derives like the chart does.
default_csid=$(kubectl -n "$E2E_NAMESPACE" get "deploy/${SERVER_DEPLOYMENT}" -o json |
  jq -r '.spec.template.spec.containers[] | select(.name == "server") | .args[]
    | select(startswith("--default-identity-name=")) | ltrimstr("--default-identity-name=")') ||
  fail "could not read --default-identity-name from deploy/${SERVER_DEPLOYMENT}"
[[ -n "$default_csid" ]] || fail "deploy/${SERVER_DEPLOYMENT} passes no --default-identity-name"
[[ "$default_csid" == "$DEFAULT_IDENTITY" ]] ||
  fail "the chart names the default identity ${default_csid}, e2e/lib.sh expects ${DEFAULT_IDENTITY}"
retry 60 kubectl get csid "$default_csid" >/dev/null 2>&1 ||
  fail "the server never applied the default ClusterSPIFFEID ${default_csid}"
[[ "$(kubectl get csid "$default_csid" -o jsonpath='{.spec.fallback}/{.spec.hint}')" == true/default ]] ||
  fail "ClusterSPIFFEID ${default_csid} is not a fallback with hint default"
managers=" $(kubectl get csid "$default_csid" --show-managed-fields -o jsonpath='{.metadata.managedFields[*].manager}' || true) "
[[ "$managers" == *" signet-default-identity "* ]] ||
  fail "ClusterSPIFFEID ${default_csid} is not managed by field manager signet-default-identity (managers:${managers})"

# Every node registered the CSI driver with its kubelet (agents tolerate every taint).
for node in $(kubectl get nodes -o jsonpath='{.items[*].metadata.name}'); do
  retry 30 bash -c "kubectl get csinode '$node' -o jsonpath='{.spec.drivers[*].name}' | grep -qw '$CSI_DRIVER'" ||
    fail "node $node did not register CSI driver $CSI_DRIVER"
done
log "installed: server, agents on every node, CSI driver registered"

# --- cases
passed=0
failed=0
failed_cases=()
for case_file in e2e/cases/*.sh; do
  name="$(basename "$case_file" .sh)"
  if [[ -n "${E2E_CASES:-}" ]]; then
    selected=0
    for prefix in $E2E_CASES; do
      [[ "$name" == "$prefix"* ]] && selected=1
    done
    ((selected)) || continue
  fi
  log "=== case ${name}"
  started=$SECONDS
  if E2E_CASE="$name" bash "$case_file"; then
    passed=$((passed + 1))
    log "=== PASS ${name} ($((SECONDS - started)) s)"
  else
    failed=$((failed + 1))
    failed_cases+=("$name")
    log "=== FAIL ${name} ($((SECONDS - started)) s)"
  fi
done

echo "e2e: ${passed} passed, ${failed} failed"
if ((failed)); then
  echo "failed cases: ${failed_cases[*]} (diagnostics in ${E2E_ARTIFACTS})" >&2
  exit 1
fi
