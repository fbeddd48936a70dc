# shellcheck shell=bash
# Helpers of the kind end-to-end suite. Sourced by hack/e2e-kind.sh and by every e2e/cases/*.sh,
# which hack/e2e-kind.sh runs with the variables below exported.
set -euo pipefail

: "${REPO_ROOT:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
: "${E2E_NAMESPACE:=signet}"          # namespace of the Helm release
: "${E2E_RELEASE:=signet}"            # Helm release name (object names derive from it)
: "${TRUST_DOMAIN:=e2e.signet.test}"
: "${SIGNET_CLUSTER_NAME:=e2e}"       # the chart's clusterName (in agent IDs)
: "${IMAGE_REF:=signet:e2e}"          # the Signet image loaded into kind
: "${CSI_DRIVER:=csi.signet.dev}"
: "${E2E_ARTIFACTS:=${REPO_ROOT}/target/e2e-artifacts}"
: "${E2E_CASE:=e2e}"

# Used by the cases that source this file.
# shellcheck disable=SC2034
{
# Where workloads see the Workload API (the CSI volume's mount path).
SOCKET="unix:///spiffe-workload-api/api.sock"
SIGNET=/usr/local/bin/signet
DEMO_NS=demo
DEMO_ID="spiffe://${TRUST_DOMAIN}/apps/demo/demo"
# The chart's object name prefix (signet.fullname in charts/signet/templates/_helpers.tpl, without
# nameOverride/fullnameOverride, which the suite does not set): the release name, plus -signet
# unless it contains "signet", cut to 48 characters without a trailing "-".
FULLNAME="$E2E_RELEASE"
if [[ "$E2E_RELEASE" != *signet* ]]; then
  FULLNAME="${E2E_RELEASE}-signet"
fi
FULLNAME="${FULLNAME:0:48}"
FULLNAME="${FULLNAME%-}"
SERVER_DEPLOYMENT="${FULLNAME}-server"
AGENT_DAEMONSET="${FULLNAME}-agent"
# The default fallback ClusterSPIFFEID the server applies (signet.defaultIdentityName).
DEFAULT_IDENTITY="${FULLNAME}-default"
}

log() {
  printf '%s [%s] %s\n' "$(date -u +%H:%M:%S)" "$E2E_CASE" "$*" >&2
}

# retry N CMD...: runs CMD up to N times, RETRY_DELAY (2) seconds apart, until it succeeds.
retry() {
  local attempts=$1 i
  shift
  for ((i = 1; i <= attempts; i++)); do
    if "$@"; then
      return 0
    fi
    if ((i < attempts)); then
      sleep "${RETRY_DELAY:-2}"
    fi
  done
  return 1
}

# dump_logs: the state of the installation and of the test workloads, to stderr and to
# $E2E_ARTIFACTS/<case>.log.
dump_logs() {
  mkdir -p "$E2E_ARTIFACTS"
  local file="${E2E_ARTIFACTS}/${E2E_CASE}.log" ns pod
  {
    echo "===== nodes and pods"
    kubectl get nodes -o wide || true
    kubectl get pods -A -o wide || true
    for ns in "$E2E_NAMESPACE" $(kubectl get ns -l signet-e2e=true -o name 2>/dev/null | sed 's#namespace/##'); do
      for pod in $(kubectl -n "$ns" get pods -o name 2>/dev/null); do
        echo "===== describe ${ns}/${pod}"
        kubectl -n "$ns" describe "$pod" || true
        echo "===== logs ${ns}/${pod} (all containers)"
        kubectl -n "$ns" logs "$pod" --all-containers --prefix --timestamps --tail=400 || true
        echo "===== previous logs ${ns}/${pod}"
        kubectl -n "$ns" logs "$pod" --all-containers --prefix --timestamps --tail=200 --previous 2>/dev/null || true
      done
    done
    echo "===== ClusterSPIFFEIDs"
    kubectl get csid -o yaml || true
    echo "===== ClusterStaticEntries"
    kubectl get cse -o yaml || true
    echo "===== CSIDriver and CSINodes"
    kubectl get csidriver "$CSI_DRIVER" -o yaml || true
    kubectl get csinode -o yaml || true
    echo "===== bundle ConfigMap"
    kubectl -n "$E2E_NAMESPACE" get configmap signet-bundle -o yaml || true
    echo "===== events"
    kubectl get events -A --sort-by=.lastTimestamp 2>/dev/null | tail -n 150 || true
  } 2>&1 | tee -a "$file" >&2
  log "diagnostics written to $file"
}

# fail MESSAGE: reports, dumps the diagnostics, exits 1.
fail() {
  log "FAIL: $*"
  dump_logs
  exit 1
}

# ensure_namespace NS: a namespace for test workloads (labelled so dump_logs includes it).
ensure_namespace() {
  kubectl create namespace "$1" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl label namespace "$1" signet-e2e=true --overwrite >/dev/null
  # Pods of the service account `default` can be created once the controller made it.
  retry 30 kubectl -n "$1" get serviceaccount default >/dev/null 2>&1 ||
    fail "namespace $1 has no default service account"
}

# ensure_sa NS NAME
ensure_sa() {
  kubectl -n "$1" create serviceaccount "$2" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
}

# apply_example FILE: applies config/examples/FILE with the image under test.
apply_example() {
  sed "s#image: signet:dev#image: ${IMAGE_REF}#" "${REPO_ROOT}/config/examples/$1" | kubectl apply -f - >/dev/null
}

# workload_pod NS NAME SA [KEY=VALUE] [NODE]: prints a bare Pod like
# config/examples/workload-deployment.yaml (container `demo` running `signet svid watch` with the
# CSI volume), labelled app=NAME plus an optional extra label, optionally pinned to NODE.
workload_pod() {
  local ns=$1 name=$2 sa=$3 extra=${4:-} node=${5:-} extra_label="" node_selector=""
  if [[ -n "$extra" ]]; then
    extra_label="    ${extra%%=*}: \"${extra#*=}\""
  fi
  if [[ -n "$node" ]]; then
    node_selector="  nodeSelector: {kubernetes.io/hostname: \"${node}\"}"
  fi
  cat <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: ${name}
  namespace: ${ns}
  labels:
    app: ${name}
${extra_label}
spec:
${node_selector}
  serviceAccountName: ${sa}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 5
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    seccompProfile:
      type: RuntimeDefault
  containers:
    - name: demo
      image: ${IMAGE_REF}
      imagePullPolicy: IfNotPresent
      args: ["svid", "watch"]
      env:
        - name: SPIFFE_ENDPOINT_SOCKET
          value: ${SOCKET}
      volumeMounts:
        - name: spiffe-workload-api
          mountPath: /spiffe-workload-api
          readOnly: true
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: ["ALL"]
  volumes:
    - name: spiffe-workload-api
      csi:
        driver: ${CSI_DRIVER}
        readOnly: true
YAML
}

# svid_json NS TARGET: the X509-SVIDs of container `demo` of TARGET (pod/x or deploy/x), as the
# JSON array `signet svid fetch -o json` prints:
#   [{spiffe_id, hint, not_after, serial, chain_length}]
# not_after is RFC 3339 UTC (2026-01-02T03:04:05Z); serial is the leaf certificate's serial
# number in lowercase hex without the DER sign byte (leading zero bytes dropped), e.g.
# "5f3a..."; chain_length counts the certificates of the SVID's chain.
svid_json() {
  kubectl -n "$1" exec "$2" -c demo -- "$SIGNET" svid fetch -o json --socket "$SOCKET" 2>/dev/null
}

# has_id NS TARGET ID: TARGET currently holds an X509-SVID for ID.
has_id() {
  local json
  json=$(svid_json "$1" "$2") || return 1
  jq -e --arg id "$3" 'any(.[]; .spiffe_id == $id)' >/dev/null <<<"$json"
}

# lacks_id NS TARGET ID: TARGET answers but holds no X509-SVID for ID.
lacks_id() {
  local json
  json=$(svid_json "$1" "$2") || return 1
  jq -e --arg id "$3" 'all(.[]; .spiffe_id != $id)' >/dev/null <<<"$json"
}

# wait_pod_running NS POD: the pod's containers are running.
wait_pod_running() {
  kubectl -n "$1" wait --for=condition=Ready "pod/$2" --timeout=120s >/dev/null
}

# epoch TIMESTAMP: seconds since 1970 of an RFC 3339 UTC time like 2026-01-02T03:04:05Z.
epoch() {
  jq -rn --arg t "$1" '$t | fromdateiso8601'
}

# ensure_demo: the example workload and its ClusterSPIFFEID, serving DEMO_ID.
ensure_demo() {
  apply_example workload-deployment.yaml
  kubectl label namespace "$DEMO_NS" signet-e2e=true --overwrite >/dev/null
  apply_example clusterspiffeid-namespace-sa.yaml
  kubectl -n "$DEMO_NS" rollout status deploy/demo --timeout=180s >/dev/null ||
    fail "the demo Deployment did not become ready"
  retry 45 has_id "$DEMO_NS" deploy/demo "$DEMO_ID" ||
    fail "deploy/demo never received ${DEMO_ID}"
}

# agent_pod_on NODE: the agent pod running on NODE.
agent_pod_on() {
  kubectl -n "$E2E_NAMESPACE" get pods -l app.kubernetes.io/component=agent \
    --field-selector "spec.nodeName=$1" -o jsonpath='{.items[0].metadata.name}'
}

# agent_metric NODE NAME: the value of metric NAME on the agent of NODE (through the API
# server's pod proxy, port 8082).
agent_metric() {
  local pod
  pod=$(agent_pod_on "$1") || return 1
  kubectl get --raw "/api/v1/namespaces/${E2E_NAMESPACE}/pods/${pod}:8082/proxy/metrics" |
    awk -v name="$2" '$1 == name { print $2 }'
}

# csid_stat NAME FIELD: a counter of ClusterSPIFFEID NAME's status.stats (0 when absent).
csid_stat() {
  local value
  value=$(kubectl get csid "$1" -o jsonpath="{.status.stats.$2}" 2>/dev/null || true)
  echo "${value:-0}"
}

# csid_stat_is NAME FIELD OP N: compares a counter, e.g. csid_stat_is demo podsSelected -ge 1.
csid_stat_is() {
  test "$(csid_stat "$1" "$2")" "$3" "$4"
}

# bundle_field KEY: a key of the bundle ConfigMap the server publishes.
bundle_field() {
  kubectl -n "$E2E_NAMESPACE" get configmap signet-bundle -o "jsonpath={.data.${1//./\\.}}"
}
