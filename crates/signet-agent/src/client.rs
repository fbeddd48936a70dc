//! The agent's connection to the server: TLS that authenticates the server as
//! `spiffe://<td>/signet/server` against the current bundle, and presents the agent SVID.

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use signet_proto::agent::agent_service_client::AgentServiceClient;
use signet_spiffe::SpiffeId;
use signet_tls::{BundleSource, RotatingSvid, SpiffeServerVerifier};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

/// Builds a lazily connecting client; every reconnect re-reads the bundle and the agent SVID.
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
    let address = server_address.to_owned();
    let channel = Endpoint::from_static("http://signet-server")
        .connect_timeout(std::time::Duration::from_secs(10))
        .http2_keep_alive_interval(std::time::Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .connect_with_connector_lazy(tower::service_fn(move |_uri| {
            let connector = connector.clone();
            let address = address.clone();
            async move {
                let tcp = TcpStream::connect(&address).await?;
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
