//! The server's state as its listeners need it, opened from SQLite (`standalone`) or from the
//! cluster (`k8s::open_state`).

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::agents::AgentRegistry;
use crate::authority::AuthorityService;
use crate::datastore::Datastore;
use crate::index::EntryIndex;
use crate::policies::PolicyStore;

/// What the agent API, the admin API and the health endpoints serve from.
pub(crate) struct ServerState {
    /// Standalone only: Kubernetes mode keeps nothing on the replica's disk (DESIGN §1.2).
    pub(crate) datastore: Option<Datastore>,
    pub(crate) authority: Arc<AuthorityService>,
    pub(crate) index: Arc<EntryIndex>,
    pub(crate) agents: Arc<AgentRegistry>,
    pub(crate) policies: Arc<PolicyStore>,
    /// Kubernetes mode: PSAT node attestation.
    pub(crate) psat: Option<Arc<crate::psat::PsatAttestor>>,
    /// Kubernetes mode: agent bans and evictions shared by every replica.
    pub(crate) agent_state: Option<crate::k8s::agent_state::ClusterAgentState>,
    /// Federation relationships and the federated bundles.
    pub(crate) federation: Arc<crate::federation::Federation>,
    /// Kubernetes mode: whether this replica leads (`None`: it always does).
    pub(crate) leader: Option<watch::Receiver<bool>>,
    /// Tasks that keep the state current (controller, watches, leader election).
    pub(crate) tasks: Vec<JoinHandle<()>>,
}

/// Opens a CA kept in a store several servers share: the leader opens it (creating it on first
/// start); the others wait for the leader to have created it and load it without writing.
pub(crate) async fn open_shared_ca(
    store: std::sync::Arc<dyn signet_ca::KeyStore>,
    ca_config: signet_ca::CaConfig,
    clock: std::sync::Arc<dyn signet_ca::Clock>,
    leading: bool,
    store_name: &str,
) -> Result<signet_ca::CertificateAuthority, crate::error::ServerError> {
    use signet_ca::CertificateAuthority;
    if leading {
        match CertificateAuthority::open(ca_config.clone(), store.clone(), clock.clone()) {
            Ok(ca) => return Ok(ca),
            Err(signet_ca::Error::KeyStore(signet_ca::KeyStoreError::Conflict { .. })) => {
                tracing::info!("another server wrote the CA first; loading it");
            }
            Err(error) => return Err(error.into()),
        }
    }
    let mut waited = 0u32;
    loop {
        let opened =
            CertificateAuthority::open_existing(ca_config.clone(), store.clone(), clock.clone())?;
        if let Some(ca) = opened {
            return Ok(ca);
        }
        if waited.is_multiple_of(15) {
            tracing::info!(
                store = store_name,
                "waiting for the leader to create the CA"
            );
        }
        waited += 1;
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}
