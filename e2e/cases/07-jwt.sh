#!/usr/bin/env bash
# Case 7: a JWT-SVID validates against the published bundle. The workload fetches a token for
# audience e2e; the SPIFFE bundle (ConfigMap signet-bundle, key bundle.spiffe) is copied out of
# the cluster and the token is validated offline, with no agent, by the Signet image
# (`signet jwt validate --bundle`). A wrong audience and a tampered signature are refused; the
# agent's ValidateJWTSVID accepts the token too.
set -euo pipefail
# shellcheck source=e2e/lib.sh
source "$(dirname "$0")/../lib.sh"

tmp=$(mktemp -d) || fail "mktemp failed"
trap 'rm -rf "$tmp"' EXIT

ensure_demo
json=$(kubectl -n "$DEMO_NS" exec deploy/demo -c demo -- "$SIGNET" jwt fetch --audience e2e \
  --spiffe-id "$DEMO_ID" -o json --socket "$SOCKET") || fail "signet jwt fetch failed"
token=$(jq -r '.[0].token' <<<"$json") || fail "unexpected jwt fetch output: ${json}"
[[ "$(jq -r '.[0].spiffe_id' <<<"$json")" == "$DEMO_ID" && "$token" == *.*.* ]] || fail "unexpected jwt fetch output: ${json}"

bundle_field bundle.spiffe >"${tmp}/bundle.spiffe"
[[ -s "${tmp}/bundle.spiffe" ]] || fail "ConfigMap signet-bundle has no bundle.spiffe"
jq -e '.keys | any(.use == "jwt-svid")' "${tmp}/bundle.spiffe" >/dev/null || fail "bundle.spiffe has no jwt-svid key"
chmod 0755 "$tmp" && chmod 0644 "${tmp}/bundle.spiffe"

validate() { # validate AUDIENCE TOKEN
  docker run --rm -v "${tmp}:/b:ro" "$IMAGE_REF" jwt validate --bundle /b/bundle.spiffe \
    --trust-domain "$TRUST_DOMAIN" --audience "$1" "$2" 2>&1
}
out=$(validate e2e "$token") || fail "offline validation failed: ${out}"
grep -qF "$DEMO_ID" <<<"$out" || fail "offline validation did not print ${DEMO_ID}: ${out}"
log "ok: offline: ${out}"

if out=$(validate other-audience "$token"); then
  fail "a token for audience e2e validated for other-audience: ${out}"
fi
signature=${token##*.}
first=${signature:0:1}
replacement=A
[[ "$first" == A ]] && replacement=B
tampered="${token%.*}.${replacement}${signature:1}"
if out=$(validate e2e "$tampered"); then
  fail "a token with a tampered signature validated: ${out}"
fi
log "ok: wrong audience and tampered signature are refused"

out=$(kubectl -n "$DEMO_NS" exec deploy/demo -c demo -- "$SIGNET" jwt validate --audience e2e \
  --socket "$SOCKET" "$token" 2>&1) || fail "the agent refused the token: ${out}"
grep -qF "$DEMO_ID" <<<"$out" || fail "the agent's validation did not name ${DEMO_ID}: ${out}"
log "ok: the agent validates it too"
