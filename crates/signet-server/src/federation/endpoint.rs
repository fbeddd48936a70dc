//! This trust domain's bundle endpoint (SPIFFE Federation spec §4): every GET answers the current
//! SPIFFE bundle (X.509 and JWT authorities, `spiffe_sequence`, `spiffe_refresh_hint`), over TLS
//! with the server's SVID (`https_spiffe`) or a Web PKI certificate from files that are re-read
//! when they change (`https_web`). Anyone may connect, so the listener is bounded like the others.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use tokio::task::JoinHandle;
use tracing::info;

use crate::authority::AuthorityService;
use crate::error::ServerError;
use crate::https_endpoint;

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
            let (files, reload) = https_endpoint::files_resolver(cert_file, key_file)?;
            tasks.push(reload);
            files
        }
    };
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
    let handler: https_endpoint::Handler =
        Arc::new(move |request| answer(request, &authority, hint));
    tasks.push(https_endpoint::serve_tls(
        "bundle-endpoint",
        listener,
        resolver,
        handler,
    ));
    info!(address = %bound, profile = match config.tls { EndpointTls::Spiffe => "https_spiffe", EndpointTls::Web { .. } => "https_web" }, "bundle endpoint listening");
    Ok((bound, tasks))
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
