//! JWT-SVID validation, including each hostile token the spec tells validators to refuse.
#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::time::{Duration, SystemTime};

use serde_json::json;
use signet_spiffe::{
    Bundle, BundleSet, JwtPublicKey, JwtSvid, JwtSvidError, JwtValidation, TrustDomain,
};
use signet_test_support::rcgen::{KeyPair, PublicKeyData};
use signet_test_support::{JwtSigner, fixed_now, forge_jwt};

const SUB: &str = "spiffe://example.org/ns/default/sa/api";
const KID: &str = "key-1";

struct Fixture {
    key: KeyPair,
    bundles: BundleSet,
}

fn fixture() -> Fixture {
    let key = KeyPair::generate().unwrap();
    let mut bundle = Bundle::new(TrustDomain::new("example.org").unwrap());
    let public = JwtPublicKey::from_spki_der(&key.subject_public_key_info()).unwrap();
    bundle.add_jwt_authority(KID, public).unwrap();
    let mut bundles = BundleSet::new();
    bundles.insert(bundle);
    Fixture { key, bundles }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

fn header() -> serde_json::Value {
    json!({"alg": "ES256", "kid": KID, "typ": "JWT"})
}

fn claims() -> serde_json::Value {
    json!({"sub": SUB, "aud": ["api"], "exp": unix(fixed_now()) + 300, "iat": unix(fixed_now())})
}

impl Fixture {
    fn sign(&self, header: &serde_json::Value, claims: &serde_json::Value) -> String {
        forge_jwt(header, claims, JwtSigner::Es256(&self.key.serialize_der()))
    }

    fn check(&self, token: &str) -> Result<JwtSvid, JwtSvidError> {
        JwtSvid::validate(token, &self.bundles, "api", JwtValidation::at(fixed_now()))
    }
}

#[test]
fn valid_token_is_accepted() {
    let f = fixture();
    let token = f.sign(&header(), &claims());
    let svid = f.check(&token).unwrap();
    assert_eq!(svid.spiffe_id().as_str(), SUB);
    assert_eq!(svid.audience(), ["api"]);
    assert_eq!(svid.key_id(), KID);
    assert!(!format!("{svid:?}").contains(&token));
    // typ is optional; JOSE is allowed; a single-string aud is allowed.
    let mut h = header();
    h.as_object_mut().unwrap().remove("typ");
    assert!(f.check(&f.sign(&h, &claims())).is_ok());
    h["typ"] = json!("JOSE");
    let mut c = claims();
    c["aud"] = json!("api");
    assert!(f.check(&f.sign(&h, &c)).is_ok());
}

#[test]
fn alg_none_is_rejected() {
    let f = fixture();
    let token = forge_jwt(
        &json!({"alg": "none", "kid": KID}),
        &claims(),
        JwtSigner::Unsigned,
    );
    assert_eq!(
        f.check(&token).unwrap_err(),
        JwtSvidError::DisallowedAlgorithm("none".into())
    );
}

#[test]
fn hs256_with_the_public_key_as_secret_is_rejected() {
    let f = fixture();
    let secret = f.key.public_key_raw().to_vec();
    let token = forge_jwt(
        &json!({"alg": "HS256", "kid": KID, "typ": "JWT"}),
        &claims(),
        JwtSigner::Hs256(&secret),
    );
    assert_eq!(
        f.check(&token).unwrap_err(),
        JwtSvidError::DisallowedAlgorithm("HS256".into())
    );
}

#[test]
fn extra_jose_headers_are_rejected() {
    let f = fixture();
    for extra in ["jku", "x5c", "crit", "cty"] {
        let mut h = header();
        h[extra] = json!("x");
        assert_eq!(
            f.check(&f.sign(&h, &claims())).unwrap_err(),
            JwtSvidError::DisallowedHeader(extra.into())
        );
    }
}

#[test]
fn duplicate_header_members_are_rejected() {
    let f = fixture();
    let token = f.sign(&header(), &claims());
    let (_, rest) = token.split_once('.').unwrap();
    use base64::Engine;
    let dup = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!(r#"{{"alg":"ES256","kid":"{KID}","kid":"other"}}"#));
    assert!(matches!(
        f.check(&format!("{dup}.{rest}")),
        Err(JwtSvidError::BadHeader(_))
    ));
}

#[test]
fn bad_typ_and_missing_kid_are_rejected() {
    let f = fixture();
    let mut h = header();
    h["typ"] = json!("at+jwt");
    assert_eq!(
        f.check(&f.sign(&h, &claims())).unwrap_err(),
        JwtSvidError::BadType("at+jwt".into())
    );
    let mut h = header();
    h.as_object_mut().unwrap().remove("kid");
    assert_eq!(
        f.check(&f.sign(&h, &claims())).unwrap_err(),
        JwtSvidError::MissingKeyId
    );
}

#[test]
fn missing_or_wrong_audience_is_rejected() {
    let f = fixture();
    let mut c = claims();
    c.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        f.check(&f.sign(&header(), &c)).unwrap_err(),
        JwtSvidError::MissingAudience
    );
    c["aud"] = json!([]);
    assert_eq!(
        f.check(&f.sign(&header(), &c)).unwrap_err(),
        JwtSvidError::MissingAudience
    );
    c["aud"] = json!(["other"]);
    assert_eq!(
        f.check(&f.sign(&header(), &c)).unwrap_err(),
        JwtSvidError::AudienceMismatch("api".into())
    );
}

#[test]
fn missing_or_past_expiry_is_rejected() {
    let f = fixture();
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        f.check(&f.sign(&header(), &c)).unwrap_err(),
        JwtSvidError::MissingExpiry
    );
    c["exp"] = json!(unix(fixed_now()) - 31);
    assert_eq!(
        f.check(&f.sign(&header(), &c)).unwrap_err(),
        JwtSvidError::Expired
    );
    // Within the 30 s leeway it still passes; with no leeway it does not.
    c["exp"] = json!(unix(fixed_now()) - 5);
    let token = f.sign(&header(), &c);
    assert!(f.check(&token).is_ok());
    let strict = JwtValidation {
        now: fixed_now(),
        leeway: Duration::ZERO,
    };
    assert_eq!(
        JwtSvid::validate(&token, &f.bundles, "api", strict).unwrap_err(),
        JwtSvidError::Expired
    );
    c["exp"] = json!("tomorrow");
    assert!(matches!(
        f.check(&f.sign(&header(), &c)),
        Err(JwtSvidError::BadClaims(_))
    ));
}

#[test]
fn subject_must_be_a_spiffe_id_with_a_known_bundle() {
    let f = fixture();
    let mut c = claims();
    c.as_object_mut().unwrap().remove("sub");
    assert_eq!(
        f.check(&f.sign(&header(), &c)).unwrap_err(),
        JwtSvidError::MissingSubject
    );
    c["sub"] = json!("user@example.org");
    assert!(matches!(
        f.check(&f.sign(&header(), &c)),
        Err(JwtSvidError::BadSubject(_))
    ));
    // Same key, same kid, but the subject claims another trust domain: its bundle is consulted.
    c["sub"] = json!("spiffe://other.org/api");
    assert_eq!(
        f.check(&f.sign(&header(), &c)).unwrap_err(),
        JwtSvidError::NoBundle("other.org".into())
    );
}

#[test]
fn unknown_kid_and_bad_signatures_are_rejected() {
    let f = fixture();
    let mut h = header();
    h["kid"] = json!("nope");
    assert!(matches!(
        f.check(&f.sign(&h, &claims())),
        Err(JwtSvidError::UnknownKey { .. })
    ));
    let other = KeyPair::generate().unwrap();
    let token = forge_jwt(
        &header(),
        &claims(),
        JwtSigner::Es256(&other.serialize_der()),
    );
    assert_eq!(f.check(&token).unwrap_err(), JwtSvidError::BadSignature);
    // Claims swapped after signing.
    let good = f.sign(&header(), &claims());
    let mut c = claims();
    c["sub"] = json!("spiffe://example.org/admin");
    let forged = f.sign(&header(), &c);
    let parts: Vec<&str> = good.split('.').collect();
    let forged_parts: Vec<&str> = forged.split('.').collect();
    let spliced = format!("{}.{}.{}", parts[0], forged_parts[1], parts[2]);
    assert_eq!(f.check(&spliced).unwrap_err(), JwtSvidError::BadSignature);
    // ES384 claimed for a P-256 key.
    let mut h = header();
    h["alg"] = json!("ES384");
    assert!(matches!(
        f.check(&f.sign(&h, &claims())),
        Err(JwtSvidError::KeyAlgorithmMismatch(_))
    ));
}

#[test]
fn non_compact_forms_are_rejected() {
    let f = fixture();
    let token = f.sign(&header(), &claims());
    assert_eq!(
        f.check(&format!("{token}.extra")).unwrap_err(),
        JwtSvidError::Malformed
    );
    assert_eq!(f.check("a.b").unwrap_err(), JwtSvidError::Malformed);
    assert_eq!(f.check("").unwrap_err(), JwtSvidError::Malformed);
    let json_serialization = json!({"payload": "x", "signatures": []}).to_string();
    assert_eq!(
        f.check(&json_serialization).unwrap_err(),
        JwtSvidError::Malformed
    );
    // Padding and standard base64 are not base64url-without-padding.
    assert_eq!(
        f.check(&format!("{token}=")).unwrap_err(),
        JwtSvidError::Malformed
    );
}

#[test]
fn parse_insecure_reads_without_verifying() {
    let f = fixture();
    let other = KeyPair::generate().unwrap();
    let token = forge_jwt(
        &header(),
        &claims(),
        JwtSigner::Es256(&other.serialize_der()),
    );
    let parsed = JwtSvid::parse_insecure(&token).unwrap();
    assert_eq!(parsed.spiffe_id().as_str(), SUB);
    assert!(f.check(&token).is_err());
}
