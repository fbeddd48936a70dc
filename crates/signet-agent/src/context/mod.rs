//! State shared by the agent's background work: the connection to the server, the agent's own
//! SVID and the SVID cache. Each task lives in its own module: the entry sync stream (`sync`),
//! the signer that pre-signs and rotates SVIDs in batches (`signer`), and renewal of the
//! agent's own SVID (`renewal`).

mod renewal;
mod report;
mod signer;
mod sync;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use signet_core::Backoff;
use signet_core::policy::PolicySet;
use signet_proto::agent::agent_service_client::AgentServiceClient;
use signet_spiffe::{Bundle, SpiffeId, TrustDomain, X509Svid};
use signet_tls::{RotatingSvid, SharedBundles};
use tokio::sync::{Notify, watch};
use tonic::transport::Channel;
use tracing::{info, warn};

use crate::agent_svid::{IdentityStore, NodeCredential, PersistedIdentity, single};
use crate::cache::SvidCache;
use crate::error::AgentError;
use crate::workload_source::WorkloadSource;

/// State shared by the agent's tasks.
#[derive(Debug)]
pub(crate) struct AgentContext {
    trust_domain: TrustDomain,
    cache: Arc<SvidCache>,
    /// Bundles trusted when talking to the server (and validating JWT-SVIDs).
    bundles: Arc<SharedBundles>,
    /// The agent SVID presented to the server.
    agent_tls: Arc<RotatingSvid>,
    agent_svid: RwLock<X509Svid>,
    store: IdentityStore,
    client: AgentServiceClient<Channel>,
    /// The credential to attest again with when the server refuses the current SVID (PSAT only;
    /// a join token is single-use, so such an agent proves its expired SVID's key instead).
    reattest: Option<NodeCredential>,
    /// The trust domain's AuthorizationPolicies; `None` until the server sent them.
    policies: watch::Sender<Option<Arc<PolicySet>>>,
    /// Woken to renew the agent SVID at once (its authority was tainted).
    renew_now: Notify,
    /// Where to attest again.
    server_address: String,
    server_id: SpiffeId,
    /// Woken when what the agent holds changed outside the cache (its own SVID).
    report_now: Notify,
}

/// Reconnect delays towards the server: 200 ms doubling to 10 s, ±50 % jitter. The ceiling
/// bounds how long workloads whose SVIDs expired during an outage wait after the server is
/// back (with 30 s it was up to 45 s); a busy server slows agents down with its pushback
/// instead.
pub(crate) fn server_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(200), Duration::from_secs(10))
}

impl AgentContext {
    /// The context of an agent holding `identity`, with a (lazily connecting) client of the
    /// server at `server_address` that presents the agent SVID.
    pub(crate) fn connect(
        server_address: &str,
        cache: Arc<SvidCache>,
        store: IdentityStore,
        identity: PersistedIdentity,
        server_id: SpiffeId,
        reattest: Option<NodeCredential>,
    ) -> Result<Arc<Self>, AgentError> {
        let bundles = Arc::new(SharedBundles::new(single(identity.bundle.clone())));
        let agent_tls = Arc::new(RotatingSvid::new());
        let client = crate::client::connect(
            server_address,
            bundles.clone(),
            server_id.clone(),
            Some(agent_tls.clone()),
        )
        .map_err(AgentError::Connect)?;
        let context = Arc::new(Self {
            trust_domain: identity.bundle.trust_domain().clone(),
            cache,
            bundles,
            agent_tls,
            agent_svid: RwLock::new(identity.svid.clone()),
            store,
            client,
            reattest,
            policies: watch::channel(None).0,
            renew_now: Notify::new(),
            report_now: Notify::new(),
            server_address: server_address.to_owned(),
            server_id,
        });
        context.install_agent_svid(identity.svid)?;
        context.apply_bundle(identity.bundle);
        Ok(context)
    }

    /// What the workload-facing services serve from.
    pub(crate) fn workload_source(&self) -> WorkloadSource {
        WorkloadSource::new(
            self.trust_domain.clone(),
            self.cache.clone(),
            self.bundles.clone(),
            self.policies.subscribe(),
            Arc::new(self.client.clone()),
        )
    }

    pub(crate) fn cache(&self) -> &Arc<SvidCache> {
        &self.cache
    }

    fn client(&self) -> AgentServiceClient<Channel> {
        self.client.clone()
    }

    /// Applies a new bundle everywhere: cache (workloads), TLS trust, disk.
    fn apply_bundle(&self, bundle: Bundle) {
        if let Err(error) = self.store.save_bundle(&bundle) {
            warn!(%error, "could not persist the bundle");
        }
        self.bundles.set(single(bundle.clone()));
        self.cache.set_bundle(bundle);
    }

    /// Attests again with the node credential (evicted, or the SVID expired while the server
    /// was unreachable) and installs the new identity.
    async fn attest_again(&self) -> Result<(), AgentError> {
        let Some(credential) = &self.reattest else {
            return self.reattest_with_expired_svid().await;
        };
        let bootstrap = self.store.load_bundle()?;
        let identity = crate::agent_svid::attest(
            &self.server_address,
            bootstrap,
            self.server_id.clone(),
            credential,
        )
        .await?;
        self.store.save_bundle(&identity.bundle)?;
        self.apply_bundle(identity.bundle);
        info!(agent = %identity.svid.spiffe_id(), kind = credential.kind(), "attested again");
        self.install_agent_svid(identity.svid)
    }

    /// Whether the agent SVID has expired (the server was unreachable through its renewal).
    fn agent_svid_expired(&self) -> bool {
        self.agent_svid.read().not_after() <= std::time::SystemTime::now()
    }

    /// A join-token agent whose SVID expired proves it still holds its key.
    async fn reattest_with_expired_svid(&self) -> Result<(), AgentError> {
        let expired = self.agent_svid.read().clone();
        let bundle = self.store.load_bundle()?;
        let identity = crate::agent_svid::reattest_with_expired_svid(
            &self.server_address,
            bundle,
            self.server_id.clone(),
            &expired,
        )
        .await?;
        self.store.save_bundle(&identity.bundle)?;
        self.apply_bundle(identity.bundle);
        info!(agent = %identity.svid.spiffe_id(), "re-attested with the expired agent SVID");
        self.install_agent_svid(identity.svid)
    }

    /// Uses and persists a new agent SVID.
    fn install_agent_svid(&self, svid: X509Svid) -> Result<(), AgentError> {
        let certified = signet_tls::certified_key(svid.chain().to_vec(), svid.private_key_pkcs8())
            .map_err(|e| AgentError::crypto("loading the agent SVID into TLS", e))?;
        self.store.save_svid(&svid)?;
        self.agent_tls.set(certified);
        *self.agent_svid.write() = svid;
        self.report_now.notify_one();
        Ok(())
    }

    /// The authority (subject key id) that signed the agent SVID.
    fn agent_svid_authority(&self) -> Option<String> {
        let svid = self.agent_svid.read();
        signet_spiffe::x509::authority_key_id_of(svid.chain().first()?.as_ref())
    }
}
