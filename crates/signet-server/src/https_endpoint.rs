//! HTTPS endpoints anyone may reach (the bundle endpoint, OIDC discovery): TLS from the server's
//! SVID or from certificate files re-read when they change, a bounded accept loop, and small
//! GET answers computed per request.

use std::convert::Infallible;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Request, Response};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use signet_tls::RotatingSvid;
use signet_unix::{AcceptErrors, ConnectionLimiter, ConnectionLimits};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::error::ServerError;

/// Answers one request.
pub(crate) type Handler =
    Arc<dyn Fn(&Request<hyper::body::Incoming>) -> Response<Full<bytes::Bytes>> + Send + Sync>;

/// Connections at once, in total and per source address.
const LIMITS: ConnectionLimits = ConnectionLimits {
    total: 1024,
    per_peer: 64,
};
/// Longest TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection stays open.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// How often certificate files are checked for a change.
const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// A certificate resolver over `cert_file` and `key_file`, and the task that re-reads them when
/// they change.
pub(crate) fn files_resolver(
    cert_file: &Path,
    key_file: &Path,
) -> Result<(Arc<RotatingSvid>, JoinHandle<()>), ServerError> {
    let files = Arc::new(RotatingSvid::new());
    // The versions loaded, taken now: a change before the task first runs is still seen.
    let loaded = (modified(cert_file), modified(key_file));
    files.set(load_certified_key(cert_file, key_file)?);
    let task = signet_unix::spawn_named(
        "certificate-files-reload",
        reload_on_change(
            files.clone(),
            cert_file.to_owned(),
            key_file.to_owned(),
            loaded,
        ),
    );
    Ok((files, task))
}

/// Serves `handler` over TLS on `listener` (HTTP/1.1) until the task is dropped.
pub(crate) fn serve_tls(
    name: &'static str,
    listener: tokio::net::TcpListener,
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
    handler: Handler,
) -> JoinHandle<()> {
    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    signet_unix::spawn_named(name, accept(name, listener, acceptor, handler))
}

async fn accept(
    name: &'static str,
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handler: Handler,
) {
    let limiter = ConnectionLimiter::<IpAddr>::new(LIMITS);
    let mut errors = AcceptErrors::new(name);
    loop {
        let (tcp, peer) = errors.accept(|| listener.accept()).await;
        let Ok(slot) = limiter.try_acquire(peer.ip()) else {
            debug!(endpoint = name, %peer, "connection refused: connection limit reached");
            continue;
        };
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        signet_unix::spawn_named("https-connection", async move {
            let _slot = slot;
            let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                debug!(endpoint = name, %peer, "TLS handshake failed or timed out");
                return;
            };
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let answer = handler(&request);
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

/// The chain and key of `https_web`.
fn load_certified_key(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<rustls::sign::CertifiedKey>, ServerError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(Iterator::collect)
        .map_err(|e| ServerError::crypto("reading a serving certificate", e))?;
    if chain.is_empty() {
        return Err(ServerError::crypto(
            "reading a serving certificate",
            format!("{} holds no certificate", cert_file.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| ServerError::crypto("reading a serving key", e))?;
    let signing = rustls::crypto::aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| ServerError::crypto("loading a serving key", e))?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| ServerError::crypto("a serving certificate and its key", e))?;
    Ok(Arc::new(certified))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Re-reads the files when either changes (cert-manager renews a Secret in place); a broken pair
/// keeps the previous certificate in service.
async fn reload_on_change(
    target: Arc<RotatingSvid>,
    cert_file: PathBuf,
    key_file: PathBuf,
    loaded: (Option<SystemTime>, Option<SystemTime>),
) {
    let mut seen = loaded;
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
                info!(cert = %cert_file.display(), "serving certificate reloaded");
            }
            // Retried at the next check: the two files are often written one after the other.
            Err(error) => {
                warn!(%error, "bundle endpoint certificate not reloaded; keeping the current one")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        // Written beside and renamed over, as a Secret volume swaps its files.
        std::fs::write(dir.join("tls.key.new"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("tls.crt.new"), cert.pem()).unwrap();
        std::fs::rename(dir.join("tls.key.new"), dir.join("tls.key")).unwrap();
        std::fs::rename(dir.join("tls.crt.new"), dir.join("tls.crt")).unwrap();
        cert.der().to_vec()
    }

    fn serving(resolver: &RotatingSvid) -> Vec<u8> {
        resolver.get().unwrap().cert[0].as_ref().to_vec()
    }

    #[tokio::test(start_paused = true)]
    async fn renewed_certificate_files_are_served_and_a_broken_pair_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_pair(dir.path(), "a.example");
        let (resolver, reload) =
            files_resolver(&dir.path().join("tls.crt"), &dir.path().join("tls.key")).unwrap();
        assert_eq!(serving(&resolver), first);

        // A renewal (a new mtime) is picked up at the next check.
        std::thread::sleep(Duration::from_millis(20));
        let renewed = write_pair(dir.path(), "a.example");
        tokio::time::sleep(RELOAD_EVERY * 2).await;
        assert_eq!(serving(&resolver), renewed);

        // A certificate without its key keeps the renewed pair in service.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(dir.path().join("tls.crt"), "not a certificate").unwrap();
        tokio::time::sleep(RELOAD_EVERY * 2).await;
        assert_eq!(serving(&resolver), renewed);
        reload.abort();
    }
}
