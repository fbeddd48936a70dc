//! The agent's connection to the server: TLS that authenticates the server as
//! `spiffe://<td>/signet/server` against the current bundle, and presents the agent SVID.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use signet_proto::agent::agent_service_client::AgentServiceClient;
use signet_spiffe::SpiffeId;
use signet_tls::{BundleSource, RotatingSvid, SpiffeServerVerifier};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

/// How long one server address may take to accept a connection before the next is tried.
const CONNECT_EACH: std::time::Duration = std::time::Duration::from_secs(3);

/// The servers to try: a comma-separated list of `host:port` (a name resolving to several
/// addresses counts as one entry; its addresses are tried in turn).
fn server_addresses(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Connects to the first server that answers, starting with the one that answered last: an
/// agent stays with its server while it lives and fails over to the next when it dies. Agents
/// start at a random one, so a fleet spreads over the servers.
async fn connect_any(addresses: &[String], preferred: &AtomicUsize) -> std::io::Result<TcpStream> {
    let count = addresses.len().max(1);
    let start = preferred.load(Ordering::Relaxed);
    let mut last_error = std::io::Error::other("no server address");
    for step in 0..count {
        let index = (start + step) % count;
        let Some(address) = addresses.get(index) else {
            continue;
        };
        match tokio::time::timeout(CONNECT_EACH, TcpStream::connect(address)).await {
            Ok(Ok(tcp)) => {
                if step > 0 {
                    tracing::info!(server = %address, "connected to another server");
                }
                preferred.store(index, Ordering::Relaxed);
                return Ok(tcp);
            }
            Ok(Err(error)) => last_error = error,
            Err(_) => {
                last_error = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("{address} did not answer within {CONNECT_EACH:?}"),
                );
            }
        }
    }
    Err(last_error)
}

/// Builds a lazily connecting client; every reconnect re-reads the bundle and the agent SVID.
/// `server_address` may list several servers, comma-separated (failover).
pub fn connect(
    server_address: &str,
    bundles: Arc<dyn BundleSource>,
    server_id: SpiffeId,
    agent_svid: Option<Arc<RotatingSvid>>,
) -> Result<AgentServiceClient<Channel>, tonic::transport::Error> {
    let verifier = Arc::new(SpiffeServerVerifier::for_id(bundles, server_id));
    let builder = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut tls = match agent_svid {
        Some(svid) => builder.with_client_cert_resolver(svid),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let addresses = Arc::new(server_addresses(server_address));
    let mut random = [0u8; 2];
    let _ = aws_lc_rs::rand::fill(&mut random);
    let preferred = Arc::new(AtomicUsize::new(
        usize::from(u16::from_le_bytes(random)) % addresses.len().max(1),
    ));
    let channel = Endpoint::from_static("http://signet-server")
        .connect_timeout(CONNECT_EACH * 4)
        .http2_keep_alive_interval(std::time::Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .connect_with_connector_lazy(tower::service_fn(move |_uri| {
            let connector = connector.clone();
            let addresses = addresses.clone();
            let preferred = preferred.clone();
            async move {
                let tcp = connect_any(&addresses, &preferred).await?;
                tcp.set_nodelay(true)?;
                // The name is only used for SNI; the server is authenticated by SPIFFE ID.
                let name = ServerName::try_from("signet-server").map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }));
    Ok(AgentServiceClient::new(channel)
        .max_decoding_message_size(16 * 1024 * 1024)
        .max_encoding_message_size(16 * 1024 * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists_are_split_and_trimmed() {
        assert_eq!(server_addresses("a:1"), ["a:1"]);
        assert_eq!(server_addresses(" a:1, b:2 ,,c:3"), ["a:1", "b:2", "c:3"]);
        assert!(server_addresses(" , ").is_empty());
    }

    #[tokio::test]
    async fn a_dead_server_is_skipped_and_the_live_one_is_kept() {
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_address = dead.local_addr().unwrap().to_string();
        drop(dead);
        let addresses = vec![dead_address, live.local_addr().unwrap().to_string()];
        let preferred = AtomicUsize::new(0);
        connect_any(&addresses, &preferred).await.unwrap();
        assert_eq!(
            preferred.load(Ordering::Relaxed),
            1,
            "sticks to the server that answered"
        );
        let none = vec![addresses[0].clone()];
        assert!(connect_any(&none, &AtomicUsize::new(0)).await.is_err());
    }
}
