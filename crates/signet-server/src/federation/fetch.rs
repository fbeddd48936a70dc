//! Fetching a federated trust domain's bundle from its bundle endpoint (SPIFFE Federation spec
//! §5): one HTTPS GET, the endpoint authenticated by its profile, the answer bounded in size and
//! time and checked before it may replace what we have.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::ServerName;
use signet_core::federation::{EndpointProfile, FederationRelationship};
use signet_spiffe::{Bundle, BundleSet};
use signet_tls::{SharedBundles, SpiffeServerVerifier};
use tokio::net::TcpStream;

/// Longest a fetch may take, connection and answer included.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest bundle accepted (a bundle of dozens of keys is a few tens of KiB).
pub(crate) const MAX_BUNDLE_BYTES: usize = 1024 * 1024;

/// Why a fetch did not produce a usable bundle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No connection or no answer.
    #[error("endpoint unreachable: {0}")]
    Unreachable(String),
    /// The endpoint's certificate was not accepted.
    #[error("endpoint authentication failed: {0}")]
    Authentication(String),
    /// `https_spiffe` without a bundle of the federated trust domain to start from.
    #[error(
        "no bundle of {0} to authenticate its https_spiffe endpoint with: give the relationship a \
         trust domain bundle to start from"
    )]
    NoBootstrapBundle(String),
    /// An answer that is not a usable bundle.
    #[error("bundle invalid: {0}")]
    Invalid(String),
    /// The bundle's sequence number is lower than the one we have.
    #[error("bundle sequence went backwards: have {have}, got {got}")]
    SequenceRegressed {
        /// What we have.
        have: u64,
        /// What the endpoint served.
        got: u64,
    },
}

impl FetchError {
    /// The `Ready` condition reason this failure reports.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "EndpointUnreachable",
            Self::Authentication(_) | Self::NoBootstrapBundle(_) => "AuthenticationFailed",
            Self::Invalid(_) | Self::SequenceRegressed { .. } => "BundleInvalid",
        }
    }
}

/// Fetches `relationship`'s bundle; `current` is the bundle we hold for it (it authenticates an
/// `https_spiffe` endpoint, and the answer may not go back behind its sequence number).
pub(crate) async fn fetch_bundle(
    relationship: &FederationRelationship,
    current: Option<&Bundle>,
    web_roots: Arc<RootCertStore>,
) -> Result<Bundle, FetchError> {
    let tls = client_config(relationship, current, web_roots)?;
    let body = tokio::time::timeout(FETCH_TIMEOUT, get(relationship, tls))
        .await
        .map_err(|_| FetchError::Unreachable(format!("no answer within {FETCH_TIMEOUT:?}")))??;
    let bundle = Bundle::from_spiffe_json(relationship.trust_domain.clone(), &body)
        .map_err(|e| FetchError::Invalid(e.to_string()))?;
    check(relationship, current, &bundle)?;
    Ok(bundle)
}

/// What a served bundle must be to replace ours (`signet_core::federation`).
fn check(
    relationship: &FederationRelationship,
    current: Option<&Bundle>,
    bundle: &Bundle,
) -> Result<(), FetchError> {
    use signet_core::federation::{BundleRefusal, accept_fetched_bundle};
    accept_fetched_bundle(&relationship.trust_domain, current, bundle).map_err(|refusal| {
        match refusal {
            BundleRefusal::SequenceRegressed { have, got } => {
                FetchError::SequenceRegressed { have, got }
            }
            other => FetchError::Invalid(other.to_string()),
        }
    })
}

fn client_config(
    relationship: &FederationRelationship,
    current: Option<&Bundle>,
    web_roots: Arc<RootCertStore>,
) -> Result<rustls::ClientConfig, FetchError> {
    let builder = rustls::ClientConfig::builder();
    let mut config = match &relationship.profile {
        EndpointProfile::HttpsWeb => builder
            .with_root_certificates(web_roots)
            .with_no_client_auth(),
        EndpointProfile::HttpsSpiffe { endpoint_spiffe_id } => {
            let bundle = current.cloned().ok_or_else(|| {
                FetchError::NoBootstrapBundle(relationship.trust_domain.to_string())
            })?;
            let mut set = BundleSet::new();
            set.insert(bundle);
            let verifier = SpiffeServerVerifier::for_id(
                Arc::new(SharedBundles::new(set)),
                endpoint_spiffe_id.clone(),
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

async fn get(
    relationship: &FederationRelationship,
    tls: rustls::ClientConfig,
) -> Result<Vec<u8>, FetchError> {
    let url = &relationship.bundle_endpoint_url;
    let tcp = TcpStream::connect((url.host(), url.port()))
        .await
        .map_err(|e| FetchError::Unreachable(format!("connecting to {url}: {e}")))?;
    // For https_spiffe the name is only SNI; the endpoint is authenticated by its SPIFFE ID.
    let name = ServerName::try_from(url.host().to_owned())
        .map_err(|e| FetchError::Unreachable(format!("host of {url}: {e}")))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .map_err(|e| {
            match e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                Some(tls) => FetchError::Authentication(tls.to_string()),
                None => FetchError::Unreachable(format!("TLS with {url}: {e}")),
            }
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| FetchError::Unreachable(format!("HTTP with {url}: {e}")))?;
    let driver = tokio::spawn(connection);
    let host = match url.port() {
        443 => url.host().to_owned(),
        port => format!("{}:{port}", url.host()),
    };
    let request = http::Request::get(url.path_and_query())
        .header(http::header::HOST, host)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| FetchError::Unreachable(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| FetchError::Unreachable(format!("GET {url}: {e}")))?;
    if response.status() != http::StatusCode::OK {
        driver.abort();
        return Err(FetchError::Unreachable(format!(
            "GET {url}: HTTP {}",
            response.status()
        )));
    }
    let body = Limited::new(response.into_body(), MAX_BUNDLE_BYTES)
        .collect()
        .await
        .map_err(|e| FetchError::Invalid(format!("reading the answer of {url}: {e}")))?
        .to_bytes();
    driver.abort();
    Ok(body.to_vec())
}

#[cfg(test)]
mod tests {
    use signet_core::federation::BundleEndpointUrl;
    use signet_spiffe::TrustDomain;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A hostile `https_web` endpoint answering every request with `answer`; returns its URL and
    /// the roots that trust it.
    async fn endpoint(answer: Vec<u8>) -> (String, Arc<RootCertStore>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let answer = answer.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut request = [0u8; 4096];
                    let _ = tls.read(&mut request).await;
                    let _ = tls.write_all(&answer).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (format!("https://127.0.0.1:{port}/"), Arc::new(roots))
    }

    fn relationship(url: &str) -> FederationRelationship {
        FederationRelationship::new(
            &TrustDomain::new("local.example").unwrap(),
            TrustDomain::new("partner.example").unwrap(),
            BundleEndpointUrl::parse(url).unwrap(),
            EndpointProfile::HttpsWeb,
        )
        .unwrap()
    }

    fn http(status: &str, body: &[u8]) -> Vec<u8> {
        let mut answer = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(body);
        answer
    }

    #[tokio::test]
    async fn hostile_endpoint_answers_are_refused_with_their_reason() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let oversized = vec![b' '; MAX_BUNDLE_BYTES + 1];
        for (answer, reason) in [
            (
                http("500 Internal Server Error", b"{}"),
                "EndpointUnreachable",
            ),
            (
                http("200 OK", b"<html>not a bundle</html>"),
                "BundleInvalid",
            ),
            (http("200 OK", br#"{"keys": []}"#), "BundleInvalid"),
            (http("200 OK", &oversized), "BundleInvalid"),
            (b"garbage, not HTTP".to_vec(), "EndpointUnreachable"),
        ] {
            let (url, roots) = endpoint(answer).await;
            let error = fetch_bundle(&relationship(&url), None, roots)
                .await
                .unwrap_err();
            assert_eq!(error.reason(), reason, "{error}");
        }
        // An endpoint nobody vouches for.
        let (url, _) = endpoint(http("200 OK", b"{}")).await;
        let error = fetch_bundle(&relationship(&url), None, Arc::new(RootCertStore::empty()))
            .await
            .unwrap_err();
        assert_eq!(error.reason(), "AuthenticationFailed", "{error}");
        // https_spiffe without a bundle to start from.
        let spiffe = FederationRelationship {
            profile: EndpointProfile::HttpsSpiffe {
                endpoint_spiffe_id: signet_spiffe::SpiffeId::new("spiffe://partner.example/s")
                    .unwrap(),
            },
            ..relationship(&url)
        };
        let error = fetch_bundle(&spiffe, None, Arc::new(RootCertStore::empty()))
            .await
            .unwrap_err();
        assert!(matches!(error, FetchError::NoBootstrapBundle(_)), "{error}");
    }
}
