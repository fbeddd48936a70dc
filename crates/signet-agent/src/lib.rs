//! Signet's node agent (DESIGN §7): attests to the server, syncs this node's entries, pre-signs
//! and rotates their SVIDs, attests workloads and serves the SPIFFE Workload API on a Unix socket.

pub mod agent_svid;
pub mod attestor;
mod authorization;
mod cache;
pub mod client;
mod context;
pub mod error;
mod open_requests;
pub mod peer;
mod persisted_cache;
mod pushed;
pub mod sds;
mod telemetry;
mod workload_api;
mod workload_listener;
mod workload_source;

use std::path::PathBuf;
use std::sync::Arc;

use std::time::SystemTime;

use signet_spiffe::TrustDomain;
use tracing::{info, warn};

pub use attestor::unix::UnixAttestorConfig;
pub use cache::{CachedSvid, DEFAULT_TAINT_RESIGN_WINDOW, Identities, SvidCache};
pub use error::AgentError;
pub use telemetry::AgentMetrics;
pub use workload_api::{WorkloadApi, x509_svid_response};
pub use workload_listener::serve as serve_workload_api;
pub use workload_listener::{
    DEFAULT_CONNECTION_LIMITS, DEFAULT_IDLE_CONNECTION_TIMEOUT, MAX_STREAMS_PER_CONNECTION,
    WorkloadEndpoint,
};
pub use workload_source::{JwtMinter, MintedJwt, WorkloadSource};

use crate::agent_svid::{IdentityStore, read_bundle_file};
use crate::context::AgentContext;

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
    /// The Workload API socket and its limits.
    pub workload: WorkloadEndpoint,
    /// The unix workload attestor.
    pub unix_attestor: UnixAttestorConfig,
    /// Health and metrics address (`None` = off).
    pub health_address: Option<std::net::SocketAddr>,
    /// SVIDs signed by a tainted authority are re-signed at random times within this window
    /// ([`DEFAULT_TAINT_RESIGN_WINDOW`] by default).
    pub taint_resign_window: std::time::Duration,
    /// Re-sign every SVID (the agent's own too) early enough that a server outage this long
    /// cannot expire one (zero = half-life only).
    pub availability_target: std::time::Duration,
    /// Keep the node's SVIDs and keys in the data directory, so that a restart while the server
    /// is unreachable serves them.
    pub persist_svids: bool,
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

/// The persisted agent SVID when it is still valid, otherwise a new attestation (saved).
async fn agent_identity(
    config: &AgentConfig,
    store: &IdentityStore,
    server_id: &signet_spiffe::SpiffeId,
) -> Result<agent_svid::PersistedIdentity, AgentError> {
    if let Some(identity) = store.load(SystemTime::now()) {
        info!(agent = %identity.svid.spiffe_id(), "reusing the persisted agent identity");
        return Ok(identity);
    }
    // Restarted after an outage longer than the agent SVID's life: its key still proves who it
    // is, within the server's grace window.
    if config.join_token.is_none()
        && let Some(expired) = store.load_even_expired()
    {
        match agent_svid::reattest_with_expired_svid(
            &config.server_address,
            expired.bundle.clone(),
            server_id.clone(),
            &expired.svid,
        )
        .await
        {
            Ok(identity) => {
                store.save_svid(&identity.svid)?;
                store.save_bundle(&identity.bundle)?;
                info!(agent = %identity.svid.spiffe_id(), "re-attested with the expired agent SVID");
                return Ok(identity);
            }
            // The server is down: start with what we have; the sync loop re-attests once it
            // answers, and the persisted SVIDs are served meanwhile.
            Err(AgentError::Unavailable(reason)) => {
                warn!(%reason, "the server is unreachable and the agent SVID expired; starting with the persisted state and re-attesting when the server answers");
                return Ok(expired);
            }
            Err(error) => {
                warn!(%error, "re-attestation with the expired agent SVID failed");
            }
        }
    }
    let identity = first_attestation(config, server_id).await?;
    store.save_svid(&identity.svid)?;
    store.save_bundle(&identity.bundle)?;
    info!(agent = %identity.svid.spiffe_id(), "attested");
    Ok(identity)
}

/// The first attestation. A join token is tried once (the operator is at the terminal); in
/// Kubernetes the agent usually starts before the server is reachable, so an unreachable
/// server is retried with backoff instead of crash-looping (the token is re-read each time).
async fn first_attestation(
    config: &AgentConfig,
    server_id: &signet_spiffe::SpiffeId,
) -> Result<agent_svid::PersistedIdentity, AgentError> {
    let mut backoff = context::server_backoff();
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
            // A busy server (reconnect storm) says when to come back, to join-token agents too;
            // an unreachable one is waited for in Kubernetes only.
            Err(error)
                if error.retry_after().is_some()
                    || (config.kubernetes.is_some()
                        && matches!(error, AgentError::Unavailable(_))) =>
            {
                let delay = error.retry_after().unwrap_or_else(|| backoff.next_delay());
                warn!(
                    server = %config.server_address,
                    %error,
                    retry_in = ?delay,
                    kind = credential.kind(),
                    "server not reachable or busy for attestation; retrying"
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
        .map_err(|e| AgentError::Config(format!("trust domain {}: {e}", config.trust_domain)))?;

    // Health first: while the agent waits for the server, /livez answers (a startup probe must
    // not kill a patient agent) and /readyz says not ready.
    let cache = Arc::new(cache::SvidCache::new());
    cache.set_taint_resign_window(config.taint_resign_window);
    cache.set_availability_target(config.availability_target);
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
    let identity = match agent_identity(&config, &store, &server_id).await {
        Ok(identity) => identity,
        Err(error) => {
            if let Some(task) = &health_task {
                task.abort();
            }
            return Err(error);
        }
    };
    let agent_id = identity.svid.spiffe_id().clone();
    let reattest = config
        .kubernetes
        .as_ref()
        .map(|k| agent_svid::NodeCredential::PsatTokenFile(k.token_path.clone()));
    let context = AgentContext::connect(
        &config.server_address,
        cache,
        store,
        identity,
        server_id,
        reattest,
    )?;
    let mut tasks: Vec<_> = health_task.into_iter().collect();
    if config.persist_svids {
        match persisted_cache::CacheFile::open(&config.data_dir) {
            Ok(mut file) => {
                if let Err(error) =
                    persisted_cache::restore(&mut file, context.cache(), &config.trust_domain)
                {
                    warn!(%error, "could not read the persisted SVID cache; starting empty");
                }
                tasks.push(signet_unix::spawn_named(
                    "svid-cache-writer",
                    persisted_cache::keep_written(
                        file,
                        context.cache().clone(),
                        metrics.cache_write_failures.clone(),
                    ),
                ));
            }
            Err(error) => {
                warn!(%error, "the SVID cache cannot be kept on disk; a restart during a server outage will have nothing to serve");
            }
        }
    }
    tasks.extend([
        signet_unix::spawn_named("entry-sync", context.clone().run_sync()),
        signet_unix::spawn_named("signer", context.clone().run_signer()),
        signet_unix::spawn_named("svid-renewal", context.clone().run_renewal()),
        signet_unix::spawn_named("svid-report", context.clone().run_reporter()),
        signet_unix::spawn_named(
            "svid-expiry",
            cache::announce_expiries(context.cache().clone()),
        ),
    ]);
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
    let api = workload_api::WorkloadApi::new(
        context.workload_source(),
        config.unix_attestor.clone(),
        k8s_attestor,
        metrics,
    );
    tasks.extend(workload_listener::serve(&config.workload, api)?);
    info!(agent = %agent_id, socket = %config.workload.socket_path.display(), "signet agent ready");
    Ok(RunningAgent {
        socket_path: config.workload.socket_path,
        agent_id,
        cache: context.cache().clone(),
        tasks,
    })
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
