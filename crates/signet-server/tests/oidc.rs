//! OIDC discovery as a relying party uses it: the discovery document and JWK Set fetched over
//! HTTP from a server started in process, and a JWT-SVID it minted verified by a third-party JWT
//! library (`jsonwebtoken`) with nothing but what discovery published.

use std::time::Duration;

use jsonwebtoken::{DecodingKey, Validation, decode, decode_header, jwk::JwkSet};
use signet_server::ServerConfig;
use signet_server::oidc::{OidcConfig, OidcTransport};
use signet_spiffe::{SpiffeId, TrustDomain};
use signet_test_support::apps::http_request;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_library_verifies_jwt_svids_through_discovery() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let port = signet_test_support::free_port();
    let issuer = format!("http://127.0.0.1:{port}/example");
    let mut config = ServerConfig::new(
        TrustDomain::new("example.org").unwrap(),
        dir.path().join("s"),
    );
    config.bind_address = "127.0.0.1:0".parse().unwrap();
    config.health_address = None;
    config.jwt_issuer = Some(issuer.clone());
    config.oidc = Some(OidcConfig {
        address: format!("127.0.0.1:{port}").parse().unwrap(),
        issuer: issuer.clone(),
        transport: OidcTransport::InsecureHttp,
        max_age: Duration::from_secs(120),
    });
    let server = signet_server::start(config).await.unwrap();

    let get = |path: String| async move {
        tokio::task::spawn_blocking(move || http_request(port, "GET", &path))
            .await
            .unwrap()
    };
    let (code, body) = get("/example/.well-known/openid-configuration".into()).await;
    assert_eq!(code, 200, "{body}");
    let discovery: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(discovery["issuer"], issuer.as_str());
    let jwks_uri = discovery["jwks_uri"].as_str().unwrap().to_owned();
    let jwks_path = jwks_uri
        .strip_prefix(&format!("http://127.0.0.1:{port}"))
        .unwrap()
        .to_owned();
    let (code, body) = get(jwks_path).await;
    assert_eq!(code, 200);
    let jwks: JwkSet = serde_json::from_str(&body).unwrap();
    assert!(!jwks.keys.is_empty());
    assert!(
        !body.contains("x509-svid") && !body.contains("jwt-svid"),
        "{body}"
    );
    assert_eq!(get("/example/other".into()).await.0, 404);
    let post = tokio::task::spawn_blocking(move || http_request(port, "POST", "/example/keys"))
        .await
        .unwrap();
    assert_eq!(post.0, 405, "discovery is read-only");
    // Cached as long as peers cache the bundle.
    let raw = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            stream,
            "GET /example/keys HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    })
    .await
    .unwrap();
    let hint = server.authority.bundle().refresh_hint().unwrap().as_secs();
    assert!(
        raw.to_ascii_lowercase()
            .contains(&format!("cache-control: public, max-age={hint}")),
        "{raw}"
    );

    let subject = SpiffeId::new("spiffe://example.org/api").unwrap();
    let token = server
        .authority
        .mint_jwt(&signet_ca::JwtSvidRequest {
            spiffe_id: &subject,
            audience: &["sts.example.com".to_owned()],
            ttl: Duration::from_secs(300),
            issuer: None,
        })
        .unwrap();
    let header = decode_header(&token).unwrap();
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&["sts.example.com"]);
    validation.set_issuer(&[issuer.as_str()]);
    validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
    let verified =
        decode::<serde_json::Value>(&token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .unwrap();
    assert_eq!(verified.claims["sub"], "spiffe://example.org/api");
    assert_eq!(verified.claims["iss"], issuer.as_str());

    // Another audience, or a token of another key, is refused by the same relying party.
    let mut other_audience = validation.clone();
    other_audience.set_audience(&["vault"]);
    assert!(
        decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_jwk(jwk).unwrap(),
            &other_audience
        )
        .is_err()
    );
    server.shutdown();
}
