//! Signet's signing server (DESIGN §6): the CA, join-token node attestation, the agent API over
//! TLS, the admin API on a local Unix socket, the entry index fed from SQLite, the bundle files,
//! and health/metrics endpoints.

mod admin_api;
pub mod admission;
mod agent_api;
mod agent_listener;
mod agents;
pub mod authority;
mod ca_admin;
mod connection_lifetime;
pub mod datastore;
mod error;
pub mod federation;
mod federation_admin;
mod health;
mod https_endpoint;
mod index;
mod join_token;
pub mod k8s;
mod listeners;
mod metrics;
pub mod migrate;
pub mod oidc;
mod policies;
mod policy_admin;
pub mod psat;
mod shared;
mod standalone;
mod state;
mod svid_reports;
mod sync_session;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use signet_ca::{CaConfig, KeyAlgorithm};
use signet_spiffe::TrustDomain;
use tracing::info;

use crate::state::ServerState;

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
    /// How long after its expiry an agent SVID still re-attests (a server outage longer than
    /// the agent SVID's lifetime needs no new join token within it).
    pub agent_reattest_grace: Duration,
    /// How often the CA checks whether to rotate.
    pub rotation_check_interval: Duration,
    /// Kubernetes mode (CRDs and pods as the entry source, CA in a Secret, PSAT, leader
    /// election); `None` is standalone mode (SQLite entries, file key store, join tokens).
    pub kubernetes: Option<k8s::KubernetesOptions>,
    /// What happens to requests no enforced ALLOW AuthorizationPolicy targets.
    pub default_policy: signet_core::policy::DefaultPolicy,
    /// Bounds of the agent API listener (connections, handshakes, attestation connections).
    pub agent_api_bounds: agent_listener::AgentApiBounds,
    /// Admission control of the agent API (reconnect storms, per-agent signing rates).
    pub admission: admission::AdmissionLimits,
    /// Standalone: start a new CA although the journal records one whose key store is missing
    /// (every agent and workload then needs the new bundle). Without it such a start is refused.
    pub new_ca: bool,
    /// Serve a standalone database older than its generation record (see `datastore`).
    pub accept_data_loss: bool,
    /// Federation: this trust domain's bundle endpoint and how peers' bundles are fetched.
    pub federation: FederationConfig,
    /// The `iss` claim of JWT-SVIDs (`None`: none), and the issuer OIDC discovery announces.
    pub jwt_issuer: Option<String>,
    /// OIDC discovery for JWT-SVIDs (`None`: not served; needs `jwt_issuer`).
    pub oidc: Option<oidc::OidcConfig>,
    /// The time the CA signs at and join tokens expire by (the system clock; tests move a
    /// manual one instead of sleeping).
    pub clock: Arc<dyn signet_ca::Clock>,
    /// Keep the CA's keys in a PKCS#11 token (`None`: in the key store with the CA state).
    pub pkcs11: Option<signet_ca::pkcs11::Pkcs11Config>,
    /// An upstream CA signs our intermediates (`None`: self-signed roots).
    pub upstream: Option<UpstreamSource>,
    /// Standalone: share a PostgreSQL database with other servers (`None`: SQLite in the data
    /// directory, one server).
    pub datastore: Option<datastore::postgres::PostgresConfig>,
    /// PostgreSQL: how the CA state is kept in the database (`None`: refused unless the keys
    /// are in a PKCS#11 token).
    pub ca_state_protection: Option<CaStateProtection>,
}

pub use shared::CaStateProtection;

/// Where the upstream CA's signing material comes from.
#[derive(Debug, Clone)]
pub enum UpstreamSource {
    /// PEM files, read at start: the signing certificate (then any intermediates), its key
    /// (PKCS#8, SEC1 or PKCS#1), and the roots (optional when the certificate is a root).
    Files {
        /// Certificate chain, signing certificate first.
        cert: PathBuf,
        /// Its private key.
        key: PathBuf,
        /// The upstream roots.
        bundle: Option<PathBuf>,
    },
    /// Kubernetes mode: a TLS Secret in the server's namespace (`tls.crt`, `tls.key`,
    /// `ca.crt`: what cert-manager writes), watched; a renewal re-issues our intermediate.
    Secret {
        /// The Secret's name.
        name: String,
    },
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
            agent_reattest_grace: signet_core::reattest::DEFAULT_GRACE,
            rotation_check_interval: Duration::from_secs(10),
            kubernetes: None,
            default_policy: signet_core::policy::DefaultPolicy::default(),
            new_ca: false,
            accept_data_loss: false,
            agent_api_bounds: agent_listener::AgentApiBounds::default(),
            admission: admission::AdmissionLimits::default(),
            clock: Arc::new(signet_ca::SystemClock),
            federation: FederationConfig::default(),
            jwt_issuer: None,
            oidc: None,
            pkcs11: None,
            upstream: None,
            datastore: None,
            ca_state_protection: None,
        }
    }
}

/// Federation settings.
#[derive(Debug, Clone, Default)]
pub struct FederationConfig {
    /// This trust domain's bundle endpoint (`None`: not served).
    pub bundle_endpoint: Option<federation::endpoint::BundleEndpointConfig>,
    /// Root certificates trusted for `https_web` endpoints besides the system's (a private PKI).
    pub extra_web_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// When peers' bundles are fetched again.
    pub refresh: federation::RefreshBounds,
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
    /// Federation relationships and bundles, for in-process callers.
    pub federation: Arc<federation::Federation>,
    /// Where the bundle endpoint listens, if served.
    pub bundle_endpoint_address: Option<SocketAddr>,
    /// Where OIDC discovery listens, if served.
    pub oidc_address: Option<SocketAddr>,
    agents: Arc<agents::AgentRegistry>,
    leader: Option<tokio::sync::watch::Receiver<bool>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    /// Whether this server rotates the CA (a lone server always does; with a shared store, the
    /// holder of the lock).
    pub fn is_leading(&self) -> bool {
        self.leader.as_ref().is_none_or(|l| *l.borrow())
    }

    /// Whether this server refuses `agent` as banned.
    pub fn agents_banned(&self, agent: &signet_spiffe::SpiffeId) -> bool {
        self.agents.is_banned(agent)
    }

    /// Stops every task.
    pub fn shutdown(self) {
        for task in self.tasks {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.admin_socket);
    }
}

/// Unix seconds of `t`, as the APIs and the database store time (0 before the epoch).
pub(crate) fn unix_seconds(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn upstream_from_files(
    cert: &Path,
    key: &Path,
    bundle: Option<&Path>,
) -> Result<signet_ca::UpstreamCa, ServerError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| ServerError::io(format!("reading {}", path.display()), e))
    };
    let key_pem = zeroize::Zeroizing::new(read(key)?);
    let bundle_pem = bundle.map(read).transpose()?;
    Ok(signet_ca::UpstreamCa::from_pem(
        &read(cert)?,
        &key_pem,
        bundle_pem.as_deref(),
    )?)
}

/// The data directory holds the CA keys: ours alone, never behind a link, never in a directory
/// another user controls (see `signet_unix::ensure_private_dir`).
fn private_dir(path: &Path) -> Result<(), ServerError> {
    Ok(signet_unix::ensure_private_dir(path, 0o700)?)
}

/// Opens the stores, starts every listener and background task, and returns once the server is
/// ready.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    private_dir(&config.data_dir)?;
    let mut ca_config = CaConfig::new(config.trust_domain.clone());
    ca_config.x509_key_algorithm = config.ca_key_algorithm;
    ca_config.ca_ttl = config.ca_ttl;
    if let Some(issuer) = &config.jwt_issuer {
        oidc::check_issuer(issuer).map_err(ServerError::InvalidArgument)?;
        ca_config.jwt_issuer = Some(issuer.clone());
    }
    if let Some(token) = &config.pkcs11 {
        let keys = signet_ca::pkcs11::Pkcs11Keys::open(token)?;
        info!(token = %token.token_label, module = %token.module.display(), "CA keys are kept in a PKCS#11 token");
        ca_config.keys = Arc::new(keys);
    }
    match &config.upstream {
        None => {}
        Some(UpstreamSource::Files { cert, key, bundle }) => {
            ca_config.upstream = Some(upstream_from_files(cert, key, bundle.as_deref())?);
        }
        Some(UpstreamSource::Secret { name }) => {
            let Some(options) = &config.kubernetes else {
                return Err(ServerError::InvalidArgument(
                    "an upstream CA Secret needs Kubernetes mode; standalone reads PEM files"
                        .into(),
                ));
            };
            ca_config.upstream = Some(k8s::upstream_secret::read(options, name).await?);
        }
    }
    let policies = Arc::new(policies::PolicyStore::new(config.default_policy));
    let state = match &config.kubernetes {
        None => standalone::open_state(&config, ca_config, policies).await?,
        Some(options) => k8s::state::open_state(&config, options, ca_config, policies).await?,
    };
    let ServerState {
        datastore,
        authority,
        index,
        agents,
        policies,
        psat,
        federation,
        agent_state,
        leader,
        mut tasks,
    } = state;
    info!(
        entries = index.len(),
        agents = agents.active_count(),
        authorization_policies = policies.current().map_or(0, |set| set.bindings.len()),
        default_policy = config.default_policy.as_str(),
        "state loaded"
    );
    tasks.push(authority.spawn_rotation_led(config.rotation_check_interval, leader.clone()));

    let metrics = Arc::new(metrics::ServerMetrics::default());
    let reports = Arc::new(svid_reports::SvidReports::new(config.clock.clone()));
    let api = agent_api::AgentApi {
        authority: authority.clone(),
        index: index.clone(),
        agents: agents.clone(),
        datastore,
        metrics: metrics.clone(),
        agent_svid_ttl: config.agent_svid_ttl,
        psat,
        policies: policies.clone(),
        clock: config.clock.clone(),
        federation: federation.clone(),
        reports: reports.clone(),
        reattest_grace: config.agent_reattest_grace,
        admission: Arc::new(admission::Admission::new(config.admission)),
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
    let (agent_address, agent_tasks) = listeners::serve_agent_api(
        config.bind_address,
        config.agent_api_bounds,
        api,
        &authority,
        metrics.clone(),
    )
    .await?;
    tasks.extend(agent_tasks);
    tasks.push(listeners::serve_admin_api(&config.admin_socket, admin)?);
    let mut oidc_address = None;
    if let Some(discovery) = &config.oidc {
        if config.jwt_issuer.as_deref() != Some(discovery.issuer.as_str()) {
            return Err(ServerError::InvalidArgument(
                "OIDC discovery announces the issuer JWT-SVIDs carry: set jwt_issuer to the discovery issuer".into(),
            ));
        }
        let (bound, oidc_tasks) = oidc::serve(discovery, authority.clone()).await?;
        oidc_address = Some(bound);
        tasks.extend(oidc_tasks);
    }
    let mut bundle_endpoint_address = None;
    if let Some(endpoint) = &config.federation.bundle_endpoint {
        let (bound, endpoint_tasks) =
            federation::endpoint::serve(endpoint, authority.clone()).await?;
        bundle_endpoint_address = Some(bound);
        tasks.extend(endpoint_tasks);
    }
    let health_address = match config.health_address {
        None => None,
        Some(address) => {
            let probes = Arc::new(health::ServerProbes::new(
                index.clone(),
                metrics,
                authority.clone(),
                reports,
            ));
            let (bound, task) = signet_unix::serve_probes(address, probes, "health")
                .await
                .map_err(|e| {
                    ServerError::io(format!("binding the health endpoint on {address}"), e)
                })?;
            tasks.push(task);
            Some(bound)
        }
    };

    info!(%agent_address, admin_socket = %config.admin_socket.display(), trust_domain = %config.trust_domain, "signet server ready");
    Ok(RunningServer {
        agent_address,
        health_address,
        admin_socket: config.admin_socket.clone(),
        bundle_pem: config.data_dir.join("bundle.pem"),
        authority,
        entries: index,
        policies,
        federation,
        bundle_endpoint_address,
        oidc_address,
        agents,
        leader,
        tasks,
    })
}
