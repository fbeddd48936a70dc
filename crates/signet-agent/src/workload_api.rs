//! The SPIFFE Workload API (`SpiffeWorkloadAPI`), exactly as specified: security header,
//! out-of-band caller attestation, full state in every stream message, first message at once,
//! pushes on rotation and bundle change, JWT-SVIDs minted via the server and cached, local
//! JWT-SVID validation, WIT profile unimplemented.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use signet_core::SelectorSet;
use signet_proto::workload::{
    self as pb, JwtBundlesRequest, JwtBundlesResponse, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, WitBundlesRequest, WitBundlesResponse,
    WitsvidRequest, WitsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svidRequest,
    X509svidResponse, spiffe_workload_api_server::SpiffeWorkloadApi,
};
use signet_spiffe::{Bundle, JwtSvid, JwtValidation};
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

use crate::attestor::unix::{UnixAttestorConfig, attest};
use crate::cache::{Identities, SvidCache};
use crate::peer::PeerInfo;
use crate::telemetry::AgentMetrics;
use crate::workload_source::WorkloadSource;

/// How long a stream waits for SVIDs of matching entries that are still being signed.
const PENDING_WAIT: Duration = Duration::from_secs(10);

/// The Workload API service.
#[derive(Debug, Clone)]
pub struct WorkloadApi {
    pub(crate) source: WorkloadSource,
    attestor: UnixAttestorConfig,
    /// The k8s workload attestor (Kubernetes mode).
    k8s_attestor: Option<crate::attestor::k8s::K8sAttestor>,
    pub(crate) metrics: Arc<AgentMetrics>,
    /// The X509-SVID response per selector set at a cache revision: the streams of workloads
    /// with the same selectors share one computation per change instead of one each.
    x509_memo: Arc<parking_lot::Mutex<X509Memo>>,
}

impl WorkloadApi {
    /// The service over `source`, attesting callers with the unix attestor and, in Kubernetes
    /// mode, the k8s attestor.
    pub fn new(
        source: WorkloadSource,
        attestor: UnixAttestorConfig,
        k8s_attestor: Option<crate::attestor::k8s::K8sAttestor>,
        metrics: Arc<AgentMetrics>,
    ) -> Self {
        Self {
            source,
            attestor,
            k8s_attestor,
            metrics,
            x509_memo: Arc::default(),
        }
    }
}

/// Shared X509-SVID responses: selectors → (cache revision, response or no identity).
pub(crate) type X509Memo = HashMap<SelectorSet, (u64, Option<Arc<X509svidResponse>>)>;

/// Most selector sets remembered by the response memo before it is reset.
const MAX_MEMO_ENTRIES: usize = 4096;

use crate::pushed::{ResponseStream, pushed};

fn check_header<T>(request: &Request<T>) -> Result<(), Status> {
    let values = request
        .metadata()
        .get_all(signet_proto::workload_request::SECURITY_HEADER)
        .iter()
        .map(|value| value.as_bytes());
    signet_proto::workload_request::check_security_header(values)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// The FetchX509SVID message for `identities`, with this trust domain's `bundle`.
pub fn x509_svid_response(bundle: Option<&Bundle>, identities: &Identities) -> X509svidResponse {
    let bundle = bundle.map(Bundle::to_der_concat).unwrap_or_default();
    let svids = identities
        .ready
        .iter()
        .map(|(entry, cached)| pb::X509svid {
            spiffe_id: cached.svid.spiffe_id().to_string(),
            x509_svid: cached.svid.chain_der(),
            x509_svid_key: cached.svid.private_key_pkcs8().to_vec(),
            bundle: bundle.clone(),
            hint: entry.hint.clone(),
        })
        .collect();
    X509svidResponse {
        svids,
        crl: Vec::new(),
        federated_bundles: identities
            .federated
            .iter()
            .map(|b| (td_key(b.trust_domain()), b.to_der_concat()))
            .collect(),
    }
}

/// Why a caller gets no SVID: the agent does not know yet (its first sync, an SVID being
/// signed, or one that expired while the server was unreachable) is UNAVAILABLE, so clients
/// retry; only a caller no entry matches gets PERMISSION_DENIED.
pub(crate) fn no_identity(identities: &Identities, synced: bool) -> Status {
    if identities.pending || !synced {
        let reason = if identities.expired > 0 {
            "this workload's SVID expired and the agent could not have it re-signed yet (is the server reachable?); retry"
        } else {
            "this workload's SVID is not available yet (the agent is still syncing or signing it); retry"
        };
        // Clients that honour gRPC retry pushback spread their retries over a second or two
        // instead of returning together (after an agent restart, every workload asks at once).
        signet_proto::pushback::with_pushback(
            Status::unavailable(reason),
            Duration::from_millis(500),
            Duration::from_millis(1500),
        )
    } else {
        Status::permission_denied("no identity issued")
    }
}

/// The same for the JWT paths, which look at entries rather than SVIDs.
pub(crate) fn no_entry(synced: bool) -> Status {
    no_identity(&Identities::default(), synced)
}

fn td_key(trust_domain: &signet_spiffe::TrustDomain) -> String {
    trust_domain.id().to_string()
}

impl WorkloadApi {
    pub(crate) fn record<T>(
        &self,
        method: &'static str,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        self.metrics
            .call(method, result.as_ref().map(|_| ()).map_err(Status::code));
        result
    }

    pub(crate) fn cache(&self) -> &Arc<SvidCache> {
        self.source.cache()
    }

    /// Attests the caller: selectors from the unix attestor, then a check that the process that
    /// connected is still the one /proc described.
    pub(crate) async fn attest<T>(&self, request: &Request<T>) -> Result<SelectorSet, Status> {
        check_header(request)?;
        self.attest_caller(request).await
    }

    /// Attests the caller without the Workload API's security header (Envoy's SDS client sends
    /// none, as SPIRE also accepts).
    pub(crate) async fn attest_caller<T>(
        &self,
        request: &Request<T>,
    ) -> Result<SelectorSet, Status> {
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .cloned()
            .ok_or_else(|| {
                Status::unavailable("workload attestation failed: no peer credentials")
            })?;
        let config = self.attestor.clone();
        let attested_peer = peer.clone();
        let selectors = tokio::task::spawn_blocking(move || attest(&config, &attested_peer))
            .await
            .map_err(|_| Status::unavailable("workload attestation failed"))?
            .map_err(|error| {
                self.metrics.attestation_failures.inc();
                debug!(%error, "workload attestation failed");
                Status::unavailable("workload attestation failed")
            })?;
        let mut selectors = selectors;
        if let Some(k8s) = &self.k8s_attestor {
            // The pod comes from /proc/<pid>/cgroup: only for a caller the kernel pinned.
            let pid = peer.pid.filter(|_| peer.pinned()).ok_or_else(|| {
                self.metrics.attestation_failures.inc();
                debug!("k8s workload attestation refused: the caller is not pinned (SO_PEERPIDFD, Linux 6.5 or later, is needed)");
                Status::unavailable("workload attestation failed: this kernel cannot pin the calling process (Linux 6.5 or later is needed for Kubernetes attestation)")
            })?;
            let pod_selectors = k8s.attest(pid).await.map_err(|error| {
                self.metrics.attestation_failures.inc();
                debug!(%error, reason = error.metric_label(), "k8s workload attestation failed");
                Status::unavailable("workload attestation failed")
            })?;
            selectors.extend(pod_selectors);
        }
        if peer.pinned() && !peer.still_alive() {
            self.metrics.attestation_failures.inc();
            warn!(pid = ?peer.pid, "caller exited during attestation (possible PID reuse); refused");
            return Err(Status::unauthenticated(
                "caller process changed during attestation",
            ));
        }
        Ok(selectors)
    }

    /// Waits (bounded) for pending SVIDs so a workload that starts with its entry does not get a
    /// spurious PermissionDenied.
    pub(crate) async fn identities_when_ready(&self, selectors: &SelectorSet) -> Identities {
        let mut changes = self.cache().subscribe();
        let deadline = tokio::time::Instant::now() + PENDING_WAIT;
        loop {
            changes.borrow_and_update();
            let identities = self.cache().identities(selectors);
            if !identities.ready.is_empty() || (!identities.pending && self.cache().is_synced()) {
                return identities;
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return identities;
            }
        }
    }

    fn x509_response(&self, identities: &Identities) -> X509svidResponse {
        x509_svid_response(self.cache().bundle().as_deref(), identities)
    }

    /// The response for `selectors` at cache `revision` (`None`: no identity), computed once per
    /// revision and shared.
    fn shared_x509(&self, selectors: &SelectorSet, revision: u64) -> Option<Arc<X509svidResponse>> {
        if let Some((at, response)) = self.x509_memo.lock().get(selectors)
            && *at == revision
        {
            return response.clone();
        }
        let identities = self.cache().identities(selectors);
        let response =
            (!identities.ready.is_empty()).then(|| Arc::new(self.x509_response(&identities)));
        {
            let mut memo = self.x509_memo.lock();
            if memo.len() >= MAX_MEMO_ENTRIES {
                memo.clear();
            }
            memo.insert(selectors.clone(), (revision, response.clone()));
        }
        response
    }

    /// This trust domain's bundle and those of the trust domains the caller's entries federate
    /// with.
    fn bundles_response(&self, identities: &Identities) -> X509BundlesResponse {
        let mut bundles = HashMap::new();
        if let Some(bundle) = self.cache().bundle() {
            bundles.insert(td_key(bundle.trust_domain()), bundle.to_der_concat());
        }
        for bundle in &identities.federated {
            bundles.insert(td_key(bundle.trust_domain()), bundle.to_der_concat());
        }
        X509BundlesResponse {
            crl: Vec::new(),
            bundles,
        }
    }

    fn jwt_bundles_response(&self, federated: &[Arc<Bundle>]) -> JwtBundlesResponse {
        let mut bundles = HashMap::new();
        for bundle in self.cache().bundle().iter().chain(federated) {
            bundles.insert(
                td_key(bundle.trust_domain()),
                bundle.to_jwks_json().into_bytes(),
            );
        }
        JwtBundlesResponse { bundles }
    }
}

fn json_to_prost(value: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_to_prost).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(json_object_to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn json_object_to_struct(map: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_prost(v)))
            .collect(),
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = ResponseStream<X509svidResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let result = async {
            let selectors = self.attest(&request).await?;
            let first = self.identities_when_ready(&selectors).await;
            if first.ready.is_empty() {
                return Err(no_identity(&first, self.cache().is_synced()));
            }
            let this = self.clone();
            let peer = request.extensions().get::<PeerInfo>().cloned();
            let changes = WatchStream::from_changes(self.cache().subscribe());
            let mut last = Arc::new(self.x509_response(&first));
            let stream = pushed((*last).clone(), peer, changes, move |revision| {
                // Every identity redacted: tell the workload to stop using them.
                let next = this.shared_x509(&selectors, revision).ok_or_else(|| {
                    no_identity(
                        &this.cache().identities(&selectors),
                        this.cache().is_synced(),
                    )
                })?;
                if Arc::ptr_eq(&next, &last) || *next == *last {
                    return Ok(None);
                }
                last = next;
                Ok(Some((*last).clone()))
            });
            Ok(Response::new(stream))
        }
        .await;
        self.record("FetchX509SVID", result)
    }

    type FetchX509BundlesStream = ResponseStream<X509BundlesResponse>;

    async fn fetch_x509_bundles(
        &self,
        request: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let result = async {
            let selectors = self.attest(&request).await?;
            let first = self.identities_when_ready(&selectors).await;
            if first.ready.is_empty() {
                return Err(no_identity(&first, self.cache().is_synced()));
            }
            let this = self.clone();
            let peer = request.extensions().get::<PeerInfo>().cloned();
            let changes = WatchStream::from_changes(self.cache().subscribe());
            let mut last = self.bundles_response(&first);
            let stream = pushed(last.clone(), peer, changes, move |_| {
                let identities = this.cache().identities(&selectors);
                if identities.ready.is_empty() {
                    return Err(no_identity(&identities, this.cache().is_synced()));
                }
                let next = this.bundles_response(&identities);
                if next == last {
                    return Ok(None);
                }
                last = next.clone();
                Ok(Some(next))
            });
            Ok(Response::new(stream))
        }
        .await;
        self.record("FetchX509Bundles", result)
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        let result = async {
            let selectors = self.attest(&request).await?;
            let body = request.into_inner();
            let signet_proto::workload_request::JwtSvidParams {
                audience,
                spiffe_id: wanted,
            } = signet_proto::workload_request::jwt_svid_params(&body)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let entries: Vec<_> = self
                .cache()
                .matching_entries(&selectors)
                .into_iter()
                .filter(|e| wanted.as_ref().is_none_or(|w| &e.spiffe_id == w))
                .collect();
            if entries.is_empty() {
                return Err(no_entry(self.cache().is_synced()));
            }
            let mut svids = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for entry in entries {
                if !seen.insert(entry.spiffe_id.clone()) {
                    continue;
                }
                let now = SystemTime::now();
                let token = match self.cache().cached_jwt(&entry.id, &audience, now) {
                    Some(token) => token,
                    None => {
                        let minted = self
                            .source
                            .minter()
                            .mint(&entry.id, &audience)
                            .await
                            .map_err(|status| {
                                warn!(entry = %entry.id, %status, "JWT-SVID minting failed");
                                Status::unavailable("could not mint a JWT-SVID; try again")
                            })?;
                        let expiry = minted.expires_at;
                        self.cache().store_jwt(
                            &entry.id,
                            &audience,
                            minted.token.clone(),
                            now,
                            expiry,
                        );
                        minted.token
                    }
                };
                svids.push(pb::Jwtsvid {
                    spiffe_id: entry.spiffe_id.to_string(),
                    svid: token,
                    hint: entry.hint.clone(),
                });
            }
            Ok(Response::new(JwtsvidResponse { svids }))
        }
        .await;
        self.record("FetchJWTSVID", result)
    }

    type FetchJWTBundlesStream = ResponseStream<JwtBundlesResponse>;

    async fn fetch_jwt_bundles(
        &self,
        request: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let result = async {
            let selectors = self.attest(&request).await?;
            let entries = self.cache().matching_entries(&selectors);
            if entries.is_empty() {
                return Err(no_entry(self.cache().is_synced()));
            }
            let this = self.clone();
            let peer = request.extensions().get::<PeerInfo>().cloned();
            let changes = WatchStream::from_changes(self.cache().subscribe());
            let mut last = self.jwt_bundles_response(&self.cache().federated_of(&entries));
            let stream = pushed(last.clone(), peer, changes, move |_| {
                let entries = this.cache().matching_entries(&selectors);
                if entries.is_empty() {
                    return Err(no_entry(this.cache().is_synced()));
                }
                let next = this.jwt_bundles_response(&this.cache().federated_of(&entries));
                if next == last {
                    return Ok(None);
                }
                last = next.clone();
                Ok(Some(next))
            });
            Ok(Response::new(stream))
        }
        .await;
        self.record("FetchJWTBundles", result)
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        let result = async {
            self.attest(&request).await?;
            let body = request.into_inner();
            signet_proto::workload_request::check_validate_request(&body)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            // This trust domain's bundle and every federated one.
            let own = signet_tls::BundleSource::bundles(self.source.bundles());
            let mut set = (*own).clone();
            for bundle in self.cache().federated_bundles() {
                set.insert((*bundle).clone());
            }
            let svid = JwtSvid::validate(
                &body.svid,
                &set,
                &body.audience,
                JwtValidation::at(SystemTime::now()),
            )
            .map_err(|e| Status::invalid_argument(format!("invalid JWT-SVID: {e}")))?;
            Ok(Response::new(ValidateJwtsvidResponse {
                spiffe_id: svid.spiffe_id().to_string(),
                claims: Some(json_object_to_struct(svid.claims())),
            }))
        }
        .await;
        self.record("ValidateJWTSVID", result)
    }

    type FetchWITSVIDStream = ResponseStream<WitsvidResponse>;

    async fn fetch_witsvid(
        &self,
        request: Request<WitsvidRequest>,
    ) -> Result<Response<Self::FetchWITSVIDStream>, Status> {
        let result = async {
            check_header(&request)?;
            Err(Status::unimplemented("WIT-SVIDs are not supported"))
        }
        .await;
        self.record("FetchWITSVID", result)
    }

    type FetchWITBundlesStream = ResponseStream<WitBundlesResponse>;

    async fn fetch_wit_bundles(
        &self,
        request: Request<WitBundlesRequest>,
    ) -> Result<Response<Self::FetchWITBundlesStream>, Status> {
        let result = async {
            check_header(&request)?;
            Err(Status::unimplemented("WIT-SVIDs are not supported"))
        }
        .await;
        self.record("FetchWITBundles", result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workload_told_to_retry_is_given_a_jittered_pushback_and_a_refusal_none() {
        let waiting = no_identity(&Identities::default(), false);
        assert_eq!(waiting.code(), tonic::Code::Unavailable);
        let wait = signet_proto::pushback::pushback_of(&waiting).unwrap();
        assert!((Duration::from_millis(500)..=Duration::from_secs(2)).contains(&wait));
        let expired = no_identity(
            &Identities {
                pending: true,
                expired: 1,
                ..Identities::default()
            },
            true,
        );
        assert_eq!(expired.code(), tonic::Code::Unavailable);
        assert!(expired.message().contains("expired"));
        let refused = no_identity(&Identities::default(), true);
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert_eq!(signet_proto::pushback::pushback_of(&refused), None);
    }
}
