//! The agent API (`signet.agent.v1.AgentService`): node attestation, entry sync, and signing
//! restricted to the entries parented to the calling agent.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::Stream;
use signet_core::EntryId;
use signet_proto::agent::{
    self as pb, AttestAgentRequest, AttestAgentResponse, MintJwtSvidRequest, MintJwtSvidResponse,
    RenewAgentRequest, RenewAgentResponse, SignX509SvidsRequest, SignX509SvidsResponse,
    SyncEntriesRequest, SyncEntriesResponse, agent_service_server::AgentService,
};
use signet_spiffe::SpiffeId;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::agents::{AgentRefusal, AgentRegistry};
use crate::authority::AuthorityService;
use crate::datastore::{AgentRecord, Datastore, TokenRedemption};
use crate::index::EntryIndex;
use crate::join_token::hash_token;
use crate::metrics::{AttestationLabels, ServerMetrics, SvidLabels};
use crate::sync_session::{SyncSession, bundle_message};

/// Most CSRs in one signing batch.
pub const MAX_CSRS_PER_BATCH: usize = 1000;

/// Shared state of the agent API.
#[derive(Debug, Clone)]
pub struct AgentApi {
    pub(crate) authority: Arc<AuthorityService>,
    pub(crate) index: Arc<EntryIndex>,
    pub(crate) agents: Arc<AgentRegistry>,
    /// Standalone only: Kubernetes mode keeps nothing on the replica's disk.
    pub(crate) datastore: Option<Datastore>,
    pub(crate) metrics: Arc<ServerMetrics>,
    pub(crate) agent_svid_ttl: Duration,
    /// Kubernetes PSAT node attestation, in Kubernetes mode.
    pub(crate) psat: Option<Arc<crate::psat::PsatAttestor>>,
    /// The AuthorizationPolicies every agent receives.
    pub(crate) policies: Arc<crate::policies::PolicyStore>,
    /// When join tokens expire and agents were seen.
    pub(crate) clock: Arc<dyn signet_ca::Clock>,
    /// The federated bundles every agent receives.
    pub(crate) federation: Arc<crate::federation::Federation>,
    /// What each agent holds per authority.
    pub(crate) reports: Arc<crate::svid_reports::SvidReports>,
    /// How long after its expiry an agent SVID may still re-attest.
    pub(crate) reattest_grace: Duration,
    /// Admission control (reconnect storms, per-agent signing budgets).
    pub(crate) admission: Arc<crate::admission::Admission>,
}

use crate::unix_seconds as unix;

fn is_agent_id(id: &SpiffeId) -> bool {
    signet_core::AgentId::parse(id).is_some()
}

/// When the caller's agent SVID was issued (its notBefore is set 10 s before issuance).
fn svid_issued<T>(request: &Request<T>) -> Option<SystemTime> {
    let certs = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)?;
    let leaf = certs.first()?;
    signet_spiffe::x509::not_before_of(leaf.as_ref()).map(|t| t + Duration::from_secs(10))
}

impl AgentApi {
    /// Counts and answers a call refused by admission control.
    fn refused(&self, call: &'static str, refused: crate::admission::Refused) -> Status {
        self.metrics
            .admission_refusals
            .get_or_create(&crate::metrics::AdmissionLabels {
                call,
                reason: refused.reason.label(),
            })
            .inc();
        refused.status
    }

    /// Waits for a place to do CPU work for `call`, or refuses.
    async fn admit(&self, call: &'static str) -> Result<crate::admission::Admitted, Status> {
        self.admission
            .work()
            .await
            .map_err(|refused| self.refused(call, refused))
    }

    /// The calling agent, authenticated by its client certificate (already chain-verified by
    /// the TLS layer) and still known and not banned.
    fn authorize<T>(&self, request: &Request<T>) -> Result<SpiffeId, Status> {
        let certs = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs)
            .ok_or_else(|| {
                Status::unauthenticated("an agent X509-SVID client certificate is required")
            })?;
        let id = signet_tls::peer_id(&certs)
            .filter(is_agent_id)
            .ok_or_else(|| {
                Status::unauthenticated("the client certificate is not an agent SVID")
            })?;
        match self.agents.check_svid(&id, svid_issued(request)) {
            Ok(()) => Ok(id),
            Err(AgentRefusal::Unknown) => Err(Status::permission_denied(format!(
                "agent {id} is not attested (evicted?); attest again"
            ))),
            Err(AgentRefusal::Banned) => {
                Err(Status::permission_denied(format!("agent {id} is banned")))
            }
        }
    }

    async fn attest_join_token(
        &self,
        token: &str,
        csr: &[u8],
    ) -> Result<AttestAgentResponse, Status> {
        let refuse = |metrics: &ServerMetrics, result: &'static str, message: &str| {
            metrics
                .attestations
                .get_or_create(&AttestationLabels { result })
                .inc();
            warn!(result, "join token attestation refused");
            Status::permission_denied(message.to_owned())
        };
        if token.is_empty() || token.len() > 256 {
            return Err(refuse(
                &self.metrics,
                "malformed",
                "join token is malformed",
            ));
        }
        // A request that cannot succeed must not use the token up: check the CSR first.
        let trust_domain = self.authority.bundle().trust_domain().clone();
        let expected = crate::join_token::agent_id_for(&trust_domain, token)?;
        signet_ca::csr::verify_csr_with(csr, &expected, signet_ca::CsrIdRule::ExactOrNone)
            .map_err(|e| Status::invalid_argument(format!("the CSR is unusable: {e}")))?;
        let Some(datastore) = &self.datastore else {
            return Err(Status::failed_precondition(
                "join tokens are for standalone mode; in Kubernetes, agents attest with k8s_psat",
            ));
        };
        let outcome = datastore
            .redeem_join_token(hash_token(token), self.clock.now())
            .await
            .map_err(crate::error::ServerError::from)?;
        let agent_id = match outcome {
            TokenRedemption::Accepted(id) => id,
            TokenRedemption::Unknown => {
                return Err(refuse(
                    &self.metrics,
                    "unknown_token",
                    "join token is not valid",
                ));
            }
            TokenRedemption::AlreadyUsed => {
                return Err(refuse(
                    &self.metrics,
                    "reused_token",
                    "join token was already used",
                ));
            }
            TokenRedemption::Expired => {
                return Err(refuse(
                    &self.metrics,
                    "expired_token",
                    "join token has expired",
                ));
            }
        };
        if self.agents.is_banned(&agent_id) {
            return Err(refuse(&self.metrics, "banned", "this agent is banned"));
        }
        self.issue_agent_svid(agent_id, "join_token", Vec::new(), csr)
            .await
    }

    /// Re-attestation of an agent whose SVID expired while the server was unreachable: the chain
    /// was issued by an authority still in our bundle, expired less than the grace window ago,
    /// the agent proves it holds the SVID's key by signing the new CSR with a fresh timestamp,
    /// and it is still known here (an evicted or banned agent is refused). It gets its own ID
    /// again.
    async fn attest_expired_svid(
        &self,
        proof: &pb::ExpiredSvidProof,
        csr: &[u8],
    ) -> Result<AttestAgentResponse, Status> {
        let refuse = |metrics: &ServerMetrics, result: &'static str, message: String| {
            metrics
                .attestations
                .get_or_create(&AttestationLabels { result })
                .inc();
            warn!(result, "re-attestation with an expired SVID refused");
            Status::permission_denied(message)
        };
        let chain =
            signet_spiffe::bundle::split_der_certificates(&proof.svid_chain).map_err(|e| {
                Status::invalid_argument(format!("the expired SVID does not parse: {e}"))
            })?;
        let leaf = chain
            .first()
            .ok_or_else(|| Status::invalid_argument("the expired SVID chain is empty"))?;
        let (Some(not_before), Some(not_after)) = (
            signet_spiffe::x509::not_before_of(leaf),
            signet_spiffe::x509::not_after_of(leaf),
        ) else {
            return Err(Status::invalid_argument("the expired SVID has no validity"));
        };
        let now = self.clock.now();
        if now
            .duration_since(not_after)
            .is_ok_and(|expired_for| expired_for > self.reattest_grace)
        {
            return Err(refuse(
                &self.metrics,
                "expired_beyond_grace",
                format!(
                    "the agent SVID expired more than {:?} ago: attest with a new join token",
                    self.reattest_grace
                ),
            ));
        }
        // Checked at a time the SVID was valid: only its expiry is forgiven, not its issuer.
        let valid_at = not_before + not_after.duration_since(not_before).unwrap_or_default() / 2;
        let mut bundles = signet_spiffe::BundleSet::new();
        bundles.insert((*self.authority.bundle()).clone());
        let certificates: Vec<rustls_pki_types::CertificateDer<'_>> = chain
            .iter()
            .map(|c| rustls_pki_types::CertificateDer::from(c.as_slice()))
            .collect();
        let agent_id =
            signet_spiffe::verify_chain(&certificates, &bundles, valid_at).map_err(|e| {
                refuse(
                    &self.metrics,
                    "untrusted_svid",
                    format!("the expired SVID is not one of ours: {e}"),
                )
            })?;
        if !is_agent_id(&agent_id) {
            return Err(refuse(
                &self.metrics,
                "not_an_agent",
                "the expired SVID is not an agent SVID".into(),
            ));
        }
        let skew = u64::try_from((proof.signed_at - unix(now)).abs()).unwrap_or(u64::MAX);
        if skew > signet_core::reattest::MAX_SKEW.as_secs() {
            return Err(refuse(
                &self.metrics,
                "stale_proof",
                "the proof's time is too far from the server's (clock skew or replay)".into(),
            ));
        }
        let message = signet_core::reattest::message(proof.signed_at, csr);
        let key = signet_spiffe::x509::public_key_of(leaf)
            .ok_or_else(|| Status::invalid_argument("the expired SVID has no usable key"))?;
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
            key,
        )
        .verify(&message, &proof.signature)
        .map_err(|_| {
            refuse(
                &self.metrics,
                "bad_proof",
                "the proof is not signed by the expired SVID's key".into(),
            )
        })?;
        match self.agents.check(&agent_id) {
            Ok(()) => {}
            Err(AgentRefusal::Banned) => {
                return Err(refuse(
                    &self.metrics,
                    "banned",
                    "this agent is banned".into(),
                ));
            }
            Err(AgentRefusal::Unknown) => {
                return Err(refuse(
                    &self.metrics,
                    "unknown_agent",
                    format!(
                        "agent {agent_id} was evicted or is unknown: attest with a new join token"
                    ),
                ));
            }
        }
        signet_ca::csr::verify_csr_with(csr, &agent_id, signet_ca::CsrIdRule::ExactOrNone)
            .map_err(|e| Status::invalid_argument(format!("the CSR is unusable: {e}")))?;
        info!(agent = %agent_id, "agent re-attested with its expired SVID");
        self.issue_agent_svid(agent_id, "join_token", Vec::new(), csr)
            .await
    }

    /// PSAT attestation: the API server vouches for the agent's projected token. A node's agent
    /// may attest again (after a restart or an eviction) and gets the same ID.
    async fn attest_psat(&self, token: &str, csr: &[u8]) -> Result<AttestAgentResponse, Status> {
        let Some(psat) = self.psat.as_ref() else {
            return Err(Status::unimplemented(
                "k8s_psat attestation needs the server in Kubernetes mode",
            ));
        };
        let agent = match psat.attest(token).await {
            Ok(agent) => agent,
            Err(error) => {
                self.metrics
                    .attestations
                    .get_or_create(&AttestationLabels {
                        result: error.metric_label(),
                    })
                    .inc();
                warn!(%error, "k8s_psat attestation refused");
                return Err(if error.is_refusal() {
                    Status::permission_denied(error.to_string())
                } else {
                    Status::unavailable(error.to_string())
                });
            }
        };
        if self.agents.is_banned(&agent.agent_id) {
            self.metrics
                .attestations
                .get_or_create(&AttestationLabels { result: "banned" })
                .inc();
            return Err(Status::permission_denied("this agent is banned"));
        }
        self.issue_agent_svid(agent.agent_id, "k8s_psat", agent.selectors, csr)
            .await
    }

    /// Signs the agent SVID of an attested agent and records the agent.
    async fn issue_agent_svid(
        &self,
        agent_id: SpiffeId,
        attestation_type: &str,
        selectors: Vec<String>,
        csr: &[u8],
    ) -> Result<AttestAgentResponse, Status> {
        let minted = self
            .authority
            .mint_agent_svid(csr, &agent_id, self.agent_svid_ttl)?;
        let now = self.clock.now();
        if let Some(datastore) = &self.datastore {
            datastore
                .upsert_agent(AgentRecord {
                    spiffe_id: agent_id.clone(),
                    attestation_type: attestation_type.into(),
                    attested_at: now,
                    svid_expires_at: minted.not_after,
                    banned: false,
                    selectors,
                })
                .await
                .map_err(crate::error::ServerError::from)?;
        }
        self.agents.attested(agent_id.clone());
        self.metrics
            .attestations
            .get_or_create(&AttestationLabels { result: "ok" })
            .inc();
        self.metrics
            .svids_signed
            .get_or_create(&SvidLabels { kind: "agent" })
            .inc();
        info!(agent = %agent_id, attestation_type, "agent attested");
        Ok(AttestAgentResponse {
            spiffe_id: agent_id.to_string(),
            svid_chain: minted
                .chain
                .iter()
                .flat_map(|c| c.iter().copied())
                .collect(),
            bundle: Some(bundle_message(&self.authority.bundle())),
        })
    }
}

enum SyncEvent {
    Entries,
    Bundle,
    Federation,
    Agents,
    Policies,
    Closed,
}

type SyncStream = Pin<Box<dyn Stream<Item = Result<SyncEntriesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn attest_agent(
        &self,
        request: Request<AttestAgentRequest>,
    ) -> Result<Response<AttestAgentResponse>, Status> {
        let _admitted = self.admit("attest").await?;
        let body = request.into_inner();
        match body.attestation {
            Some(pb::attest_agent_request::Attestation::JoinToken(token)) => Ok(Response::new(
                self.attest_join_token(&token, &body.csr).await?,
            )),
            Some(pb::attest_agent_request::Attestation::K8sPsatToken(token)) => {
                Ok(Response::new(self.attest_psat(&token, &body.csr).await?))
            }
            Some(pb::attest_agent_request::Attestation::ExpiredSvid(proof)) => Ok(Response::new(
                self.attest_expired_svid(&proof, &body.csr).await?,
            )),
            None => Err(Status::invalid_argument("no attestation data")),
        }
    }

    type SyncEntriesStream = SyncStream;

    async fn sync_entries(
        &self,
        request: Request<SyncEntriesRequest>,
    ) -> Result<Response<Self::SyncEntriesStream>, Status> {
        let agent = self.authorize(&request)?;
        let issued = svid_issued(&request);
        let index = self.index.clone();
        let authority = self.authority.clone();
        let agents = self.agents.clone();
        let metrics = self.metrics.clone();
        let mut entries_changed = index.subscribe(&agent);
        let mut bundle_changed = authority.subscribe_bundle();
        let mut agents_changed = agents.subscribe();
        let mut policies_changed = self.policies.subscribe();
        let mut federation_changed = self.federation.subscribe();
        let admission = self.admission.clone();
        info!(%agent, "agent connected for entry sync");
        let stream = async_stream::try_stream! {
            // Never hand an agent a partial snapshot (it would drop identities it still needs).
            index.wait_synced().await;
            metrics.sync_streams.inc();
            let _guard = GaugeGuard(metrics.clone());
            let mut sequence = 0u64;
            let mut next = |update| {
                sequence += 1;
                SyncEntriesResponse {
                    sequence,
                    update: Some(update),
                    tainted_authorities: authority.tainted_authorities(),
                    tainted_jwt_authorities: authority.tainted_jwt_authorities(),
                }
            };
            let mut session = SyncSession::new(agent.clone(), index.clone());
            bundle_changed.borrow_and_update();
            entries_changed.borrow_and_update();
            // Until the policy store is loaded the agent keeps the set it had, or has none and
            // its enforcement points deny everything.
            let policies = policies_changed.borrow_and_update().clone();
            let federated = federation_changed.borrow_and_update().clone();
            // Full snapshots are built a bounded number at a time (a reconnect storm would
            // otherwise hold every agent's snapshot in memory at once).
            let admitted = admission.snapshot().await;
            let (first, chunks) =
                session.open_chunked(&authority.bundle(), &federated, policies.as_deref());
            for update in first {
                yield next(update);
            }
            for chunk in chunks {
                yield next(chunk);
            }
            drop(admitted);
            loop {
                // `select!` only picks the event: async-stream cannot see `yield` or `?` inside
                // another macro's body.
                let event = tokio::select! {
                    // Policies first: a new identity's policy must not trail its entry.
                    biased;
                    r = policies_changed.changed() => if r.is_err() { SyncEvent::Closed } else { SyncEvent::Policies },
                    r = entries_changed.changed() => if r.is_err() { SyncEvent::Closed } else { SyncEvent::Entries },
                    r = bundle_changed.changed() => if r.is_err() { SyncEvent::Closed } else { SyncEvent::Bundle },
                    r = federation_changed.changed() => if r.is_err() { SyncEvent::Closed } else { SyncEvent::Federation },
                    r = agents_changed.changed() => if r.is_err() { SyncEvent::Closed } else { SyncEvent::Agents },
                };
                let updates = match event {
                    SyncEvent::Closed => break,
                    SyncEvent::Entries => {
                        entries_changed.borrow_and_update();
                        let policies = policies_changed.borrow().clone();
                        session.entries_changed(policies.as_deref())
                    }
                    SyncEvent::Bundle => {
                        let bundle = bundle_changed.borrow_and_update().clone();
                        vec![SyncSession::bundle_changed(&bundle)]
                    }
                    SyncEvent::Federation => {
                        let federated = federation_changed.borrow_and_update().clone();
                        vec![SyncSession::federated_bundles(&federated)]
                    }
                    SyncEvent::Policies => {
                        let policies = policies_changed.borrow_and_update().clone();
                        policies.and_then(|set| session.policies_changed(&set)).into_iter().collect()
                    }
                    SyncEvent::Agents => {
                        agents_changed.borrow_and_update();
                        if agents.check_svid(&agent, issued).is_err() {
                            Err(Status::permission_denied(format!("agent {agent} was evicted or banned")))?;
                        }
                        Vec::new()
                    }
                };
                for update in updates {
                    yield next(update);
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn sign_x509_svids(
        &self,
        request: Request<SignX509SvidsRequest>,
    ) -> Result<Response<SignX509SvidsResponse>, Status> {
        let agent = self.authorize(&request)?;
        let requests = request.into_inner().requests;
        if requests.len() > MAX_CSRS_PER_BATCH {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_CSRS_PER_BATCH} CSRs per batch"
            )));
        }
        self.admission
            .sign_budget(&agent, requests.len())
            .map_err(|refused| self.refused("sign_x509_svids", refused))?;
        let _admitted = self.admit("sign_x509_svids").await?;
        let this = self.clone();
        let started = std::time::Instant::now();
        let results = tokio::task::spawn_blocking(move || {
            requests
                .into_iter()
                .map(|item| {
                    let id = EntryId::new(item.entry_id.clone());
                    let Some(entry) = this.index.authorized_entry(&agent, &id) else {
                        this.metrics.svids_refused.get_or_create(&SvidLabels { kind: "x509" }).inc();
                        warn!(%agent, entry = %id, "refused to sign: entry is not parented to this agent");
                        return pb::SvidResult { entry_id: item.entry_id, error: "entry not found for this agent".into(), ..Default::default() };
                    };
                    let req = signet_ca::X509SvidRequest {
                        csr_der: &item.csr,
                        spiffe_id: &entry.spiffe_id,
                        ttl: entry.x509_svid_ttl,
                        dns_names: &entry.dns_names,
                        csr_id_rule: signet_ca::CsrIdRule::Exact,
                    };
                    match this.authority.mint_x509(&req) {
                        Ok(minted) => {
                            this.metrics.svids_signed.get_or_create(&SvidLabels { kind: "x509" }).inc();
                            pb::SvidResult {
                                entry_id: item.entry_id,
                                svid_chain: minted.chain.iter().flat_map(|c| c.iter().copied()).collect(),
                                expires_at: unix(minted.not_after),
                                error: String::new(),
                                authority_id: minted.authority_id,
                            }
                        }
                        Err(error) => {
                            this.metrics.svids_refused.get_or_create(&SvidLabels { kind: "x509" }).inc();
                            warn!(%agent, entry = %id, %error, "refused to sign");
                            pb::SvidResult { entry_id: item.entry_id, error: error.to_string(), ..Default::default() }
                        }
                    }
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        tracing::debug!(
            count = results.len(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "signed X509-SVIDs"
        );
        Ok(Response::new(SignX509SvidsResponse { results }))
    }

    async fn mint_jwt_svid(
        &self,
        request: Request<MintJwtSvidRequest>,
    ) -> Result<Response<MintJwtSvidResponse>, Status> {
        let agent = self.authorize(&request)?;
        self.admission
            .sign_budget(&agent, 1)
            .map_err(|refused| self.refused("mint_jwt_svid", refused))?;
        let body = request.into_inner();
        let id = EntryId::new(body.entry_id);
        let entry = self
            .index
            .authorized_entry(&agent, &id)
            .ok_or_else(|| Status::permission_denied("entry not found for this agent"))?;
        // A compromised agent is held to the same bounds as workloads.
        signet_spiffe::jwt::check_audiences(&body.audience).map_err(Status::invalid_argument)?;
        let req = signet_ca::JwtSvidRequest {
            spiffe_id: &entry.spiffe_id,
            audience: &body.audience,
            ttl: entry.jwt_svid_ttl,
            issuer: None,
        };
        let token = self.authority.mint_jwt(&req)?;
        self.metrics
            .svids_signed
            .get_or_create(&SvidLabels { kind: "jwt" })
            .inc();
        let expires_at = signet_spiffe::JwtSvid::parse_insecure(&token)
            .map(|t| unix(t.expiry()))
            .unwrap_or(0);
        Ok(Response::new(MintJwtSvidResponse { token, expires_at }))
    }

    async fn renew_agent(
        &self,
        request: Request<RenewAgentRequest>,
    ) -> Result<Response<RenewAgentResponse>, Status> {
        let agent = self.authorize(&request)?;
        let _admitted = self.admit("renew_agent").await?;
        let csr = request.into_inner().csr;
        let minted = self
            .authority
            .mint_agent_svid(&csr, &agent, self.agent_svid_ttl)?;
        if let Some(datastore) = &self.datastore {
            datastore
                .set_agent_svid_expiry(agent.clone(), minted.not_after)
                .await
                .map_err(crate::error::ServerError::from)?;
        }
        self.metrics
            .svids_signed
            .get_or_create(&SvidLabels { kind: "agent" })
            .inc();
        Ok(Response::new(RenewAgentResponse {
            svid_chain: minted
                .chain
                .iter()
                .flat_map(|c| c.iter().copied())
                .collect(),
        }))
    }

    async fn report_svids(
        &self,
        request: Request<pb::ReportSvidsRequest>,
    ) -> Result<Response<pb::ReportSvidsResponse>, Status> {
        let agent = self.authorize(&request)?;
        let report = request.into_inner();
        let tally = |uses: Vec<pb::AuthorityUse>| -> Result<HashMap<String, u32>, Status> {
            if uses.len() > crate::svid_reports::MAX_AUTHORITIES_PER_REPORT {
                return Err(Status::invalid_argument(format!(
                    "at most {} authorities per kind in a report",
                    crate::svid_reports::MAX_AUTHORITIES_PER_REPORT
                )));
            }
            let mut held = HashMap::new();
            for used in uses {
                // Authority ids are hex subject key ids or kids we minted: short and printable.
                if used.authority_id.is_empty()
                    || used.authority_id.len() > 128
                    || !used.authority_id.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(Status::invalid_argument(
                        "malformed authority id in the report",
                    ));
                }
                let count: &mut u32 = held.entry(used.authority_id).or_default();
                *count = count.saturating_add(used.svids);
            }
            Ok(held)
        };
        let x509 = tally(report.x509)?;
        let jwt = tally(report.jwt)?;
        self.reports.record(agent, x509, jwt);
        Ok(Response::new(pb::ReportSvidsResponse {}))
    }
}

struct GaugeGuard(Arc<ServerMetrics>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.sync_streams.dec();
    }
}
