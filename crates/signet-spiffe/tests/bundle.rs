//! SPIFFE bundle documents, bundle maps, PEM and DER forms.
#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use signet_spiffe::{Bundle, BundleError, BundleSet, JwtPublicKey, TrustDomain};
use signet_test_support::TestCa;
use signet_test_support::rcgen::{KeyPair, PublicKeyData};

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn parse(doc: serde_json::Value) -> Result<Bundle, BundleError> {
    Bundle::from_spiffe_json(td(), doc.to_string().as_bytes())
}

fn sample() -> Bundle {
    let ca = TestCa::new("example.org");
    let mut bundle = Bundle::new(td());
    bundle.add_x509_authority(&ca.cert_der).unwrap();
    let key = KeyPair::generate().unwrap();
    bundle
        .add_jwt_authority(
            "k1",
            JwtPublicKey::from_spki_der(&key.subject_public_key_info()).unwrap(),
        )
        .unwrap();
    bundle.set_sequence(7);
    bundle.set_refresh_hint(Duration::from_secs(300));
    bundle
}

#[test]
fn spiffe_json_round_trip() {
    let bundle = sample();
    let json = bundle.to_spiffe_json();
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["spiffe_sequence"], 7);
    assert_eq!(doc["spiffe_refresh_hint"], 300);
    let x509 = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["use"] == "x509-svid")
        .unwrap();
    assert!(
        x509.get("kid").is_none(),
        "x509-svid keys must not carry kid"
    );
    assert_eq!(x509["x5c"].as_array().unwrap().len(), 1);
    let jwt = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["use"] == "jwt-svid")
        .unwrap();
    assert_eq!(jwt["kid"], "k1");
    assert_eq!(jwt["kty"], "EC");
    let reparsed = Bundle::from_spiffe_json(td(), json.as_bytes()).unwrap();
    assert_eq!(reparsed, bundle);
}

#[test]
fn jwks_form_has_only_jwt_keys_and_no_spiffe_members() {
    let doc: serde_json::Value = serde_json::from_str(&sample().to_jwks_json()).unwrap();
    assert!(doc.get("spiffe_sequence").is_none());
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], "k1");
}

#[test]
fn unknown_kinds_of_keys_are_ignored() {
    let ca = TestCa::new("example.org");
    let cert = STANDARD.encode(&ca.cert_der);
    let bundle = parse(json!({"keys": [
        {"kty": "OKP", "use": "jwt-svid", "kid": "ed", "crv": "Ed25519", "x": "AA"},
        {"kty": "EC", "use": "wit-svid", "kid": "w"},
        {"kty": "EC", "kid": "no-use"},
        {"kty": "EC", "use": "x509-svid"},
        {"kty": "EC", "use": "x509-svid", "x5c": []},
        {"kty": "EC", "use": "x509-svid", "x5c": [cert]},
    ], "extra_member": true}))
    .unwrap();
    assert_eq!(bundle.x509_authorities().len(), 1);
    assert!(bundle.jwt_authorities().is_empty());
}

#[test]
fn malformed_keys_are_rejected() {
    let ca = TestCa::new("example.org");
    let cert = STANDARD.encode(&ca.cert_der);
    assert_eq!(parse(json!({})).unwrap_err(), BundleError::MissingKeys);
    assert_eq!(
        parse(json!({"keys": [{"use": "x509-svid", "x5c": [cert]}]})).unwrap_err(),
        BundleError::MissingKeyType { index: 0 }
    );
    assert_eq!(
        parse(json!({"keys": [{"kty": "EC", "use": "x509-svid", "x5c": [cert, cert]}]}))
            .unwrap_err(),
        BundleError::X5cCount { index: 0, count: 2 }
    );
    assert_eq!(
        parse(json!({"keys": [{"kty": "EC", "use": "x509-svid", "x5c": ["bm90IGEgY2VydA=="]}]}))
            .unwrap_err(),
        BundleError::BadCertificate { index: 0 }
    );
    let jwk = JwtPublicKey::from_spki_der(&KeyPair::generate().unwrap().subject_public_key_info())
        .unwrap();
    let mut b = Bundle::new(td());
    b.add_jwt_authority("k", jwk).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&b.to_spiffe_json()).unwrap();
    doc["keys"][0].as_object_mut().unwrap().remove("kid");
    assert_eq!(
        parse(doc.clone()).unwrap_err(),
        BundleError::MissingKeyId { index: 0 }
    );
    doc["keys"][0]["kid"] = json!("k");
    doc["keys"][0]["x"] = json!("AAAA");
    assert!(matches!(
        parse(doc.clone()),
        Err(BundleError::BadJwk { index: 0, .. })
    ));
    doc["keys"][0]["crv"] = json!("P-192");
    assert!(matches!(
        parse(doc),
        Err(BundleError::BadJwk { index: 0, .. })
    ));
    assert!(matches!(
        parse(json!({"keys": "nope"})),
        Err(BundleError::Json(_))
    ));
    assert!(matches!(
        Bundle::from_spiffe_json(td(), b"{"),
        Err(BundleError::Json(_))
    ));
    assert!(matches!(
        parse(json!({"keys": [], "spiffe_sequence": -1})),
        Err(BundleError::Json(_))
    ));
}

#[test]
fn duplicate_kids_are_rejected() {
    let jwk = JwtPublicKey::from_spki_der(&KeyPair::generate().unwrap().subject_public_key_info())
        .unwrap();
    let mut b = Bundle::new(td());
    b.add_jwt_authority("k", jwk.clone()).unwrap();
    assert_eq!(
        b.add_jwt_authority("k", jwk).unwrap_err(),
        BundleError::DuplicateKeyId("k".into())
    );
}

#[test]
fn empty_keys_means_everything_revoked() {
    let bundle = parse(json!({"keys": [], "spiffe_sequence": 3})).unwrap();
    assert!(bundle.is_empty());
    assert_eq!(bundle.sequence(), Some(3));
}

#[test]
fn bundle_map_rejects_duplicate_trust_domains_and_never_merges() {
    let a = sample();
    let other_ca = TestCa::new("other.org");
    let mut b = Bundle::new(TrustDomain::new("other.org").unwrap());
    b.add_x509_authority(&other_ca.cert_der).unwrap();
    let mut set = BundleSet::new();
    set.insert(a.clone());
    set.insert(b.clone());
    let json = set.to_bundle_map_json();
    let parsed = BundleSet::from_bundle_map_json(json.as_bytes()).unwrap();
    assert_eq!(parsed.len(), 2);
    assert_eq!(
        parsed.get(&td()).unwrap().x509_authorities(),
        a.x509_authorities()
    );
    assert_eq!(
        parsed.get(&td()).unwrap().refresh_hint(),
        None,
        "per-bundle hints are omitted"
    );
    let dup = r#"{"trust_domains": {"example.org": {"keys": []}, "example.org": {"keys": []}}}"#;
    assert_eq!(
        BundleSet::from_bundle_map_json(dup.as_bytes()).unwrap_err(),
        BundleError::DuplicateTrustDomain("example.org".into())
    );
    // Also when one key is spelled as an ID.
    let dup =
        r#"{"trust_domains": {"example.org": {"keys": []}, "spiffe://example.org": {"keys": []}}}"#;
    assert!(matches!(
        BundleSet::from_bundle_map_json(dup.as_bytes()),
        Err(BundleError::DuplicateTrustDomain(_))
    ));
    assert!(matches!(
        BundleSet::from_bundle_map_json(br#"{"trust_domains": {"BAD": {"keys": []}}}"#),
        Err(BundleError::BadTrustDomain { .. })
    ));
    assert!(matches!(
        BundleSet::from_bundle_map_json(b"{}"),
        Err(BundleError::Json(_))
    ));
    // Inserting a bundle of a trust domain replaces it; it is never merged with the old one.
    let mut replaced = set.clone();
    replaced.insert(Bundle::new(td()));
    assert!(replaced.get(&td()).unwrap().is_empty());
}

#[test]
fn pem_and_der_forms_round_trip() {
    let ca1 = TestCa::new("example.org");
    let ca2 = TestCa::new("example.org");
    let pem_text = format!("{}{}", ca1.cert_pem(), ca2.cert_pem());
    let bundle = Bundle::from_pem(td(), pem_text.as_bytes()).unwrap();
    assert_eq!(bundle.x509_authorities().len(), 2);
    assert_eq!(
        Bundle::from_pem(td(), bundle.to_pem().as_bytes()).unwrap(),
        bundle
    );
    let der = bundle.to_der_concat();
    assert_eq!(Bundle::from_der_concat(td(), &der).unwrap(), bundle);
    assert!(matches!(
        Bundle::from_pem(td(), ca1.key_pem().as_bytes()),
        Err(BundleError::Pem(_))
    ));
    assert!(matches!(
        Bundle::from_pem(td(), b"nothing here"),
        Err(BundleError::Pem(_))
    ));
    let mut bad = der.clone();
    bad.push(0);
    assert!(matches!(
        Bundle::from_der_concat(td(), &bad),
        Err(BundleError::BadCertificate { .. })
    ));
}

#[test]
fn oidc_jwks_carry_the_jwt_keys_for_signing_and_parse_back() {
    let bundle = sample();
    let json = bundle.to_oidc_jwks_json();
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), bundle.jwt_authorities().len());
    assert!(
        keys.iter()
            .all(|k| k["use"] == "sig" && k["alg"].is_string() && k["x5c"].is_null())
    );
    let back = Bundle::from_oidc_jwks(td(), json.as_bytes()).unwrap();
    assert_eq!(back.jwt_authorities(), bundle.jwt_authorities());
    assert!(back.x509_authorities().is_empty());
}

#[test]
fn oidc_jwks_skip_other_uses_and_refuse_keys_without_an_id() {
    let mut doc: serde_json::Value = serde_json::from_str(&sample().to_oidc_jwks_json()).unwrap();
    doc["keys"][0]["use"] = "enc".into();
    let skipped = Bundle::from_oidc_jwks(td(), doc.to_string().as_bytes()).unwrap();
    assert_eq!(
        skipped.jwt_authorities().len(),
        sample().jwt_authorities().len() - 1
    );
    doc["keys"][0]["use"] = "sig".into();
    doc["keys"][0]["kid"] = "".into();
    assert!(matches!(
        Bundle::from_oidc_jwks(td(), doc.to_string().as_bytes()),
        Err(BundleError::MissingKeyId { .. })
    ));
    assert!(Bundle::from_oidc_jwks(td(), b"{}").is_err());
}
