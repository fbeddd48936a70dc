//! Standalone mode's state: entries, agents, policies and the CA journal in SQLite, CA keys in a
//! file of the data directory.

use std::path::Path;
use std::sync::Arc;

use signet_ca::{CaConfig, CertificateAuthority, FileKeyStore};

use crate::agents::AgentRegistry;
use crate::authority::AuthorityService;
use crate::datastore::{Datastore, LostWrites};
use crate::error::ServerError;
use crate::federation::{self, Federation};
use crate::index::EntryIndex;
use crate::policies::PolicyStore;
use crate::state::ServerState;
use crate::{ServerConfig, policy_admin};

/// Opens the database and the CA and loads entries, agents and policies.
pub(crate) async fn open_state(
    config: &ServerConfig,
    ca_config: CaConfig,
    policies: Arc<PolicyStore>,
) -> Result<ServerState, ServerError> {
    let lost_writes = if config.accept_data_loss {
        LostWrites::Accept
    } else {
        LostWrites::Refuse
    };
    let datastore = Datastore::open_with(&config.data_dir.join("signet.db"), lost_writes)?;
    let keys = config.data_dir.join("ca-keys.json");
    refuse_lost_key_store(&datastore, &keys, config.new_ca).await?;
    let ca = CertificateAuthority::open(
        ca_config,
        Arc::new(FileKeyStore::new(keys)),
        config.clock.clone(),
    )?;
    let authority =
        AuthorityService::new(ca, Some(config.data_dir.clone()), Some(datastore.clone()))?;
    let index = Arc::new(EntryIndex::new());
    index.load(datastore.list_entries().await?);
    let agents = Arc::new(AgentRegistry::new(&datastore.list_agents().await?));
    policy_admin::load_standalone(&datastore, &policies).await?;
    let federation = Federation::new(
        config.trust_domain.clone(),
        Some(datastore.clone()),
        federation::web_roots(&config.federation.extra_web_roots),
        config.federation.refresh,
    );
    federation.load().await?;
    Ok(ServerState {
        datastore: Some(datastore),
        authority,
        index,
        agents,
        policies,
        psat: None,
        federation,
        agent_state: None,
        leader: None,
        tasks: Vec::new(),
    })
}

/// A journal that recorded a CA start means keys existed: a missing key store is lost state, not
/// a first start. Creating a new CA silently would come up "ready" with a bundle no agent trusts.
async fn refuse_lost_key_store(
    datastore: &Datastore,
    keys: &Path,
    new_ca: bool,
) -> Result<(), ServerError> {
    if new_ca || keys.symlink_metadata().is_ok() {
        return Ok(());
    }
    let history = datastore.journal_tail(1).await?;
    match history.last() {
        None => Ok(()),
        Some(last) => Err(ServerError::LostKeyStore {
            keys: keys.to_owned(),
            last_event: last.clone(),
        }),
    }
}
