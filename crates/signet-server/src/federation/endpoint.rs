//! This trust domain's bundle endpoint (SPIFFE Federation spec §4): every GET answers the current
//! SPIFFE bundle (X.509 and JWT authorities, `spiffe_sequence`, `spiffe_refresh_hint`), over TLS
//! with the server's SVID (`https_spiffe`) or a Web PKI certificate from files that are re-read
//! when they change (`https_web`). Anyone may connect, so the listener is bounded like the others.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use signet_tls::RotatingSvid;
use signet_unix::{AcceptErrors, ConnectionLimiter, ConnectionLimits};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::authority::AuthorityService;
use crate::error::ServerError;

/// How the endpoint authenticates itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointTls {
    /// `https_spiffe`: the server's own SVID (`spiffe://<td>/signet/server`).
    Spiffe,
    /// `https_web`: a certificate chain and key in PEM files (e.g. a mounted cert-manager
    /// Secret), re-read when either file changes.
    Web {
        /// The chain, leaf first.
        cert_file: PathBuf,
        /// The private key (PKCS#8, SEC1 or PKCS#1).
        key_file: PathBuf,
    },
}

/// Where and how the bundle endpoint is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleEndpointConfig {
    /// Listen address.
    pub address: SocketAddr,
    /// The endpoint's TLS profile.
    pub tls: EndpointTls,
    /// `spiffe_refresh_hint` of the served bundle: how often peers should fetch it.
    pub refresh_hint: Duration,
}

/// Connections at once, in total and per source address.
const LIMITS: ConnectionLimits = ConnectionLimits {
    total: 1024,
    per_peer: 64,
};
/// Longest TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection stays open.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// How often the `https_web` files are checked for a change.
const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// Binds the endpoint and serves it; returns the bound address and its tasks.
pub(crate) async fn serve(
    config: &BundleEndpointConfig,
    authority: Arc<AuthorityService>,
) -> Result<(SocketAddr, Vec<JoinHandle<()>>), ServerError> {
    let mut tasks = Vec::new();
    let resolver: Arc<dyn rustls::server::ResolvesServerCert> = match &config.tls {
        EndpointTls::Spiffe => authority.server_svid(),
        EndpointTls::Web {
            cert_file,
            key_file,
        } => {
            let files = Arc::new(RotatingSvid::new());
            files.set(load_certified_key(cert_file, key_file)?);
            tasks.push(signet_unix::spawn_named(
                "bundle-endpoint-reload",
                reload_on_change(files.clone(), cert_file.clone(), key_file.clone()),
            ));
            files
        }
    };
    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let binding = |e| {
        ServerError::io(
            format!("binding the bundle endpoint on {}", config.address),
            e,
        )
    };
    let listener = tokio::net::TcpListener::bind(config.address)
        .await
        .map_err(binding)?;
    let bound = listener.local_addr().map_err(binding)?;
    let hint = config.refresh_hint;
    tasks.push(signet_unix::spawn_named(
        "bundle-endpoint",
        accept(listener, acceptor, authority, hint),
    ));
    info!(address = %bound, profile = match config.tls { EndpointTls::Spiffe => "https_spiffe", EndpointTls::Web { .. } => "https_web" }, "bundle endpoint listening");
    Ok((bound, tasks))
}

async fn accept(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    authority: Arc<AuthorityService>,
    hint: Duration,
) {
    let limiter = ConnectionLimiter::<IpAddr>::new(LIMITS);
    let mut errors = AcceptErrors::new("bundle endpoint");
    loop {
        let (tcp, peer) = errors.accept(|| listener.accept()).await;
        let Ok(slot) = limiter.try_acquire(peer.ip()) else {
            debug!(%peer, "bundle endpoint connection refused: connection limit reached");
            continue;
        };
        let acceptor = acceptor.clone();
        let authority = authority.clone();
        signet_unix::spawn_named("bundle-endpoint-connection", async move {
            let _slot = slot;
            let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                debug!(%peer, "bundle endpoint TLS handshake failed or timed out");
                return;
            };
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let answer = answer(&request, &authority, hint);
                    async move { Ok::<_, Infallible>(answer) }
                });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT);
            let connection = http.serve_connection(TokioIo::new(tls), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
    }
}

fn answer<B>(
    request: &Request<B>,
    authority: &AuthorityService,
    hint: Duration,
) -> Response<Full<bytes::Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = Response::new(Full::default());
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return response;
    }
    let mut bundle = (*authority.bundle()).clone();
    bundle.set_refresh_hint(hint);
    let body = if request.method() == Method::HEAD {
        bytes::Bytes::new()
    } else {
        bytes::Bytes::from(bundle.to_spiffe_json())
    };
    let mut response = Response::new(Full::new(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// The chain and key of `https_web`.
fn load_certified_key(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<rustls::sign::CertifiedKey>, ServerError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(Iterator::collect)
        .map_err(|e| ServerError::crypto("reading the bundle endpoint certificate", e))?;
    if chain.is_empty() {
        return Err(ServerError::crypto(
            "reading the bundle endpoint certificate",
            format!("{} holds no certificate", cert_file.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| ServerError::crypto("reading the bundle endpoint key", e))?;
    let signing = rustls::crypto::aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| ServerError::crypto("loading the bundle endpoint key", e))?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| ServerError::crypto("the bundle endpoint certificate and key", e))?;
    Ok(Arc::new(certified))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Re-reads the files when either changes (cert-manager renews a Secret in place); a broken pair
/// keeps the previous certificate in service.
async fn reload_on_change(target: Arc<RotatingSvid>, cert_file: PathBuf, key_file: PathBuf) {
    let mut seen = (modified(&cert_file), modified(&key_file));
    loop {
        tokio::time::sleep(RELOAD_EVERY).await;
        let now = (modified(&cert_file), modified(&key_file));
        if now == seen {
            continue;
        }
        match load_certified_key(&cert_file, &key_file) {
            Ok(key) => {
                target.set(key);
                seen = now;
                info!(cert = %cert_file.display(), "bundle endpoint certificate reloaded");
            }
            // Retried at the next check: the two files are often written one after the other.
            Err(error) => {
                warn!(%error, "bundle endpoint certificate not reloaded; keeping the current one")
            }
        }
    }
}
