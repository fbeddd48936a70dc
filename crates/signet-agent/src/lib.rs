//! Signet's node agent (DESIGN §7): attests to the server, syncs this node's entries, pre-signs
//! and rotates their SVIDs, attests workloads and serves the SPIFFE Workload API on a Unix socket.

pub mod agent_svid;
pub mod attestor;
pub mod authorization;
pub mod cache;
pub mod client;
pub mod error;
pub mod manager;
mod open_requests;
pub mod peer;
mod pushed;
pub mod sds;
pub mod telemetry;
pub mod workload_api;

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;
use std::time::SystemTime;

use signet_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use signet_spiffe::TrustDomain;
use signet_tls::{RotatingSvid, SharedBundles};
use tokio::net::UnixListener;
use tracing::{debug, info, warn};

pub use attestor::unix::UnixAttestorConfig;
pub use error::AgentError;

use crate::agent_svid::{IdentityStore, read_bundle_file, single};
use crate::manager::AgentContext;

/// Workload API connection limits unless configured: generous for a node of 110 pods, far below
/// what exhausts the agent's descriptors (the total is lowered further to fit them).
pub const DEFAULT_CONNECTION_LIMITS: signet_unix::ConnectionLimits =
    signet_unix::ConnectionLimits {
        total: 8192,
        per_peer: 1024,
    };
/// Workload API streams one connection may hold open unless configured (announced in HTTP/2
/// SETTINGS; clients queue the rest).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 128;
/// How long a Workload API connection may carry no request before it is closed (gRPC clients
/// reconnect transparently on their next call).
pub const DEFAULT_IDLE_CONNECTION_TIMEOUT: std::time::Duration =
    std::time::Duration::from_secs(300);
/// Descriptors kept free for everything but Workload API connections.
const RESERVED_DESCRIPTORS: usize = 256;

/// Everything `signet agent` can be told.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Server agent-API address (`host:port`).
    pub server_address: String,
    /// Bootstrap trust bundle (PEM or SPIFFE JSON) used to authenticate the server the first
    /// time; later the latest bundle from the data directory is used.
    pub trust_bundle_path: PathBuf,
    /// Join token for the first attestation.
    pub join_token: Option<String>,
    /// Kubernetes mode: the projected service-account token (PSAT node attestation, repeated
    /// whenever the server refuses the agent) and this node's pod watch for the k8s attestor.
    pub kubernetes: Option<AgentKubernetes>,
    /// Directory for the agent SVID and bundle (created 0700).
    pub data_dir: PathBuf,
    /// Workload API socket; its directory is created and written only by the agent.
    pub socket_path: PathBuf,
    /// The unix workload attestor.
    pub unix_attestor: UnixAttestorConfig,
    /// Health and metrics address (`None` = off).
    pub health_address: Option<std::net::SocketAddr>,
    /// Workload API connections held open at once, in total and per uid.
    pub connection_limits: signet_unix::ConnectionLimits,
    /// A Workload API connection with no open request for this long is closed.
    pub idle_connection_timeout: std::time::Duration,
    /// Workload API streams one connection may hold open.
    pub max_streams_per_connection: u32,
    /// Envoy SDS resource names on the same socket.
    pub sds: sds::SdsConfig,
}

/// Kubernetes mode of the agent.
#[derive(Clone)]
pub struct AgentKubernetes {
    /// API client (in-cluster or from a kubeconfig).
    pub client: kube::Client,
    /// This node's name (pods are watched with `spec.nodeName=<node>`).
    pub node_name: String,
    /// The projected token file (audience `signet-server`).
    pub token_path: PathBuf,
    /// The k8s workload attestor.
    pub attestor: attestor::k8s::K8sAttestorConfig,
}

impl std::fmt::Debug for AgentKubernetes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentKubernetes")
            .field("node_name", &self.node_name)
            .field("token_path", &self.token_path)
            .field("attestor", &self.attestor)
            .finish_non_exhaustive()
    }
}

/// A started agent.
#[derive(Debug)]
pub struct RunningAgent {
    /// The Workload API socket.
    pub socket_path: PathBuf,
    /// The agent's SPIFFE ID.
    pub agent_id: signet_spiffe::SpiffeId,
    /// The cache (for tests and benchmarks).
    pub cache: Arc<cache::SvidCache>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningAgent {
    /// Stops every task and removes the socket.
    pub fn shutdown(self) {
        for task in self.tasks {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

fn private_dir(path: &std::path::Path) -> Result<(), AgentError> {
    Ok(signet_unix::ensure_private_dir(path, 0o700)?)
}

/// The first attestation. A join token is tried once (the operator is at the terminal); in
/// Kubernetes the agent usually starts before the server is reachable, so an unreachable
/// server is retried with backoff instead of crash-looping (the token is re-read each time).
async fn first_attestation(
    config: &AgentConfig,
    server_id: &signet_spiffe::SpiffeId,
) -> Result<agent_svid::PersistedIdentity, AgentError> {
    let mut backoff = manager::server_backoff();
    loop {
        let credential = node_credential(config)?;
        let bootstrap = read_bundle_file(&config.trust_bundle_path, &config.trust_domain)?;
        let result = agent_svid::attest(
            &config.server_address,
            bootstrap,
            server_id.clone(),
            &credential,
        )
        .await;
        match result {
            Err(AgentError::Unavailable(reason)) if config.kubernetes.is_some() => {
                let delay = backoff.next_delay();
                warn!(
                    server = %config.server_address,
                    %reason,
                    retry_in = ?delay,
                    kind = credential.kind(),
                    "server not reachable for attestation; retrying"
                );
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}

/// Attests (or reuses the persisted identity), starts sync, signer, renewal and the Workload
/// API, and returns once the socket is listening.
pub async fn start(config: AgentConfig) -> Result<RunningAgent, AgentError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    private_dir(&config.data_dir)?;
    let store = IdentityStore::new(config.data_dir.clone(), config.trust_domain.clone());
    let server_id = signet_core::server_id(&config.trust_domain)
        .map_err(|e| AgentError::Internal(e.to_string()))?;

    // Health first: while the agent waits for the server, /livez answers (a startup probe must
    // not kill a patient agent) and /readyz says not ready.
    let cache = Arc::new(cache::SvidCache::new());
    let metrics = Arc::new(telemetry::AgentMetrics::default());
    let health_task = match config.health_address {
        Some(address) => Some(
            telemetry::serve(address, cache.clone(), metrics.clone())
                .await
                .map_err(|e| {
                    AgentError::io(format!("binding the health endpoint on {address}"), e)
                })?
                .1,
        ),
        None => None,
    };
    let stop_health = |error: AgentError| {
        if let Some(task) = &health_task {
            task.abort();
        }
        error
    };

    let identity = match store.load(SystemTime::now()) {
        Some(identity) => {
            info!(agent = %identity.svid.spiffe_id(), "reusing the persisted agent identity");
            identity
        }
        None => {
            let identity = first_attestation(&config, &server_id)
                .await
                .map_err(stop_health)?;
            store.save_svid(&identity.svid)?;
            store.save_bundle(&identity.bundle)?;
            info!(agent = %identity.svid.spiffe_id(), "attested");
            identity
        }
    };
    let agent_id = identity.svid.spiffe_id().clone();

    let bundles = Arc::new(SharedBundles::new(single(identity.bundle.clone())));
    let agent_tls = Arc::new(RotatingSvid::new());
    let client = client::connect(
        &config.server_address,
        bundles.clone(),
        server_id.clone(),
        Some(agent_tls.clone()),
    )
    .map_err(|e| AgentError::Unavailable(e.to_string()))?;
    let context = Arc::new(AgentContext {
        trust_domain: config.trust_domain.clone(),
        cache: cache.clone(),
        bundles,
        agent_tls,
        agent_svid: RwLock::new(identity.svid.clone()),
        store,
        client,
        reattest: config.kubernetes.as_ref().map(|k| manager::Reattestation {
            credential: agent_svid::NodeCredential::PsatTokenFile(k.token_path.clone()),
            server_address: config.server_address.clone(),
            server_id: server_id.clone(),
        }),
        policies: tokio::sync::watch::channel(None).0,
    });
    context.install_agent_svid(identity.svid)?;
    context.apply_bundle(identity.bundle);

    let mut tasks = vec![
        signet_unix::spawn_named("entry-sync", context.clone().run_sync()),
        signet_unix::spawn_named("signer", context.clone().run_signer()),
        signet_unix::spawn_named("svid-renewal", context.clone().run_renewal()),
    ];

    let socket_dir = config
        .socket_path
        .parent()
        .ok_or_else(|| AgentError::Config("socket path has no directory".into()))?;
    if !peer::kernel_pins_peers() {
        warn!(
            "this kernel does not record the connecting process of a Unix socket (SO_PEERPIDFD, \
             Linux 6.5 or later): workloads are attested by uid and gid only; unix:path, \
             unix:sha256, unix:supplementary_gid and every k8s: selector are unavailable"
        );
    }
    // Only the agent writes the directory; everyone may traverse it to reach the socket.
    signet_unix::ensure_private_dir(socket_dir, 0o755)?;
    // Every local process may connect (attestation decides what it gets).
    let listener = signet_unix::bind_unix_socket(&config.socket_path, 0o777)
        .and_then(UnixListener::from_std)
        .map_err(|e| AgentError::io(format!("binding {}", config.socket_path.display()), e))?;
    signet_unix::raise_descriptor_limit();
    let limiter = signet_unix::ConnectionLimiter::new(
        config
            .connection_limits
            // A connection holds its socket and the caller's pidfd.
            .within_descriptor_limit(RESERVED_DESCRIPTORS, 2),
    );
    metrics.watch_connections(limiter.clone());
    let (connections, incoming) = tokio::sync::mpsc::channel(64);
    tasks.push(signet_unix::spawn_named(
        "workload-api-accept",
        accept_workloads(
            listener,
            limiter,
            config.idle_connection_timeout,
            connections,
            metrics.clone(),
        ),
    ));
    if let Some(task) = health_task {
        tasks.push(task);
    }
    let k8s_attestor = match &config.kubernetes {
        None => None,
        Some(k) => {
            let pods = Arc::new(attestor::k8s::pods::PodCache::new());
            tasks.push(attestor::k8s::watch::spawn(
                k.client.clone(),
                k.node_name.clone(),
                pods.clone(),
            ));
            Some(attestor::k8s::K8sAttestor::new(k.attestor.clone(), pods))
        }
    };
    let api = workload_api::WorkloadApi {
        context,
        attestor: config.unix_attestor.clone(),
        k8s_attestor,
        metrics,
        x509_memo: Arc::default(),
    };
    let authorization = signet_proto::authz::authorization_server::AuthorizationServer::new(
        authorization::AuthorizationApi::new(api.clone()),
    )
    .max_decoding_message_size(64 * 1024)
    .max_encoding_message_size(8 * 1024 * 1024);
    let secrets = envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryServiceServer::new(
        sds::SdsApi::new(api.clone(), config.sds.clone()),
    )
    .max_decoding_message_size(64 * 1024)
    .max_encoding_message_size(8 * 1024 * 1024);
    let service = SpiffeWorkloadApiServer::new(api)
        .max_decoding_message_size(64 * 1024)
        .max_encoding_message_size(8 * 1024 * 1024);
    tasks.push(signet_unix::spawn_named("workload-api", async move {
        let result = tonic::transport::Server::builder()
            .trace_fn(|request| tracing::info_span!("grpc", api = "workload", method = %request.uri().path()))
            .concurrency_limit_per_connection(64)
            // Each open stream holds state; one connection may not hold thousands.
            .max_concurrent_streams(config.max_streams_per_connection)
            .layer(open_requests::CountOpenRequestsLayer)
            .add_service(service)
            .add_service(authorization)
            .add_service(secrets)
            .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(incoming))
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "Workload API stopped");
        }
    }));
    info!(agent = %agent_id, socket = %config.socket_path.display(), "signet agent ready");
    Ok(RunningAgent {
        socket_path: config.socket_path,
        agent_id,
        cache,
        tasks,
    })
}

type WorkloadConnection = signet_unix::AuthorityNormalizer<peer::PeerStream>;

/// Accepts Workload API connections within the limits: a connection over its uid's share or the
/// total is closed at once (before it costs more than its descriptor), and accept errors pause
/// with backoff instead of spinning.
async fn accept_workloads(
    listener: UnixListener,
    limiter: Arc<signet_unix::ConnectionLimiter>,
    idle_timeout: std::time::Duration,
    connections: tokio::sync::mpsc::Sender<std::io::Result<WorkloadConnection>>,
    metrics: Arc<telemetry::AgentMetrics>,
) {
    let mut errors = signet_unix::AcceptErrors::new("Workload API");
    let refusal_log = signet_tls::log_budget::LogBudget::new(1);
    loop {
        let (stream, _) = errors
            .accept(|| async {
                let accepted = listener.accept().await;
                if accepted.is_err() {
                    metrics.workload_accept_errors.inc();
                }
                accepted
            })
            .await;
        let Ok(uid) = stream.peer_cred().map(|c| c.uid()) else {
            continue;
        };
        let slot = match limiter.try_acquire(uid) {
            Ok(slot) => slot,
            Err(refusal) => {
                metrics
                    .workload_connections_refused
                    .get_or_create(&telemetry::RefusalLabels {
                        limit: refusal_label(refusal),
                    })
                    .inc();
                if let Some(suppressed) = refusal_log.take() {
                    warn!(
                        uid,
                        reason = refusal_label(refusal),
                        limits = ?limiter.limits(),
                        suppressed,
                        "Workload API connection refused: connection limit reached"
                    );
                }
                continue;
            }
        };
        let stream = match peer::PeerStream::new(stream) {
            Ok(stream) => stream.holding(slot).closing_when_idle(idle_timeout),
            Err(error) => {
                debug!(%error, "dropping a Workload API connection without peer credentials");
                continue;
            }
        };
        if connections
            .send(Ok(signet_unix::normalize_authority(stream)))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The Workload API's peers are uids.
fn refusal_label(refusal: signet_unix::Refusal) -> &'static str {
    match refusal {
        signet_unix::Refusal::Total => "total",
        signet_unix::Refusal::PerPeer => "per_uid",
    }
}

fn node_credential(config: &AgentConfig) -> Result<agent_svid::NodeCredential, AgentError> {
    if let Some(k) = &config.kubernetes {
        return Ok(agent_svid::NodeCredential::PsatTokenFile(
            k.token_path.clone(),
        ));
    }
    config
        .join_token
        .clone()
        .map(agent_svid::NodeCredential::JoinToken)
        .ok_or_else(|| {
            AgentError::Config(
                "no valid persisted agent identity and no join token: create one with `signet token create`"
                    .into(),
            )
        })
}
