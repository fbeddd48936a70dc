//! The plain-HTTP endpoints every daemon serves on TCP (`/livez`, `/readyz`, `/metrics`), served
//! within bounds: a header read timeout (a client that trickles a request cannot hold a
//! connection), a lifetime per connection, and caps in total and per source address. These
//! endpoints answer probes and scrapes; nothing legitimate needs more.

use std::convert::Infallible;
use std::net::IpAddr;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::limits::{AcceptErrors, ConnectionLimiter, ConnectionLimits};

/// Bounds of one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointBounds {
    /// Connections in total and per source address.
    pub connections: ConnectionLimits,
    /// Longest wait for a request's headers.
    pub header_timeout: Duration,
    /// Longest a connection stays open (keep-alive included).
    pub lifetime: Duration,
}

impl EndpointBounds {
    /// Probes and scrapes: 256 connections, 32 per source, 5 s for headers, 60 s per connection.
    pub const PROBES: Self = Self {
        connections: ConnectionLimits {
            total: 256,
            per_peer: 32,
        },
        header_timeout: Duration::from_secs(5),
        lifetime: Duration::from_secs(60),
    };
}

/// Serves `service` (e.g. an `axum::Router`) on `listener` within `bounds` until the task is
/// dropped; `what` names the endpoint in logs.
pub async fn serve_http<S, B>(
    listener: TcpListener,
    service: S,
    bounds: EndpointBounds,
    what: &'static str,
) where
    S: tower_service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limiter = ConnectionLimiter::<IpAddr>::new(bounds.connections);
    let mut errors = AcceptErrors::new(what);
    loop {
        let (tcp, peer) = errors.accept(|| listener.accept()).await;
        let Ok(slot) = limiter.try_acquire(peer.ip()) else {
            tracing::debug!(endpoint = what, %peer, "connection refused: connection limit reached");
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(service.clone());
        crate::spawn_named("http-connection", async move {
            let _slot = slot;
            let mut http = hyper::server::conn::http1::Builder::new();
            // Without a timer hyper skips the header timeout silently.
            http.timer(TokioTimer::new())
                .header_read_timeout(bounds.header_timeout);
            let connection = http.serve_connection(TokioIo::new(tcp), service);
            match tokio::time::timeout(bounds.lifetime, connection).await {
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(error)) => {
                    tracing::debug!(endpoint = what, %peer, %error, "connection ended")
                }
            }
        });
    }
}
