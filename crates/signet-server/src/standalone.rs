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
use crate::{ServerConfig, policy_admin, shared};

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
    let mut tasks = Vec::new();
    let mut leader = None;
    let (datastore, ca) = match &config.datastore {
        None => {
            let datastore = Datastore::open_with(&config.data_dir.join("signet.db"), lost_writes)?;
            let keys = config.data_dir.join("ca-keys.json");
            refuse_lost_key_store(&datastore, &keys, config.new_ca).await?;
            let ca = CertificateAuthority::open(
                ca_config,
                Arc::new(FileKeyStore::new(keys)),
                config.clock.clone(),
            )?;
            (datastore, ca)
        }
        Some(postgres) => {
            let datastore = Datastore::postgres(postgres.clone()).await?;
            let store = datastore
                .shared()
                .cloned()
                .ok_or_else(|| ServerError::InvalidArgument("not a shared datastore".into()))?;
            let protection = ca_state_protection(config)?;
            let key_store: Arc<dyn signet_ca::KeyStore> = Arc::new(
                shared::SharedKeyStore::new(postgres.clone(), protection)
                    .map_err(signet_ca::Error::from)?,
            );
            let (mut leading, lock_task) = shared::spawn_ca_leader(store);
            tasks.push(lock_task);
            // The first lock attempt decides who creates the CA on a first start.
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(2), leading.changed()).await;
            let ca = crate::state::open_shared_ca(
                key_store,
                ca_config,
                config.clock.clone(),
                *leading.borrow(),
                "PostgreSQL",
            )
            .await?;
            leader = Some(leading);
            (datastore, ca)
        }
    };
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
    if let Some(store) = datastore.shared() {
        tasks.extend(shared::spawn_follow(
            store,
            shared::Followers {
                datastore: datastore.clone(),
                index: index.clone(),
                agents: agents.clone(),
                policies: policies.clone(),
                authority: authority.clone(),
                federation: federation.clone(),
            },
        ));
    }
    Ok(ServerState {
        datastore: Some(datastore),
        authority,
        index,
        agents,
        policies,
        psat: None,
        federation,
        agent_state: None,
        leader,
        tasks,
    })
}

/// The CA keys never sit in the shared database in plain text unless the operator said so: they
/// are sealed with the CA state key, or they are in a PKCS#11 token (the state names them).
fn ca_state_protection(config: &ServerConfig) -> Result<shared::CaStateProtection, ServerError> {
    match (&config.ca_state_protection, &config.pkcs11) {
        (Some(protection), _) => Ok(protection.clone()),
        (None, Some(_)) => Ok(shared::CaStateProtection::Plain),
        (None, None) => Err(ServerError::InvalidArgument(
            "on PostgreSQL the CA keys would be stored in the database in plain text: give every \
             server the same --datastore-ca-key-file (openssl rand -base64 32 > ca-state.key), keep \
             the keys in a PKCS#11 token (--pkcs11-*), or opt in with --datastore-plaintext-ca-keys"
                .into(),
        )),
    }
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
