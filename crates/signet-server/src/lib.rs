//! Signet's signing server (DESIGN §6): the CA, join-token node attestation, the agent API over
//! TLS, the admin API on a local Unix socket, the entry index fed from SQLite, the bundle files,
//! and health/metrics endpoints.

pub mod admin_api;
pub mod agent_api;
pub mod agent_listener;
pub mod agents;
pub mod authority;
mod connection_lifetime;
pub mod datastore;
pub mod error;
pub mod health;
pub mod index;
pub mod join_token;
pub mod k8s;
pub mod metrics;
pub mod policies;
pub mod policy_admin;
pub mod psat;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use signet_ca::{CaConfig, CertificateAuthority, FileKeyStore, KeyAlgorithm, SystemClock};
use signet_proto::admin::admin_server::AdminServer;
use signet_proto::agent::agent_service_server::AgentServiceServer;
use signet_spiffe::TrustDomain;
use signet_tls::SpiffeClientVerifier;
use tokio::net::UnixListener;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::UnixListenerStream;
use tracing::info;

pub use error::ServerError;

/// Everything `signet server` can be told.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Directory for the database, CA keys and bundle files (created 0700).
    pub data_dir: PathBuf,
    /// Agent API listen address.
    pub bind_address: SocketAddr,
    /// Admin API Unix socket.
    pub admin_socket: PathBuf,
    /// Health/metrics listen address (`None` = off).
    pub health_address: Option<SocketAddr>,
    /// CA key algorithm.
    pub ca_key_algorithm: KeyAlgorithm,
    /// CA lifetime.
    pub ca_ttl: Duration,
    /// Default X509-SVID TTL for entries that set none.
    pub default_x509_svid_ttl: Duration,
    /// Default JWT-SVID TTL for entries that set none.
    pub default_jwt_svid_ttl: Duration,
    /// Agent SVID lifetime.
    pub agent_svid_ttl: Duration,
    /// How often the CA checks whether to rotate.
    pub rotation_check_interval: Duration,
    /// Kubernetes mode (CRDs and pods as the entry source, CA in a Secret, PSAT, leader
    /// election); `None` is standalone mode (SQLite entries, file key store, join tokens).
    pub kubernetes: Option<k8s::KubernetesOptions>,
    /// What happens to requests no enforced ALLOW AuthorizationPolicy targets.
    pub default_policy: signet_core::policy::DefaultPolicy,
    /// Bounds of the agent API listener (connections, handshakes, attestation connections).
    pub agent_api_bounds: agent_listener::AgentApiBounds,
    /// Standalone: start a new CA although the journal records one whose key store is missing
    /// (every agent and workload then needs the new bundle). Without it such a start is refused.
    pub new_ca: bool,
    /// Serve a standalone database older than its generation record (see `datastore`).
    pub accept_data_loss: bool,
}

impl ServerConfig {
    /// Defaults of DESIGN §5 for a trust domain and data directory.
    pub fn new(trust_domain: TrustDomain, data_dir: PathBuf) -> Self {
        let admin_socket = data_dir.join("admin.sock");
        Self {
            trust_domain,
            data_dir,
            bind_address: SocketAddr::from(([0, 0, 0, 0], 8081)),
            admin_socket,
            health_address: Some(SocketAddr::from(([127, 0, 0, 1], 8082))),
            ca_key_algorithm: KeyAlgorithm::EcP256,
            ca_ttl: signet_ca::ca::DEFAULT_CA_TTL,
            default_x509_svid_ttl: signet_ca::ca::DEFAULT_X509_SVID_TTL,
            default_jwt_svid_ttl: signet_ca::ca::DEFAULT_JWT_SVID_TTL,
            agent_svid_ttl: Duration::from_secs(3600),
            rotation_check_interval: Duration::from_secs(10),
            kubernetes: None,
            default_policy: signet_core::policy::DefaultPolicy::default(),
            new_ca: false,
            accept_data_loss: false,
            agent_api_bounds: agent_listener::AgentApiBounds::default(),
        }
    }
}

/// A started server.
#[derive(Debug)]
pub struct RunningServer {
    /// Where the agent API listens.
    pub agent_address: SocketAddr,
    /// Where the health endpoints listen.
    pub health_address: Option<SocketAddr>,
    /// The admin socket.
    pub admin_socket: PathBuf,
    /// The bundle PEM file agents bootstrap from.
    pub bundle_pem: PathBuf,
    /// The CA, for in-process callers.
    pub authority: Arc<authority::AuthorityService>,
    /// The entry index, for in-process callers (tests, benchmarks).
    pub entries: Arc<index::EntryIndex>,
    /// The live AuthorizationPolicy set, for in-process callers.
    pub policies: Arc<policies::PolicyStore>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    /// Stops every task.
    pub fn shutdown(self) {
        for task in self.tasks {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.admin_socket);
    }
}

/// The data directory holds the CA keys: ours alone, never behind a link, never in a directory
/// another user controls (see `signet_unix::ensure_private_dir`).
fn private_dir(path: &Path) -> Result<(), ServerError> {
    Ok(signet_unix::ensure_private_dir(path, 0o700)?)
}

/// A journal that recorded a CA start means keys existed: a missing key store is lost state, not
/// a first start. Creating a new CA silently would come up "ready" with a bundle no agent trusts.
async fn refuse_lost_key_store(
    datastore: &datastore::Datastore,
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

/// Opens the stores, starts every listener and background task, and returns once the server is
/// ready.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    private_dir(&config.data_dir)?;
    // Kubernetes mode keeps no state on the replica's disk (DESIGN §1.2): entries come from the
    // API, agent bans from a ConfigMap, the CA from a Secret. SQLite is standalone only.
    let datastore = match config.kubernetes {
        None => Some(datastore::Datastore::open_with(
            &config.data_dir.join("signet.db"),
            if config.accept_data_loss {
                datastore::LostWrites::Accept
            } else {
                datastore::LostWrites::Refuse
            },
        )?),
        Some(_) => None,
    };

    let mut ca_config = CaConfig::new(config.trust_domain.clone());
    ca_config.x509_key_algorithm = config.ca_key_algorithm;
    ca_config.ca_ttl = config.ca_ttl;
    let mut tasks = Vec::new();
    let (ca, leader) = match &config.kubernetes {
        None => {
            let keys = config.data_dir.join("ca-keys.json");
            if let Some(datastore) = &datastore {
                refuse_lost_key_store(datastore, &keys, config.new_ca).await?;
            }
            let store = Arc::new(FileKeyStore::new(keys));
            (
                CertificateAuthority::open(ca_config, store, Arc::new(SystemClock))?,
                None,
            )
        }
        Some(kube_options) => {
            let (leader, task) = open_kubernetes_leader(kube_options).await;
            tasks.push(task);
            let ca = open_kubernetes_ca(kube_options, ca_config, *leader.borrow()).await?;
            (ca, Some(leader))
        }
    };
    let authority =
        authority::AuthorityService::new(ca, Some(config.data_dir.clone()), datastore.clone())?;

    let metrics = Arc::new(metrics::ServerMetrics::default());
    let policies = Arc::new(policies::PolicyStore::new(config.default_policy));
    let (index, agents, psat, agent_state) = match &config.kubernetes {
        None => {
            let index = Arc::new(index::EntryIndex::new());
            let datastore = datastore
                .as_ref()
                .ok_or_else(|| ServerError::Internal("standalone without a datastore".into()))?;
            index.load(datastore.list_entries().await?);
            let agents = Arc::new(agents::AgentRegistry::new(&datastore.list_agents().await?));
            policy_admin::load_standalone(datastore, &policies).await?;
            (index, agents, None, None)
        }
        Some(kube_options) => {
            let index = Arc::new(index::EntryIndex::new_unsynced());
            // The cluster name is a segment of every node agent's ID.
            signet_core::AgentId::kubernetes(&config.trust_domain, &kube_options.cluster_name, "x")
                .map_err(|e| ServerError::InvalidArgument(format!("cluster name: {e}")))?;
            let agents = Arc::new(agents::AgentRegistry::new(&[]).with_trusted_cluster(
                config.trust_domain.clone(),
                kube_options.cluster_name.clone(),
            ));
            let psat = psat::PsatAttestor::new(
                psat::PsatConfig {
                    trust_domain: config.trust_domain.clone(),
                    cluster_name: kube_options.cluster_name.clone(),
                    audience: kube_options.psat_audience.clone(),
                    allowed_service_accounts: kube_options.agent_service_accounts.clone(),
                    node_label_keys: kube_options.node_label_keys.clone(),
                },
                kube_options.client.clone(),
            );
            let leader = leader
                .clone()
                .unwrap_or_else(|| tokio::sync::watch::channel(true).1);
            tasks.extend(k8s::controller::start(
                &config,
                kube_options,
                index.clone(),
                policies.clone(),
                leader.clone(),
            )?);
            if let Some(identity) = &kube_options.default_identity {
                tasks.push(k8s::default_identity::spawn(
                    kube_options.client.clone(),
                    identity.clone(),
                    leader.clone(),
                ));
            }
            tasks.push(k8s::bundle_configmap::spawn(
                kube::Api::namespaced(kube_options.client.clone(), &kube_options.namespace),
                kube_options.bundle_configmap.clone(),
                authority.clone(),
                leader,
            ));
            let agent_state = k8s::agent_state::ClusterAgentState::new(
                kube::Api::namespaced(kube_options.client.clone(), &kube_options.namespace),
                kube_options.agent_state_configmap.clone(),
            );
            // Bans hold from the first call: load them before serving (the watch follows).
            agents.set_shared(agent_state.read().await?);
            tasks.push(agent_state.clone().spawn_watch(agents.clone()));
            (index, agents, Some(Arc::new(psat)), Some(agent_state))
        }
    };
    metrics
        .entries
        .set(i64::try_from(index.len()).unwrap_or(i64::MAX));
    info!(
        entries = index.len(),
        agents = agents.active_count(),
        authorization_policies = policies.current().map_or(0, |set| set.bindings.len()),
        default_policy = config.default_policy.as_str(),
        "state loaded"
    );

    let api = agent_api::AgentApi {
        authority: authority.clone(),
        index: index.clone(),
        agents,
        datastore: datastore.clone(),
        metrics: metrics.clone(),
        agent_svid_ttl: config.agent_svid_ttl,
        psat,
        policies: policies.clone(),
    };
    let admin = admin_api::AdminApi {
        api: api.clone(),
        trust_domain: config.trust_domain.clone(),
        default_x509_ttl: config.default_x509_svid_ttl,
        default_jwt_ttl: config.default_jwt_svid_ttl,
        kubernetes: config.kubernetes.is_some(),
        kube_client: config.kubernetes.as_ref().map(|k| k.client.clone()),
        agent_state,
    };

    tasks.push(authority.spawn_rotation_led(config.rotation_check_interval, leader));

    // Agent API: TLS with the server SVID; agent client certificates verified against our own
    // bundle and required by every RPC except attestation.
    let is_agent: signet_tls::IdPolicy =
        Arc::new(|id: &signet_spiffe::SpiffeId| signet_core::AgentId::parse(id).is_some());
    let verifier = Arc::new(SpiffeClientVerifier::new(
        authority.clone(),
        is_agent,
        false,
    ));
    let mut tls = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(authority.server_svid());
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let binding = |e| {
        ServerError::io(
            format!("binding the agent API on {}", config.bind_address),
            e,
        )
    };
    let listener = tokio::net::TcpListener::bind(config.bind_address)
        .await
        .map_err(binding)?;
    let agent_address = listener.local_addr().map_err(binding)?;
    let (agent_connections, accept_task) =
        agent_listener::accept(listener, acceptor, config.agent_api_bounds, metrics.clone());
    tasks.push(accept_task);
    let agent_service = AgentServiceServer::new(api)
        .max_decoding_message_size(16 * 1024 * 1024)
        .max_encoding_message_size(16 * 1024 * 1024);
    tasks.push(signet_unix::spawn_named("agent-api", async move {
        let result = tonic::transport::Server::builder()
            .trace_fn(|request| tracing::info_span!("grpc", api = "agent", method = %request.uri().path()))
            // Dead agents (a vanished node) are noticed and their connection closed.
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_service(agent_service)
            .serve_with_incoming(agent_connections)
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "agent API stopped");
        }
    }));

    // Admin API on a Unix socket only the server's user can reach.
    if let Some(parent) = config.admin_socket.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| ServerError::io(format!("creating {}", parent.display()), e))?;
    }
    // Mode 0600 from the moment it can be reached (never a window with the umask's mode).
    let admin_listener = signet_unix::bind_unix_socket(&config.admin_socket, 0o600)
        .and_then(UnixListener::from_std)
        .map_err(|e| {
            ServerError::io(
                format!("binding the admin socket {}", config.admin_socket.display()),
                e,
            )
        })?;
    tasks.push(signet_unix::spawn_named("admin-api", async move {
        let result = tonic::transport::Server::builder()
            .trace_fn(|request| tracing::info_span!("grpc", api = "admin", method = %request.uri().path()))
            .add_service(AdminServer::new(admin))
            .serve_with_incoming(
                UnixListenerStream::new(admin_listener)
                    .map(|conn| conn.map(signet_unix::normalize_authority)),
            )
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "admin API stopped");
        }
    }));

    let mut health_address = None;
    if let Some(address) = config.health_address {
        let mut registry = prometheus_client::registry::Registry::default();
        metrics.register(&mut registry);
        let entry_count = index.clone();
        let state = Arc::new(health::HealthState {
            ready: Default::default(),
            registry,
            sampled: vec![
                health::SampledGauge {
                    gauge: metrics.entries.clone(),
                    read: Box::new(move || i64::try_from(entry_count.len()).unwrap_or(i64::MAX)),
                },
                health::SampledGauge {
                    gauge: metrics.agent_connections.clone(),
                    read: Box::new({
                        let metrics = metrics.clone();
                        move || metrics.open_agent_connections()
                    }),
                },
            ],
        });
        let (bound, task) = health::serve(address, state.clone())
            .await
            .map_err(|e| ServerError::io(format!("binding the health endpoint on {address}"), e))?;
        // Ready once the entry set is complete (at once in standalone mode).
        let ready_index = index.clone();
        tasks.push(signet_unix::spawn_named("readiness", async move {
            ready_index.wait_synced().await;
            state.ready.store(true, Ordering::Relaxed);
        }));
        health_address = Some(bound);
        tasks.push(task);
    }

    info!(%agent_address, admin_socket = %config.admin_socket.display(), trust_domain = %config.trust_domain, "signet server ready");
    Ok(RunningServer {
        agent_address,
        health_address,
        admin_socket: config.admin_socket.clone(),
        bundle_pem: config.data_dir.join("bundle.pem"),
        authority,
        entries: index,
        policies,
        tasks,
    })
}

/// Starts leader election and waits briefly for the first round, so a lone replica starts as
/// leader instead of as a follower of nobody.
async fn open_kubernetes_leader(
    options: &k8s::KubernetesOptions,
) -> (
    tokio::sync::watch::Receiver<bool>,
    tokio::task::JoinHandle<()>,
) {
    let elector = k8s::leader::LeaderElector::new(
        options.client.clone(),
        k8s::leader::LeaderConfig {
            namespace: options.namespace.clone(),
            lease_name: options.lease_name.clone(),
            identity: options.identity.clone(),
            lease_duration: options.lease_duration,
            renew_every: options.lease_duration / 3,
        },
    );
    let (mut leader, task) = elector.spawn();
    let _ = tokio::time::timeout(Duration::from_secs(2), leader.changed()).await;
    (leader, task)
}

/// The leader opens (creating on first start) the CA in its Secret; followers wait for the
/// leader to have created it and load it without writing.
async fn open_kubernetes_ca(
    options: &k8s::KubernetesOptions,
    ca_config: CaConfig,
    leading: bool,
) -> Result<CertificateAuthority, ServerError> {
    let store: Arc<dyn signet_ca::KeyStore> = Arc::new(
        k8s::secret_store::SecretKeyStore::new(
            options.client.clone(),
            &options.namespace,
            &options.ca_secret,
        )
        .map_err(signet_ca::Error::from)?,
    );
    let clock = Arc::new(SystemClock);
    if leading {
        match CertificateAuthority::open(ca_config.clone(), store.clone(), clock.clone()) {
            Ok(ca) => return Ok(ca),
            Err(signet_ca::Error::KeyStore(signet_ca::KeyStoreError::Conflict { .. })) => {
                info!("another replica wrote the CA first; loading it");
            }
            Err(error) => return Err(error.into()),
        }
    }
    let mut waited = 0u32;
    loop {
        let store = store.clone();
        let config = ca_config.clone();
        let clock = clock.clone();
        if let Some(ca) = CertificateAuthority::open_existing(config, store, clock)? {
            return Ok(ca);
        }
        if waited.is_multiple_of(15) {
            info!(secret = %options.ca_secret, "waiting for the leader to create the CA");
        }
        waited += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
