//! Kubernetes mode's state: nothing on the replica's disk (DESIGN §1.2). The CA sits in a Secret
//! the leader writes, entries come from the controller, agent bans from a ConfigMap every
//! replica watches, and agents attest with projected service-account tokens.

use std::sync::Arc;
use std::time::Duration;

use signet_ca::{CaConfig, CertificateAuthority};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::KubernetesOptions;
use crate::ServerConfig;
use crate::agents::AgentRegistry;
use crate::authority::AuthorityService;
use crate::error::ServerError;
use crate::index::EntryIndex;
use crate::policies::PolicyStore;
use crate::psat::{PsatAttestor, PsatConfig};
use crate::state::ServerState;

/// Joins leader election, opens the CA and starts the controller, the bundle ConfigMap writer
/// and the agent-state watch. Returns once bans are loaded: they hold from the first call.
pub(crate) async fn open_state(
    config: &ServerConfig,
    options: &KubernetesOptions,
    ca_config: CaConfig,
    policies: Arc<PolicyStore>,
) -> Result<ServerState, ServerError> {
    // The cluster name is a segment of every node agent's ID.
    signet_core::AgentId::kubernetes(&config.trust_domain, &options.cluster_name, "x")
        .map_err(|e| ServerError::InvalidArgument(format!("cluster name: {e}")))?;
    let mut tasks = Vec::new();
    let (leader, election) = join_leader_election(options).await;
    tasks.push(election);
    let ca = open_ca(options, ca_config, config.clock.clone(), *leader.borrow()).await?;
    let authority = AuthorityService::new(ca, Some(config.data_dir.clone()), None)?;
    // Any replica may write the CA (the leader rotating, an operator's `signet ca` on any
    // replica); the others adopt it as soon as the Secret changes.
    let reloading = authority.clone();
    tasks.push(super::secret_watch::spawn(
        kube::Api::namespaced(options.client.clone(), &options.namespace),
        options.ca_secret.clone(),
        "ca-secret-watch",
        move |_| {
            if let Err(error) = reloading.reload() {
                tracing::warn!(%error, "could not adopt the CA Secret's new state");
            }
        },
    ));

    if let Some(crate::UpstreamSource::Secret { name }) = &config.upstream {
        tasks.push(super::upstream_secret::spawn_watch(
            options,
            name.clone(),
            authority.clone(),
            leader.clone(),
        ));
    }

    let index = Arc::new(EntryIndex::new_unsynced());
    let agents = Arc::new(
        AgentRegistry::new(&[])
            .with_trusted_cluster(config.trust_domain.clone(), options.cluster_name.clone()),
    );
    let psat = PsatAttestor::new(
        PsatConfig {
            trust_domain: config.trust_domain.clone(),
            cluster_name: options.cluster_name.clone(),
            audience: options.psat_audience.clone(),
            allowed_service_accounts: options.agent_service_accounts.clone(),
            node_label_keys: options.node_label_keys.clone(),
        },
        options.client.clone(),
    );
    tasks.extend(super::controller::start(
        config,
        options,
        index.clone(),
        policies.clone(),
        leader.clone(),
    )?);
    if let Some(identity) = &options.default_identity {
        tasks.push(super::default_identity::spawn(
            options.client.clone(),
            identity.clone(),
            leader.clone(),
        ));
    }
    tasks.push(super::bundle_configmap::spawn(
        kube::Api::namespaced(options.client.clone(), &options.namespace),
        options.bundle_configmap.clone(),
        authority.clone(),
        leader.clone(),
    ));
    let federation = crate::federation::Federation::new(
        config.trust_domain.clone(),
        None,
        crate::federation::web_roots(&config.federation.extra_web_roots),
        config.federation.refresh,
    );
    tasks.extend(
        super::federation::spawn(
            options.client.clone(),
            &options.namespace,
            options.federated_bundles_configmap.clone(),
            options.class_name.clone(),
            options.replica_name.clone(),
            federation.clone(),
            leader.clone(),
        )
        .await,
    );
    let agent_state = super::agent_state::ClusterAgentState::new(
        kube::Api::namespaced(options.client.clone(), &options.namespace),
        options.agent_state_configmap.clone(),
    );
    agents.set_shared(agent_state.read().await?);
    tasks.push(agent_state.clone().spawn_watch(agents.clone()));
    Ok(ServerState {
        datastore: None,
        authority,
        index,
        agents,
        policies,
        psat: Some(Arc::new(psat)),
        federation,
        agent_state: Some(agent_state),
        leader: Some(leader),
        tasks,
    })
}

/// Starts leader election and waits briefly for the first round, so a lone replica starts as
/// leader instead of as a follower of nobody.
async fn join_leader_election(
    options: &KubernetesOptions,
) -> (watch::Receiver<bool>, JoinHandle<()>) {
    let elector = super::leader::LeaderElector::new(
        options.client.clone(),
        super::leader::LeaderConfig {
            namespace: options.namespace.clone(),
            lease_name: options.lease_name.clone(),
            replica_name: options.replica_name.clone(),
            lease_duration: options.lease_duration,
            renew_every: options.lease_duration / 3,
        },
    );
    let (mut leader, task) = elector.spawn();
    let _ = tokio::time::timeout(Duration::from_secs(2), leader.changed()).await;
    (leader, task)
}

/// The CA in its Secret, opened as `crate::state::open_shared_ca` does for every shared store.
async fn open_ca(
    options: &KubernetesOptions,
    ca_config: CaConfig,
    clock: Arc<dyn signet_ca::Clock>,
    leading: bool,
) -> Result<CertificateAuthority, ServerError> {
    let store: Arc<dyn signet_ca::KeyStore> = Arc::new(
        super::secret_store::SecretKeyStore::new(
            options.client.clone(),
            &options.namespace,
            &options.ca_secret,
        )
        .map_err(signet_ca::Error::from)?,
    );
    crate::state::open_shared_ca(
        store,
        ca_config,
        clock,
        leading,
        &format!("Secret {}", options.ca_secret),
    )
    .await
}
