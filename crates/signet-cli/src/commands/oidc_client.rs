//! A relying party's view of OIDC discovery: the discovery document and JWK Set of an issuer
//! fetched over HTTPS (system roots; `SSL_CERT_FILE` honoured) or, for an `http://` issuer, plain
//! HTTP; used by `signet jwt validate --oidc-issuer`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use signet_spiffe::{Bundle, BundleSet, JwtSvid, JwtValidation};

/// Longest answer read from an issuer.
const MAX_DOCUMENT: usize = 1024 * 1024;
/// Longest a fetch may take.
const TIMEOUT: Duration = Duration::from_secs(10);

struct Url {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> anyhow::Result<Url> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        bail!("{url:?} is not an http(s) URL");
    };
    let (authority, path) = rest
        .find('/')
        .map_or((rest, "/"), |at| (&rest[..at], &rest[at..]));
    anyhow::ensure!(
        !authority.is_empty() && !authority.contains('@'),
        "{url:?} has no usable host"
    );
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') || host.ends_with(']') => (
            host,
            port.parse().with_context(|| format!("port of {url:?}"))?,
        ),
        _ => (authority, if tls { 443 } else { 80 }),
    };
    Ok(Url {
        tls,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
        path: path.to_owned(),
    })
}

/// `GET url`, the body of a 200 answer.
async fn get(url: &str) -> anyhow::Result<Vec<u8>> {
    let parsed = parse_url(url)?;
    let tcp = tokio::net::TcpStream::connect((parsed.host.as_str(), parsed.port))
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let host_header = match (parsed.tls, parsed.port) {
        (true, 443) | (false, 80) => parsed.host.clone(),
        (_, port) => format!("{}:{port}", parsed.host),
    };
    let request = http::Request::get(parsed.path.as_str())
        .header(http::header::HOST, host_header)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<bytes::Bytes>::new())?;
    let response = if parsed.tls {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(parsed.host.clone())
            .with_context(|| format!("host of {url}"))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS with {url}"))?;
        send(TokioIo::new(tls), request).await?
    } else {
        send(TokioIo::new(tcp), request).await?
    };
    anyhow::ensure!(
        response.status() == http::StatusCode::OK,
        "GET {url}: HTTP {}",
        response.status()
    );
    let body = Limited::new(response.into_body(), MAX_DOCUMENT)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading {url}: {e}"))?
        .to_bytes();
    Ok(body.to_vec())
}

async fn send<T>(
    io: T,
    request: http::Request<Empty<bytes::Bytes>>,
) -> anyhow::Result<http::Response<hyper::body::Incoming>>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    Ok(sender.send_request(request).await?)
}

/// Validates `token` for `audience` with the keys `issuer` publishes through OIDC discovery; its
/// `iss` claim must be `issuer`.
pub async fn validate(token: &str, audience: &str, issuer: &str) -> anyhow::Result<JwtSvid> {
    signet_server::oidc::check_issuer(issuer).map_err(|e| anyhow::anyhow!("--oidc-issuer: {e}"))?;
    let fetch = async {
        let discovery_url = format!("{issuer}{}", signet_server::oidc::DISCOVERY_PATH);
        let discovery: serde_json::Value = serde_json::from_slice(&get(&discovery_url).await?)
            .with_context(|| format!("{discovery_url} is not a JSON document"))?;
        anyhow::ensure!(
            discovery["issuer"] == issuer,
            "{discovery_url} announces issuer {}, not {issuer}",
            discovery["issuer"]
        );
        let jwks_uri = discovery["jwks_uri"]
            .as_str()
            .with_context(|| format!("{discovery_url} names no jwks_uri"))?
            .to_owned();
        get(&jwks_uri).await
    };
    let jwks = tokio::time::timeout(TIMEOUT, fetch)
        .await
        .map_err(|_| anyhow::anyhow!("{issuer} did not answer within {TIMEOUT:?}"))??;
    // The issuer's keys vouch for the token's trust domain.
    let claimed =
        JwtSvid::parse_insecure(token).map_err(|e| anyhow::anyhow!("invalid JWT-SVID: {e}"))?;
    let trust_domain = claimed.spiffe_id().trust_domain();
    let bundle = Bundle::from_oidc_jwks(trust_domain, &jwks)
        .map_err(|e| anyhow::anyhow!("the JWK Set of {issuer}: {e}"))?;
    let mut bundles = BundleSet::new();
    bundles.insert(bundle);
    let svid = JwtSvid::validate(
        token,
        &bundles,
        audience,
        JwtValidation::at(std::time::SystemTime::now()),
    )
    .map_err(|e| anyhow::anyhow!("invalid JWT-SVID: {e}"))?;
    anyhow::ensure!(
        svid.claims().get("iss").and_then(serde_json::Value::as_str) == Some(issuer),
        "invalid JWT-SVID: its iss is not {issuer}"
    );
    Ok(svid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_and_path() {
        let url = parse_url("https://oidc.example.org/td/keys").unwrap();
        assert_eq!(
            (url.tls, url.host.as_str(), url.port, url.path.as_str()),
            (true, "oidc.example.org", 443, "/td/keys")
        );
        let url = parse_url("http://127.0.0.1:8080").unwrap();
        assert_eq!((url.tls, url.port, url.path.as_str()), (false, 8080, "/"));
        let url = parse_url("https://[::1]:9443/x").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 9443));
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("https://user@x/").is_err());
        assert!(parse_url("https://x:port/").is_err());
    }
}
