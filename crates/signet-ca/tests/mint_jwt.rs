//! JWT-SVID minting, validated by our JWT-SVID validator.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Harness, start};
use signet_ca::{Error, JwtSvidRequest, KeyAlgorithm};
use signet_spiffe::{BundleSet, JwtSvid, JwtValidation, SpiffeId};

const ID: &str = "spiffe://example.org/ns/prod/sa/api";

#[test]
fn minted_jwt_has_exactly_the_designed_header_and_claims() {
    for algorithm in [
        KeyAlgorithm::EcP256,
        KeyAlgorithm::EcP384,
        KeyAlgorithm::Rsa2048,
    ] {
        let h = Harness::new();
        let mut config = h.config();
        config.jwt_key_algorithm = algorithm;
        config.jwt_issuer = Some("https://oidc.example.org".into());
        let ca = h.open(config);
        let id = SpiffeId::new(ID).unwrap();
        let audience = vec!["db".to_owned()];
        let token = ca
            .mint_jwt_svid(&JwtSvidRequest {
                spiffe_id: &id,
                audience: &audience,
                ttl: Duration::from_secs(300),
                issuer: None,
            })
            .unwrap();
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        let members: Vec<_> = header.as_object().unwrap().keys().cloned().collect();
        assert_eq!(members, ["alg", "kid", "typ"]);
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["alg"], algorithm.jwt_algorithm().name());
        let mut bundles = BundleSet::new();
        bundles.insert(ca.bundle().unwrap());
        let svid = JwtSvid::validate(&token, &bundles, "db", JwtValidation::at(start())).unwrap();
        assert_eq!(svid.spiffe_id(), &id);
        assert_eq!(svid.expiry(), start() + Duration::from_secs(300));
        assert_eq!(svid.claims()["iss"], "https://oidc.example.org");
        assert_eq!(
            svid.claims()["iat"],
            start()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        );
        assert!(
            JwtSvid::validate(
                &token,
                &bundles,
                "db",
                JwtValidation::at(start() + Duration::from_secs(400))
            )
            .is_err()
        );
    }
}

#[test]
fn jwt_requests_are_checked() {
    let h = Harness::new();
    let ca = h.open(h.config());
    let id = SpiffeId::new(ID).unwrap();
    let none: Vec<String> = Vec::new();
    let empty = vec![String::new()];
    for aud in [&none, &empty] {
        let req = JwtSvidRequest {
            spiffe_id: &id,
            audience: aud,
            ttl: Duration::from_secs(60),
            issuer: None,
        };
        assert!(matches!(
            ca.mint_jwt_svid(&req),
            Err(Error::InvalidRequest(_))
        ));
    }
    let foreign = SpiffeId::new("spiffe://other.org/x").unwrap();
    let aud = vec!["a".to_owned()];
    let r = JwtSvidRequest {
        spiffe_id: &foreign,
        audience: &aud,
        ttl: Duration::from_secs(60),
        issuer: None,
    };
    assert!(matches!(
        ca.mint_jwt_svid(&r),
        Err(Error::InvalidRequest(_))
    ));
}
