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
