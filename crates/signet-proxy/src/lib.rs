//! `signet proxy`: a sidecar that gives a workload mutual TLS and AuthorizationPolicy without
//! changing it. Inbound, it terminates mTLS with the workload's SVID, authorizes the peer (per
//! connection for TCP, per request for HTTP/1.1 and HTTP/2) and forwards to the local
//! application; outbound, it accepts plaintext from the application and originates mTLS to a
//! target whose SPIFFE ID it verifies. SVIDs, bundles and policy follow the Workload API: new
//! SVIDs apply to new handshakes and live connections are never dropped.

mod forward;
mod inbound;
mod metrics;
mod outbound;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use signet_core::policy::IdPattern;
use signet_tls::source::{SourceOptions, WorkloadSource};
use tracing::info;

pub use metrics::ProxyMetrics;

/// Whether the inbound listener also accepts plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// mTLS only: a client without an SVID never reaches the application.
    Strict,
    /// mTLS, and plaintext (peer without an SVID, counted and logged) for migrations.
    Permissive,
}

/// What the inbound listener speaks after TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 or HTTP/2 (ALPN): every request authorized with its method and path.
    Http,
    /// Opaque bytes: the connection authorized once, by peer and port.
    Tcp,
}

/// The inbound side.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub listen: SocketAddr,
    /// The local application.
    pub forward: SocketAddr,
    pub protocol: Protocol,
    /// The port policies name for this workload (`to.ports`).
    pub policy_port: u16,
    pub mode: Mode,
}

/// One outbound route: plaintext in on `listen`, mTLS out to `target`.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub listen: SocketAddr,
    /// `host:port` of the target's inbound listener.
    pub target: String,
    /// The server identities accepted.
    pub server_id: IdPattern,
}

/// Everything the proxy needs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub workload_socket: PathBuf,
    pub inbound: Option<Inbound>,
    pub outbound: Vec<Outbound>,
    /// `/metrics`, `/livez`, `/readyz`.
    pub metrics_address: Option<SocketAddr>,
    /// How long start-up waits for the first SVID.
    pub first_svid_timeout: Duration,
    /// Connection bounds of every listener.
    pub bounds: ProxyBounds,
}

/// What each listener holds at most, and how long a peer may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyBounds {
    /// Connections one listener serves at once; more are closed at accept.
    pub max_connections: usize,
    /// Inbound connections before the end of their handshake, in total and per source address.
    pub handshaking: signet_unix::ConnectionLimits,
    /// Longest wait for the first byte and the TLS handshake together (slowloris defence).
    pub handshake_timeout: Duration,
    /// Longest time an HTTP/1 client may take to send a request's headers.
    pub header_read_timeout: Duration,
}

impl Default for ProxyBounds {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            handshaking: signet_unix::ConnectionLimits {
                total: 1_024,
                per_peer: 64,
            },
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Source(#[from] signet_tls::source::SourceError),
    #[error("cannot listen on {address}: {reason}")]
    Bind { address: SocketAddr, reason: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// A running proxy.
#[derive(Debug)]
pub struct RunningProxy {
    pub inbound_address: Option<SocketAddr>,
    pub outbound_addresses: Vec<SocketAddr>,
    pub metrics_address: Option<SocketAddr>,
    pub source: Arc<WorkloadSource>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, ProxyError> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| ProxyError::Bind {
            address,
            reason: e.to_string(),
        })
}

/// Connects to the Workload API, waits for the SVID and starts every listener.
pub async fn start(config: ProxyConfig) -> Result<RunningProxy, ProxyError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let metrics = ProxyMetrics::default();
    let mut options = SourceOptions::new(config.workload_socket.clone());
    options.first_svid_timeout = config.first_svid_timeout;
    options.metrics = metrics.authz.clone();
    // Only the inbound side enforces policy; a pure outbound proxy does not need it.
    options.watch_policy = config.inbound.is_some();
    let source = Arc::new(WorkloadSource::start(options).await?);
    let mut tasks = Vec::new();
    let mut inbound_address = None;
    if let Some(inbound) = &config.inbound {
        let listener = bind(inbound.listen).await?;
        inbound_address = listener.local_addr().ok();
        tasks.push(inbound::spawn(
            listener,
            inbound.clone(),
            config.bounds,
            source.clone(),
            metrics.clone(),
        )?);
    }
    let mut outbound_addresses = Vec::new();
    for route in &config.outbound {
        let listener = bind(route.listen).await?;
        if let Ok(address) = listener.local_addr() {
            outbound_addresses.push(address);
        }
        tasks.push(outbound::spawn(
            listener,
            route.clone(),
            config.bounds,
            source.clone(),
            metrics.clone(),
        )?);
    }
    let mut metrics_address = None;
    if let Some(address) = config.metrics_address {
        let listener = bind(address).await?;
        metrics_address = listener.local_addr().ok();
        tasks.push(metrics::serve(
            listener,
            metrics.clone(),
            source.clone(),
            config.inbound.is_some(),
        ));
    }
    if let Some((id, serial)) = source.identity() {
        info!(spiffe_id = %id, %serial, inbound = ?inbound_address, outbound = ?outbound_addresses, "signet proxy ready");
    }
    Ok(RunningProxy {
        inbound_address,
        outbound_addresses,
        metrics_address,
        source,
        tasks,
    })
}

/// Longest wait for a TCP connection to the application or a target.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connects with [`CONNECT_TIMEOUT`].
pub(crate) async fn connect(
    address: impl tokio::net::ToSocketAddrs,
) -> std::io::Result<tokio::net::TcpStream> {
    tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}
