//! The Workload API socket: bound so only the agent writes its directory and every local
//! process may connect, connections admitted within per-uid and total limits, closed when idle,
//! and the Workload API, SDS and authorization services served on it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryServiceServer;
use signet_proto::authz::authorization_server::AuthorizationServer;
use signet_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use tokio::net::UnixListener;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::error::AgentError;
use crate::workload_api::WorkloadApi;
use crate::{open_requests, peer, sds, telemetry};

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
pub const DEFAULT_IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(300);
/// Descriptors kept free for everything but Workload API connections.
const RESERVED_DESCRIPTORS: usize = 256;
/// Requests are small; a 64 KiB request is hostile.
const MAX_REQUEST: usize = 64 * 1024;
/// A response carries every SVID and bundle of the caller.
const MAX_RESPONSE: usize = 8 * 1024 * 1024;

/// Where and how the Workload API socket is served.
#[derive(Debug, Clone)]
pub struct WorkloadEndpoint {
    /// The socket; its directory is created and written only by the agent.
    pub socket_path: PathBuf,
    /// Connections held open at once, in total and per uid.
    pub connection_limits: signet_unix::ConnectionLimits,
    /// A connection with no open request for this long is closed.
    pub idle_connection_timeout: Duration,
    /// Streams one connection may hold open.
    pub max_streams_per_connection: u32,
    /// Envoy SDS resource names on the same socket.
    pub sds: sds::SdsConfig,
}

impl WorkloadEndpoint {
    /// The defaults for a socket at `socket_path`.
    pub fn new(socket_path: PathBuf) -> Self {
        Self {
            socket_path,
            connection_limits: DEFAULT_CONNECTION_LIMITS,
            idle_connection_timeout: DEFAULT_IDLE_CONNECTION_TIMEOUT,
            max_streams_per_connection: MAX_STREAMS_PER_CONNECTION,
            sds: sds::SdsConfig::default(),
        }
    }
}

/// Binds the socket and serves `api` on it; returns the accept and serve tasks.
pub fn serve(
    endpoint: &WorkloadEndpoint,
    api: WorkloadApi,
) -> Result<[JoinHandle<()>; 2], AgentError> {
    let socket_dir = endpoint
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
    let listener = signet_unix::bind_unix_socket(&endpoint.socket_path, 0o777)
        .and_then(UnixListener::from_std)
        .map_err(|e| AgentError::io(format!("binding {}", endpoint.socket_path.display()), e))?;
    signet_unix::raise_descriptor_limit();
    let limiter = signet_unix::ConnectionLimiter::new(
        endpoint
            .connection_limits
            // A connection holds its socket and the caller's pidfd.
            .within_descriptor_limit(RESERVED_DESCRIPTORS, 2),
    );
    api.metrics.watch_connections(limiter.clone());
    let (connections, incoming) = tokio::sync::mpsc::channel(64);
    let accept_task = signet_unix::spawn_named(
        "workload-api-accept",
        accept_workloads(
            listener,
            limiter,
            endpoint.idle_connection_timeout,
            connections,
            api.metrics.clone(),
        ),
    );
    let authorization =
        AuthorizationServer::new(crate::authorization::AuthorizationApi::new(api.clone()))
            .max_decoding_message_size(MAX_REQUEST)
            .max_encoding_message_size(MAX_RESPONSE);
    let secrets =
        SecretDiscoveryServiceServer::new(sds::SdsApi::new(api.clone(), endpoint.sds.clone()))
            .max_decoding_message_size(MAX_REQUEST)
            .max_encoding_message_size(MAX_RESPONSE);
    let service = SpiffeWorkloadApiServer::new(api)
        .max_decoding_message_size(MAX_REQUEST)
        .max_encoding_message_size(MAX_RESPONSE);
    let max_streams = endpoint.max_streams_per_connection;
    let serve_task = signet_unix::spawn_named("workload-api", async move {
        let result = tonic::transport::Server::builder()
            .trace_fn(|request| tracing::info_span!("grpc", api = "workload", method = %request.uri().path()))
            .concurrency_limit_per_connection(64)
            // Each open stream holds state; one connection may not hold thousands.
            .max_concurrent_streams(max_streams)
            .layer(open_requests::CountOpenRequestsLayer)
            .add_service(service)
            .add_service(authorization)
            .add_service(secrets)
            .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(incoming))
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "Workload API stopped");
        }
    });
    Ok([accept_task, serve_task])
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
