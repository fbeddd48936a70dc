//! The inbound listener: mTLS (and, in PERMISSIVE mode, plaintext) from peers, authorization,
//! then the local application.

use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use signet_spiffe::SpiffeId;
use signet_tls::authz::Access;
use signet_tls::config::{ClientAuth, any_authenticated, server_config};
use signet_tls::log_budget::LogBudget;
use signet_tls::source::WorkloadSource;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::forward::Forwarder;
use crate::{Inbound, Mode, Protocol, ProxyBounds, ProxyError, ProxyMetrics};

/// Lines about peers (refused, unauthenticated, failed handshakes) per second; the counters
/// still count every connection.
static PEER_LINES: LogBudget = LogBudget::new(50);

/// The first byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

struct Context {
    config: Inbound,
    bounds: ProxyBounds,
    acceptor: TlsAcceptor,
    source: Arc<WorkloadSource>,
    metrics: ProxyMetrics,
    forwarder: Forwarder,
}

pub(crate) fn spawn(
    listener: TcpListener,
    config: Inbound,
    bounds: ProxyBounds,
    source: Arc<WorkloadSource>,
    metrics: ProxyMetrics,
) -> Result<tokio::task::JoinHandle<()>, ProxyError> {
    let client_auth = match config.mode {
        Mode::Strict => ClientAuth::Required,
        Mode::Permissive => ClientAuth::Optional,
    };
    let alpn: &[&[u8]] = match config.protocol {
        Protocol::Http => &[b"h2", b"http/1.1"],
        Protocol::Tcp => &[],
    };
    let tls = server_config(
        source.svid(),
        source.bundles(),
        any_authenticated(),
        client_auth,
        alpn,
    )?;
    let context = Arc::new(Context {
        forwarder: Forwarder::new(config.forward),
        config,
        bounds,
        acceptor: TlsAcceptor::from(Arc::new(tls)),
        source,
        metrics,
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(bounds.max_connections));
    // Connections before their handshake ends are counted apart (and per source), so a
    // slowloris flood fills its own share, not the slots of established connections.
    let handshaking = signet_unix::ConnectionLimiter::<std::net::IpAddr>::new(bounds.handshaking);
    Ok(signet_unix::spawn_named(
        "proxy-inbound-accept",
        async move {
            let mut errors = signet_unix::AcceptErrors::new("proxy inbound");
            loop {
                let (tcp, peer) = errors.accept(|| listener.accept()).await;
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    context.metrics.connection("inbound", "overloaded");
                    continue;
                };
                let Ok(handshake_slot) = handshaking.try_acquire(peer.ip()) else {
                    context
                        .metrics
                        .connection("inbound", "handshakes_overloaded");
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let context = context.clone();
                signet_unix::spawn_named("proxy-inbound-connection", async move {
                    context.handle(tcp, peer, handshake_slot).await;
                    drop(slot);
                });
            }
        },
    ))
}

impl Context {
    async fn handle(
        self: Arc<Self>,
        tcp: TcpStream,
        address: std::net::SocketAddr,
        handshake_slot: signet_unix::ConnectionSlot<std::net::IpAddr>,
    ) {
        // One deadline for the first byte and the TLS handshake together.
        let deadline = tokio::time::Instant::now() + self.bounds.handshake_timeout;
        let mut first = [0u8; 1];
        let peeked = tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await;
        if !matches!(peeked, Ok(Ok(1))) {
            return;
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            if self.config.mode == Mode::Strict {
                self.metrics.connection("inbound", "refused_plaintext");
                if let Some(suppressed) = PEER_LINES.take() {
                    info!(target: "signet::audit", %address, suppressed_since_last = suppressed, "plaintext connection refused (STRICT mode)");
                }
                return;
            }
            self.metrics.connection("inbound", "plaintext");
            drop(handshake_slot);
            if let Some(suppressed) = PEER_LINES.take() {
                info!(target: "signet::audit", %address, suppressed_since_last = suppressed, "plaintext connection accepted (PERMISSIVE mode): peer has no SVID");
            }
            self.serve(tcp, None).await;
            return;
        }
        let tls = match tokio::time::timeout_at(deadline, self.acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                drop(handshake_slot);
                tls
            }
            Ok(Err(error)) => {
                self.metrics.connection("inbound", "handshake_failed");
                if let Some(suppressed) = PEER_LINES.take() {
                    info!(%address, %error, suppressed_since_last = suppressed, "inbound TLS handshake failed");
                }
                return;
            }
            Err(_) => {
                self.metrics.connection("inbound", "handshake_failed");
                debug!(%address, "inbound TLS handshake timed out");
                return;
            }
        };
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(signet_tls::peer_id);
        if peer.is_some() {
            self.metrics.connection("inbound", "mtls");
        } else {
            self.metrics.connection("inbound", "tls_unauthenticated");
            if let Some(suppressed) = PEER_LINES.take() {
                info!(target: "signet::audit", %address, suppressed_since_last = suppressed, "TLS connection without a client SVID accepted (PERMISSIVE mode)");
            }
        }
        self.serve(tls, peer).await;
    }

    async fn serve<S>(&self, stream: S, peer: Option<SpiffeId>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        match self.config.protocol {
            Protocol::Tcp => self.serve_tcp(stream, peer).await,
            Protocol::Http => self.serve_http(stream, peer).await,
        }
    }

    async fn serve_tcp<S>(&self, mut stream: S, peer: Option<SpiffeId>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let authorizer = self.source.authorizer();
        let allowed = authorizer.allows(&Access {
            peer: peer.as_ref(),
            port: self.config.policy_port,
            http: None,
        });
        if !allowed {
            self.metrics.connection("inbound", "denied");
            return;
        }
        let mut upstream = match crate::connect(self.config.forward).await {
            Ok(upstream) => upstream,
            Err(error) => {
                self.metrics.connection("inbound", "upstream_failed");
                warn!(forward = %self.config.forward, %error, "cannot reach the local application");
                return;
            }
        };
        let _ = upstream.set_nodelay(true);
        if let Err(error) = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await {
            debug!(%error, "inbound TCP connection ended");
        }
    }

    async fn serve_http<S>(&self, stream: S, peer: Option<SpiffeId>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service =
            self.forwarder
                .service(self.source.authorizer(), self.config.policy_port, peer);
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // Without a timer hyper silently skips its header timeout: a peer could hold a
        // connection forever by sending headers slowly.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.bounds.header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(std::time::Duration::from_secs(30)))
            .keep_alive_timeout(std::time::Duration::from_secs(20));
        if let Err(error) = builder
            .serve_connection(
                TokioIo::new(stream),
                hyper_util::service::TowerToHyperService::new(service),
            )
            .await
        {
            debug!(%error, "inbound HTTP connection ended");
        }
    }
}
