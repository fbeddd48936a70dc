//! The agent's background work: the entry sync stream (with reconnect, backoff and jitter), the
//! signer that pre-signs and rotates SVIDs in batches, and renewal of the agent's own SVID.

use std::sync::Arc;

use parking_lot::RwLock;
use std::time::{Duration, SystemTime};

use signet_core::{Backoff, EntryId, RegistrationEntry};
use signet_proto::agent::agent_service_client::AgentServiceClient;
use signet_proto::agent::{
    SignX509SvidsRequest, SvidRequest, SyncEntriesRequest, sync_entries_response::Update,
};
use signet_spiffe::{Bundle, TrustDomain, X509Svid};
use signet_tls::{RotatingSvid, SharedBundles};
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use crate::agent_svid::{IdentityStore, key_and_csr, renew, single};
use crate::cache::{CachedSvid, SvidCache, refresh_time};
use crate::error::AgentError;

/// Largest CSR batch sent to the server.
const SIGN_BATCH: usize = 500;

/// State shared by the agent's tasks.
#[derive(Debug)]
pub struct AgentContext {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// The cache.
    pub cache: Arc<SvidCache>,
    /// Bundles trusted when talking to the server.
    pub bundles: Arc<SharedBundles>,
    /// The agent SVID presented to the server.
    pub agent_tls: Arc<RotatingSvid>,
    /// The agent SVID itself.
    pub agent_svid: RwLock<X509Svid>,
    /// Persistence.
    pub store: IdentityStore,
    /// The authenticated client.
    pub client: AgentServiceClient<Channel>,
    /// How to attest again when the server refuses the current SVID (PSAT only; a join token is
    /// single-use).
    pub reattest: Option<Reattestation>,
    /// The trust domain's AuthorizationPolicies; `None` until the server sent them.
    pub policies: tokio::sync::watch::Sender<Option<Arc<signet_core::policy::PolicySet>>>,
}

/// What re-attestation needs.
#[derive(Debug, Clone)]
pub struct Reattestation {
    /// The node credential.
    pub credential: crate::agent_svid::NodeCredential,
    /// Server address.
    pub server_address: String,
    /// The server's SPIFFE ID.
    pub server_id: signet_spiffe::SpiffeId,
}

/// Reconnect delays towards the server: 200 ms doubling to 30 s, ±50 % jitter.
pub fn server_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(200), Duration::from_secs(30))
}

impl AgentContext {
    fn client(&self) -> AgentServiceClient<Channel> {
        self.client.clone()
    }

    /// Applies a new bundle everywhere: cache (workloads), TLS trust, disk.
    pub fn apply_bundle(&self, bundle: Bundle) {
        if let Err(error) = self.store.save_bundle(&bundle) {
            warn!(%error, "could not persist the bundle");
        }
        self.bundles.set(single(bundle.clone()));
        self.cache.set_bundle(bundle);
    }

    /// Runs the entry sync stream forever, reconnecting with backoff.
    pub async fn run_sync(self: Arc<Self>) {
        let mut backoff = server_backoff();
        loop {
            match self.sync_once(&mut backoff).await {
                Ok(()) => debug!("sync stream ended; reconnecting"),
                Err(AgentError::Refused(reason)) => {
                    if self.reattest.is_some() {
                        warn!(%reason, "the server refused this agent; attesting again");
                        if let Err(error) = self.attest_again().await {
                            warn!(%error, "re-attestation failed; retrying");
                        }
                    } else {
                        warn!(%reason, "the server refused this agent; it must be attested again (restart it with a new join token)");
                    }
                }
                Err(error) => warn!(%error, "entry sync failed; retrying"),
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    async fn sync_once(&self, backoff: &mut Backoff) -> Result<(), AgentError> {
        let mut stream = self
            .client()
            .sync_entries(SyncEntriesRequest {})
            .await
            .map_err(AgentError::from_status)?
            .into_inner();
        let mut snapshot: Vec<RegistrationEntry> = Vec::new();
        while let Some(message) = stream.message().await.map_err(AgentError::from_status)? {
            backoff.reset();
            self.cache.set_tainted(message.tainted_authorities);
            match message.update {
                Some(Update::Bundle(b)) => {
                    let bundle =
                        Bundle::from_spiffe_json(self.trust_domain.clone(), &b.spiffe_json)
                            .map_err(|e| AgentError::Server(format!("bundle update: {e}")))?;
                    debug!(sequence = b.sequence, "bundle update");
                    self.apply_bundle(bundle);
                }
                Some(Update::Policies(wire)) => {
                    let (set, refused) = signet_proto::policy::policy_set_from(&wire);
                    for error in &refused {
                        warn!(%error, "an AuthorizationPolicy from the server could not be read (an unreadable DENY denies everything it targets)");
                    }
                    info!(
                        policies = set.bindings.len(),
                        default = set.default_policy.as_str(),
                        "authorization policies received"
                    );
                    self.policies.send_replace(Some(Arc::new(set)));
                }
                Some(Update::Snapshot(chunk)) => {
                    for wire in &chunk.entries {
                        snapshot.push(self.parse_entry(wire)?);
                    }
                    if chunk.last {
                        let count = snapshot.len();
                        self.cache.replace_entries(std::mem::take(&mut snapshot));
                        info!(entries = count, "entry snapshot received");
                    }
                }
                Some(Update::Delta(delta)) => {
                    let upserted = delta
                        .upserted
                        .iter()
                        .map(|w| self.parse_entry(w))
                        .collect::<Result<Vec<_>, _>>()?;
                    let removed: Vec<EntryId> =
                        delta.removed.into_iter().map(EntryId::new).collect();
                    debug!(
                        upserted = upserted.len(),
                        removed = removed.len(),
                        "entry delta"
                    );
                    self.cache.apply_delta(upserted, &removed);
                }
                None => {}
            }
        }
        Ok(())
    }

    fn parse_entry(
        &self,
        wire: &signet_proto::agent::Entry,
    ) -> Result<RegistrationEntry, AgentError> {
        RegistrationEntry::try_from(wire)
            .map_err(|e| AgentError::Server(format!("entry {}: {e}", wire.id)))
    }

    /// Pre-signs new entries and rotates due SVIDs, forever.
    pub async fn run_signer(self: Arc<Self>) {
        let mut backoff = server_backoff();
        loop {
            let now = SystemTime::now();
            let due = self.cache.due(now);
            if due.is_empty() {
                let wait = self
                    .cache
                    .next_refresh()
                    .and_then(|at| at.duration_since(now).ok())
                    .unwrap_or(Duration::from_secs(3600));
                tokio::select! {
                    () = self.cache.signer_wakeup().notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            match self.sign(due).await {
                Ok(()) => backoff.reset(),
                Err(error) => {
                    warn!(%error, "signing failed; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    async fn sign(&self, due: Vec<Arc<RegistrationEntry>>) -> Result<(), AgentError> {
        for batch in due.chunks(SIGN_BATCH) {
            // Keys and CSRs are made off the async threads: P-256 keygen is CPU work.
            let batch = batch.to_vec();
            let prepared = tokio::task::spawn_blocking(move || {
                batch
                    .into_iter()
                    .map(|entry| {
                        key_and_csr(Some(&entry.spiffe_id)).map(|(key, csr)| (entry, key, csr))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(|e| AgentError::Internal(e.to_string()))??;
            let requests = prepared
                .iter()
                .map(|(entry, _, csr)| SvidRequest {
                    entry_id: entry.id.to_string(),
                    csr: csr.clone(),
                })
                .collect();
            let started = std::time::Instant::now();
            let response = self
                .client()
                .sign_x509_svids(SignX509SvidsRequest { requests })
                .await
                .map_err(AgentError::from_status)?
                .into_inner();
            debug!(
                count = prepared.len(),
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                "signed a batch"
            );
            let now = SystemTime::now();
            for ((entry, key, _), result) in prepared.iter().zip(response.results) {
                if !result.error.is_empty() || result.entry_id != entry.id.as_str() {
                    warn!(entry = %entry.id, error = %result.error, "server refused to sign");
                    continue;
                }
                match X509Svid::parse(&result.svid_chain, &key.serialize_der()) {
                    Ok(svid) if svid.spiffe_id() == &entry.spiffe_id => {
                        let refresh_at = refresh_time(now, svid.not_after());
                        self.cache.store_svid(
                            &entry.id,
                            CachedSvid {
                                svid,
                                authority_id: result.authority_id,
                                refresh_at,
                                revision: entry.revision,
                            },
                        );
                    }
                    Ok(svid) => {
                        warn!(entry = %entry.id, got = %svid.spiffe_id(), "server signed the wrong ID; discarded")
                    }
                    Err(error) => {
                        warn!(entry = %entry.id, %error, "server returned an invalid SVID; discarded")
                    }
                }
            }
        }
        Ok(())
    }

    /// Renews the agent SVID at half its lifetime, forever.
    pub async fn run_renewal(self: Arc<Self>) {
        let mut backoff = server_backoff();
        loop {
            let (id, not_after) = {
                let svid = self.agent_svid.read();
                (svid.spiffe_id().clone(), svid.not_after())
            };
            // Renew when half of the remaining lifetime is left: at half-life for a fresh SVID.
            let half_left = not_after
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                / 2;
            tokio::time::sleep(half_left).await;
            let mut client = self.client();
            match renew(&mut client, &id).await {
                Ok(svid) => {
                    if let Err(error) = self.install_agent_svid(svid) {
                        warn!(%error, "could not install the renewed agent SVID");
                    } else {
                        info!(agent = %id, "agent SVID renewed");
                        backoff.reset();
                    }
                }
                Err(AgentError::Refused(reason)) if self.reattest.is_some() => {
                    warn!(%reason, "agent SVID renewal refused; attesting again");
                    if let Err(error) = self.attest_again().await {
                        warn!(%error, "re-attestation failed; retrying");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
                Err(error) => {
                    warn!(%error, "agent SVID renewal failed; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    /// Attests again with the node credential (evicted, or the SVID expired while the server
    /// was unreachable) and installs the new identity.
    pub async fn attest_again(&self) -> Result<(), AgentError> {
        let Some(reattest) = &self.reattest else {
            return Err(AgentError::Config("no reusable node credential".into()));
        };
        let bootstrap = self.store.load_bundle()?;
        let identity = crate::agent_svid::attest(
            &reattest.server_address,
            bootstrap,
            reattest.server_id.clone(),
            &reattest.credential,
        )
        .await?;
        self.store.save_bundle(&identity.bundle)?;
        self.apply_bundle(identity.bundle);
        info!(agent = %identity.svid.spiffe_id(), kind = reattest.credential.kind(), "attested again");
        self.install_agent_svid(identity.svid)
    }

    /// Uses and persists a new agent SVID.
    pub fn install_agent_svid(&self, svid: X509Svid) -> Result<(), AgentError> {
        let certified = signet_tls::certified_key(svid.chain().to_vec(), svid.private_key_pkcs8())
            .map_err(|e| AgentError::Internal(e.to_string()))?;
        self.store.save_svid(&svid)?;
        self.agent_tls.set(certified);
        *self.agent_svid.write() = svid;
        Ok(())
    }
}
