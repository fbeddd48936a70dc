//! The server's two gRPC listeners: the agent API on TCP with mutual TLS, and the admin API on a
//! Unix socket only the server's user can reach.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use signet_proto::admin::admin_server::AdminServer;
use signet_proto::agent::agent_service_server::AgentServiceServer;
use signet_tls::SpiffeClientVerifier;
use tokio::net::UnixListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::UnixListenerStream;

use crate::admin_api::AdminApi;
use crate::agent_api::AgentApi;
use crate::agent_listener::{self, AgentApiBounds};
use crate::authority::AuthorityService;
use crate::error::ServerError;
use crate::metrics::ServerMetrics;

/// Agents sync entry sets of whole nodes; a message of 16 MiB holds a few thousand entries.
const MAX_AGENT_API_MESSAGE: usize = 16 * 1024 * 1024;

/// Serves the agent API: TLS with the server SVID, agent client certificates verified against
/// our own bundle and required by every RPC except attestation. Returns the bound address and
/// the accept and serve tasks.
pub(crate) async fn serve_agent_api(
    address: SocketAddr,
    bounds: AgentApiBounds,
    api: AgentApi,
    authority: &Arc<AuthorityService>,
    metrics: Arc<ServerMetrics>,
) -> Result<(SocketAddr, [JoinHandle<()>; 2]), ServerError> {
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
    let binding = |e| ServerError::io(format!("binding the agent API on {address}"), e);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(binding)?;
    let bound = listener.local_addr().map_err(binding)?;
    let (connections, accept_task) = agent_listener::accept(listener, acceptor, bounds, metrics);
    let service = AgentServiceServer::new(api)
        .max_decoding_message_size(MAX_AGENT_API_MESSAGE)
        .max_encoding_message_size(MAX_AGENT_API_MESSAGE);
    let serve_task = signet_unix::spawn_named("agent-api", async move {
        let result = tonic::transport::Server::builder()
            .trace_fn(|request| tracing::info_span!("grpc", api = "agent", method = %request.uri().path()))
            // Dead agents (a vanished node) are noticed and their connection closed.
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_service(service)
            .serve_with_incoming(connections)
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "agent API stopped");
        }
    });
    Ok((bound, [accept_task, serve_task]))
}

/// Serves the admin API on `socket`, mode 0600 from the moment it can be reached (never a
/// window with the umask's mode).
pub(crate) fn serve_admin_api(
    socket: &Path,
    admin: AdminApi,
) -> Result<JoinHandle<()>, ServerError> {
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| ServerError::io(format!("creating {}", parent.display()), e))?;
    }
    let listener = signet_unix::bind_unix_socket(socket, 0o600)
        .and_then(UnixListener::from_std)
        .map_err(|e| {
            ServerError::io(format!("binding the admin socket {}", socket.display()), e)
        })?;
    Ok(signet_unix::spawn_named("admin-api", async move {
        let result = tonic::transport::Server::builder()
            .trace_fn(|request| tracing::info_span!("grpc", api = "admin", method = %request.uri().path()))
            .add_service(AdminServer::new(admin))
            .serve_with_incoming(
                UnixListenerStream::new(listener)
                    .map(|conn| conn.map(signet_unix::normalize_authority)),
            )
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "admin API stopped");
        }
    }))
}
