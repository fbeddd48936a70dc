//! `signet.authz.v1.Authorization` on the Workload API socket: a workload's effective
//! AuthorizationPolicy (`WatchPolicy`) and single decisions (`Check`) for enforcement points
//! that do not evaluate policies themselves. Callers are attested exactly as for the Workload
//! API and only ever see the policy of their own identities.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use signet_core::policy::{PolicySet, TrustContext};
use signet_proto::authz::{
    self as pb, CheckRequest, CheckResponse, WatchPolicyRequest, WatchPolicyResponse,
    authorization_server::Authorization,
};
use signet_spiffe::SpiffeId;
use signet_tls::authz::{Access, Authorizer, EffectivePolicy};
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};

use crate::peer::PeerInfo;
use crate::pushed::{ResponseStream, pushed};
use crate::workload_api::WorkloadApi;

/// How long a call waits for the server's first policy set after the agent started.
const POLICY_WAIT: Duration = Duration::from_secs(10);
/// Longest method or path accepted by `Check`.
const MAX_FIELD_BYTES: usize = 8 * 1024;

/// The service; shares attestation and the SVID cache with the Workload API.
#[derive(Debug, Clone)]
pub struct AuthorizationApi {
    workload: WorkloadApi,
    /// Decides for every caller (one set of counters for the whole agent).
    authorizer: Arc<Authorizer>,
}

impl AuthorizationApi {
    /// The service for the agent's Workload API.
    pub fn new(workload: WorkloadApi) -> Self {
        let trust = trust_context(&workload);
        let authorizer = Arc::new(Authorizer::new(
            EffectivePolicy::deny_all(trust),
            workload.metrics.authz.clone(),
        ));
        Self {
            workload,
            authorizer,
        }
    }

    async fn policies(&self) -> Result<Arc<PolicySet>, Status> {
        let mut policies = self.workload.source.policies();
        let ready = tokio::time::timeout(POLICY_WAIT, policies.wait_for(Option::is_some)).await;
        match ready {
            Ok(Ok(set)) => set.clone().ok_or_else(no_policy),
            _ => Err(no_policy()),
        }
    }

    /// The caller's SPIFFE IDs, after attestation; PermissionDenied without any.
    async fn caller_ids<T>(
        &self,
        request: &Request<T>,
    ) -> Result<(signet_core::SelectorSet, Vec<SpiffeId>), Status> {
        let selectors = self.workload.attest(request).await?;
        let identities = self.workload.identities_when_ready(&selectors).await;
        let ids = ids_of(&identities);
        if ids.is_empty() {
            return Err(Status::permission_denied("no identity issued"));
        }
        Ok((selectors, ids))
    }
}

fn no_policy() -> Status {
    Status::unavailable("no authorization policy from the server yet; retry")
}

/// Our trust domain and every one this agent holds a federated bundle of (peers whose SVIDs can
/// be verified at all).
fn trust_context(workload: &WorkloadApi) -> TrustContext {
    TrustContext {
        local: workload.source.trust_domain().clone(),
        federated: workload
            .cache()
            .federated_bundles()
            .iter()
            .map(|b| b.trust_domain().clone())
            .collect(),
    }
}

fn ids_of(identities: &crate::cache::Identities) -> Vec<SpiffeId> {
    let mut ids: Vec<SpiffeId> = Vec::new();
    for (entry, _) in &identities.ready {
        if !ids.contains(&entry.spiffe_id) {
            ids.push(entry.spiffe_id.clone());
        }
    }
    ids
}

fn watch_response(set: &PolicySet, ids: &[SpiffeId], trust: &TrustContext) -> WatchPolicyResponse {
    WatchPolicyResponse {
        spiffe_ids: ids.iter().map(ToString::to_string).collect(),
        policies: set
            .effective(ids)
            .into_iter()
            .map(pb::Policy::from)
            .collect(),
        default_policy: pb::DefaultPolicy::from(set.default_policy).into(),
        trust_domain: trust.local.to_string(),
        federated_trust_domains: trust.federated.iter().map(ToString::to_string).collect(),
    }
}

fn bounded(field: &str, value: &str) -> Result<(), Status> {
    if value.len() > MAX_FIELD_BYTES {
        return Err(Status::invalid_argument(format!(
            "{field} is longer than {MAX_FIELD_BYTES} bytes"
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl Authorization for AuthorizationApi {
    type WatchPolicyStream = ResponseStream<WatchPolicyResponse>;

    async fn watch_policy(
        &self,
        request: Request<WatchPolicyRequest>,
    ) -> Result<Response<Self::WatchPolicyStream>, Status> {
        let result = async {
            let (selectors, ids) = self.caller_ids(&request).await?;
            let set = self.policies().await?;
            let trust = trust_context(&self.workload);
            let policies = self.workload.source.policies();
            let identities = self.workload.cache().subscribe();
            let changes = futures::stream::select(
                WatchStream::from_changes(policies.clone()).map(drop),
                WatchStream::from_changes(identities).map(drop),
            );
            let workload = self.workload.clone();
            // Read again after subscribing so no change between the checks above and the
            // subscriptions is missed.
            let set = policies.borrow().clone().unwrap_or(set);
            let current = ids_of(&workload.cache().identities(&selectors));
            let ids = if current.is_empty() { ids } else { current };
            let mut last = watch_response(&set, &ids, &trust);
            let peer = request.extensions().get::<PeerInfo>().cloned();
            let stream = pushed(last.clone(), peer, changes, move |()| {
                let Some(set) = policies.borrow().clone() else {
                    return Ok(None);
                };
                let ids = ids_of(&workload.cache().identities(&selectors));
                if ids.is_empty() {
                    return Err(Status::permission_denied("no identity issued"));
                }
                let next = watch_response(&set, &ids, &trust);
                if next == last {
                    return Ok(None);
                }
                last = next.clone();
                Ok(Some(next))
            });
            Ok(Response::new(stream))
        }
        .await;
        self.workload.record("WatchPolicy", result)
    }

    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let result = async {
            let (_, ids) = self.caller_ids(&request).await?;
            let set = self.policies().await?;
            let check = request.into_inner();
            bounded("method", &check.method)?;
            bounded("path", &check.path)?;
            let target = if check.target_spiffe_id.is_empty() {
                match ids.as_slice() {
                    [only] => only.clone(),
                    _ => {
                        return Err(Status::invalid_argument(
                            "the caller has several identities: set target_spiffe_id",
                        ));
                    }
                }
            } else {
                let target = SpiffeId::new(&check.target_spiffe_id)
                    .map_err(|e| Status::invalid_argument(format!("target_spiffe_id: {e}")))?;
                if !ids.contains(&target) {
                    return Err(Status::permission_denied(
                        "target_spiffe_id is not an identity of the caller",
                    ));
                }
                target
            };
            let peer = (!check.peer_spiffe_id.is_empty())
                .then(|| SpiffeId::new(&check.peer_spiffe_id))
                .transpose()
                .map_err(|e| Status::invalid_argument(format!("peer_spiffe_id: {e}")))?;
            let port = u16::try_from(check.port)
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| Status::invalid_argument("port must be 1-65535"))?;
            let http = match (check.method.is_empty(), check.path.is_empty()) {
                (true, true) => None,
                // The query never takes part in a decision, and never reaches the audit log.
                (false, false) => Some((
                    check.method.as_str(),
                    check.path.split('?').next().unwrap_or_default(),
                )),
                _ => {
                    return Err(Status::invalid_argument(
                        "give both method and path for HTTP, or neither for TCP",
                    ));
                }
            };
            let policy =
                EffectivePolicy::from_set(&set, vec![target], trust_context(&self.workload));
            let verdict = self.authorizer.check_with(
                &policy,
                &Access {
                    peer: peer.as_ref(),
                    port,
                    http,
                },
            );
            Ok(Response::new(CheckResponse {
                decision: if verdict.allowed {
                    pb::Decision::Allow
                } else {
                    pb::Decision::Deny
                }
                .into(),
                reason: verdict.reason,
                deciding_policies: verdict.deciding_policy.into_iter().collect(),
                contributions: verdict
                    .matched
                    .into_iter()
                    .map(|(policy, action, enforcement)| pb::Contribution {
                        policy,
                        action: pb::Action::from(action).into(),
                        enforcement: pb::Enforcement::from(enforcement).into(),
                    })
                    .collect(),
            }))
        }
        .await;
        self.workload.record("Check", result)
    }
}
