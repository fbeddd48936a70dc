//! An outbound route: plaintext from the local application, mTLS to the target with the
//! workload's SVID, the target's SPIFFE ID verified against the route's pattern.

use std::sync::Arc;

use rustls_pki_types::ServerName;
use signet_tls::config::client_config;
use signet_tls::source::WorkloadSource;
use tokio::net::TcpListener;
use tokio_rustls::TlsConnector;
use tracing::{debug, info, warn};

use crate::{Outbound, ProxyBounds, ProxyError, ProxyMetrics};

pub(crate) fn spawn(
    listener: TcpListener,
    route: Outbound,
    bounds: ProxyBounds,
    source: Arc<WorkloadSource>,
    metrics: ProxyMetrics,
) -> Result<tokio::task::JoinHandle<()>, ProxyError> {
    let expected = route.server_id.clone();
    let tls = client_config(
        source.svid(),
        source.bundles(),
        Arc::new(move |id| expected.matches(id)),
        &[],
    )?;
    let connector = TlsConnector::from(Arc::new(tls));
    // The verifier checks the SPIFFE ID, not a DNS name; the name only fills SNI.
    let host = route
        .target
        .rsplit_once(':')
        .map_or(route.target.as_str(), |(host, _)| host)
        .trim_matches(|c| c == '[' || c == ']')
        .to_owned();
    let server_name = ServerName::try_from(host).unwrap_or_else(|_| {
        ServerName::try_from("signet.invalid")
            .unwrap_or(ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()))
    });
    let route = Arc::new(route);
    let slots = Arc::new(tokio::sync::Semaphore::new(bounds.max_connections));
    Ok(signet_unix::spawn_named(
        "proxy-outbound-accept",
        async move {
            let mut errors = signet_unix::AcceptErrors::new("proxy outbound");
            loop {
                let (mut app, _) = errors.accept(|| listener.accept()).await;
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    metrics.connection("outbound", "overloaded");
                    continue;
                };
                let _ = app.set_nodelay(true);
                let connector = connector.clone();
                let server_name = server_name.clone();
                let route = route.clone();
                let metrics = metrics.clone();
                signet_unix::spawn_named("proxy-outbound-connection", async move {
                    let tcp = match crate::connect(route.target.as_str()).await {
                        Ok(tcp) => tcp,
                        Err(error) => {
                            metrics.connection("outbound", "upstream_failed");
                            warn!(target = %route.target, %error, "cannot reach the target");
                            return;
                        }
                    };
                    let _ = tcp.set_nodelay(true);
                    let handshake = tokio::time::timeout(
                        bounds.handshake_timeout,
                        connector.connect(server_name, tcp),
                    )
                    .await;
                    let mut tls = match handshake {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(error)) => {
                            metrics.connection("outbound", "handshake_failed");
                            info!(target = %route.target, expected = %route.server_id, %error, "outbound mTLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            metrics.connection("outbound", "handshake_failed");
                            info!(target = %route.target, "outbound mTLS handshake timed out");
                            return;
                        }
                    };
                    metrics.connection("outbound", "mtls");
                    if let Err(error) = tokio::io::copy_bidirectional(&mut app, &mut tls).await {
                        debug!(%error, "outbound connection ended");
                    }
                    drop(slot);
                });
            }
        },
    ))
}
