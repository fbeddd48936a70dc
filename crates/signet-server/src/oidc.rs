//! OIDC discovery for JWT-SVIDs: `/.well-known/openid-configuration` and the JWK Set it names,
//! so that relying parties that speak OIDC (cloud IAM, Vault, any JWT library with a JWKS
//! client) verify JWT-SVIDs without a SPIFFE library. Served on its own listener, over TLS from
//! certificate files or, behind an ingress that terminates TLS, as plain HTTP when asked for
//! explicitly.

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

/// The path of the JWK Set below the issuer.
pub const JWKS_PATH: &str = "/keys";
/// The discovery document's path below the issuer.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// How the discovery endpoint is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OidcTransport {
    /// TLS with a certificate chain and key from PEM files, re-read when they change.
    Https {
        /// The chain, leaf first.
        cert_file: PathBuf,
        /// The private key.
        key_file: PathBuf,
    },
    /// Plain HTTP, for a reverse proxy or ingress that terminates TLS in front of it.
    InsecureHttp,
}

/// The discovery endpoint's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// Listen address.
    pub address: SocketAddr,
    /// The issuer URL relying parties are configured with; JWT-SVIDs carry it as `iss`.
    pub issuer: String,
    /// TLS or plain HTTP.
    pub transport: OidcTransport,
    /// `Cache-Control: max-age` of the answers when the bundle carries no refresh hint (it
    /// follows the hint otherwise: relying parties re-read the keys as often as peers re-fetch
    /// the bundle).
    pub max_age: Duration,
}

/// Checks an issuer URL: `https://` (or `http://` for tests and ingress setups), with a host, no
/// query or fragment, and no trailing slash (relying parties compare `iss` byte for byte).
pub fn check_issuer(issuer: &str) -> Result<(), String> {
    let rest = issuer
        .strip_prefix("https://")
        .or_else(|| issuer.strip_prefix("http://"))
        .ok_or_else(|| format!("issuer {issuer:?} must be an https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("issuer {issuer:?} has no host"));
    }
    if issuer.contains(['?', '#']) || issuer.chars().any(char::is_whitespace) {
        return Err(format!(
            "issuer {issuer:?} may not carry a query, a fragment or whitespace"
        ));
    }
    if issuer.ends_with('/') {
        return Err(format!(
            "issuer {issuer:?} ends with '/': relying parties compare iss exactly, drop the slash"
        ));
    }
    Ok(())
}

/// The path part of an issuer URL (`""` for `https://host`).
fn issuer_path(issuer: &str) -> &str {
    let rest = issuer.split_once("://").map_or(issuer, |(_, rest)| rest);
    rest.find('/').map_or("", |at| &rest[at..])
}

/// The discovery document of `issuer`.
pub fn discovery_document(issuer: &str) -> serde_json::Value {
    serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}{JWKS_PATH}"),
        // Required members of OpenID Provider Metadata; JWT-SVIDs are not obtained here, so no
        // authorization endpoint is offered.
        "authorization_endpoint": "",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "ES384", "RS256"],
    })
}

/// Binds and serves the discovery endpoint; returns the bound address and its tasks.
pub(crate) async fn serve(
    config: &OidcConfig,
    authority: Arc<AuthorityService>,
) -> Result<(SocketAddr, Vec<JoinHandle<()>>), ServerError> {
    check_issuer(&config.issuer).map_err(ServerError::InvalidArgument)?;
    let binding = |e| {
        ServerError::io(
            format!("binding the OIDC discovery endpoint on {}", config.address),
            e,
        )
    };
    let listener = tokio::net::TcpListener::bind(config.address)
        .await
        .map_err(binding)?;
    let bound = listener.local_addr().map_err(binding)?;
    let issuer = config.issuer.clone();
    let max_age = config.max_age;
    let answer =
        move |method: &Method, path: &str| answer(method, path, &issuer, &authority, max_age);
    let mut tasks = Vec::new();
    match &config.transport {
        OidcTransport::Https {
            cert_file,
            key_file,
        } => {
            let (files, reload) = https_endpoint::files_resolver(cert_file, key_file)?;
            tasks.push(reload);
            let handler: https_endpoint::Handler =
                Arc::new(move |request| answer(request.method(), request.uri().path()));
            tasks.push(https_endpoint::serve_tls(
                "oidc-discovery",
                listener,
                files,
                handler,
            ));
        }
        OidcTransport::InsecureHttp => {
            let service = tower::service_fn(move |request: Request<hyper::body::Incoming>| {
                let response = answer(request.method(), request.uri().path());
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            tasks.push(signet_unix::spawn_named("oidc-discovery", async move {
                signet_unix::serve_http(
                    listener,
                    service,
                    signet_unix::EndpointBounds::PROBES,
                    "oidc-discovery",
                )
                .await;
            }));
        }
    }
    info!(address = %bound, issuer = %config.issuer, "OIDC discovery endpoint listening");
    Ok((bound, tasks))
}

fn answer(
    method: &Method,
    path: &str,
    issuer: &str,
    authority: &AuthorityService,
    max_age: Duration,
) -> Response<Full<bytes::Bytes>> {
    // The documents live below the issuer's path; an ingress that strips it is served too.
    let below_issuer = path.strip_prefix(issuer_path(issuer)).unwrap_or(path);
    let bundle = authority.bundle();
    let max_age = bundle.refresh_hint().unwrap_or(max_age);
    let body = match below_issuer {
        DISCOVERY_PATH => discovery_document(issuer).to_string(),
        JWKS_PATH => bundle.to_oidc_jwks_json(),
        _ => return status(StatusCode::NOT_FOUND),
    };
    if method != Method::GET && method != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    let body = if method == Method::HEAD {
        bytes::Bytes::new()
    } else {
        bytes::Bytes::from(body)
    };
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    if let Ok(value) =
        header::HeaderValue::from_str(&format!("public, max-age={}", max_age.as_secs()))
    {
        headers.insert(header::CACHE_CONTROL, value);
    }
    response
}

fn status(code: StatusCode) -> Response<Full<bytes::Bytes>> {
    let mut response = Response::new(Full::default());
    *response.status_mut() = code;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_are_exact_urls() {
        assert!(check_issuer("https://oidc.example.org").is_ok());
        assert!(check_issuer("https://oidc.example.org/td").is_ok());
        assert!(check_issuer("http://127.0.0.1:8080").is_ok());
        for bad in [
            "oidc.example.org",
            "https://",
            "https:///x",
            "https://oidc.example.org/",
            "https://oidc.example.org?x=1",
            "https://oidc.example.org#x",
            "ftp://oidc.example.org",
        ] {
            assert!(check_issuer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_discovery_document_names_the_jwks_below_the_issuer() {
        let doc = discovery_document("https://oidc.example.org/td");
        assert_eq!(doc["issuer"], "https://oidc.example.org/td");
        assert_eq!(doc["jwks_uri"], "https://oidc.example.org/td/keys");
        assert_eq!(doc["response_types_supported"][0], "id_token");
        assert_eq!(issuer_path("https://oidc.example.org/td"), "/td");
        assert_eq!(issuer_path("https://oidc.example.org"), "");
    }
}
