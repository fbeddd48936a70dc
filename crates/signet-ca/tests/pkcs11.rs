//! CA keys in a PKCS#11 token (SoftHSM2): X.509 and JWT authorities generated in the token as
//! non-extractable keys, SVIDs minted through it and checked by OpenSSL and our validators,
//! rotation making new token keys and destroying retired ones, a restart finding the keys by
//! reference, and the refusals (wrong PIN, unknown token, a key gone from the token) with
//! messages that never carry the PIN.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Harness, openssl_verify, start};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use signet_ca::pkcs11::{Pkcs11Config, Pkcs11Keys};
use signet_ca::{
    AuthorityKind, CaConfig, CertificateAuthority, Error, JwtSvidRequest, KeyAlgorithm, KeyManager,
};
use signet_spiffe::{BundleSet, JwtSvid, JwtValidation, SpiffeId};
use signet_test_support::softhsm::{MODULE, PIN, run_in_child};
use zeroize::Zeroizing;

const ID: &str = "spiffe://example.org/ns/prod/sa/api";

fn token(label: &str, pin: &str) -> Pkcs11Config {
    Pkcs11Config {
        module: MODULE.into(),
        token_label: label.into(),
        pin: Zeroizing::new(pin.into()),
    }
}

fn keys(label: &str) -> Arc<Pkcs11Keys> {
    Arc::new(Pkcs11Keys::open(&token(label, PIN)).unwrap())
}

fn config(h: &Harness, keys: Arc<dyn KeyManager>, algorithm: KeyAlgorithm) -> CaConfig {
    let mut config = h.config();
    config.keys = keys;
    config.x509_key_algorithm = algorithm;
    config.jwt_key_algorithm = algorithm;
    config
}

fn mint_and_check(ca: &CertificateAuthority) {
    let svid = common::mint(ca, ID);
    let id = SpiffeId::new(ID).unwrap();
    let bundle = ca.bundle().unwrap();
    let roots: Vec<Vec<u8>> = bundle
        .x509_authorities()
        .iter()
        .map(|c| c.to_vec())
        .collect();
    let chain: Vec<Vec<u8>> = svid.chain.iter().map(|c| c.to_vec()).collect();
    let (ok, output) = openssl_verify(&roots, &chain, start());
    assert!(ok, "OpenSSL refused the token-signed SVID: {output}");
    let mut bundles = BundleSet::new();
    bundles.insert(bundle);
    let certs: Vec<_> = svid.chain.clone();
    signet_spiffe::verify_chain(&certs, &bundles, start()).unwrap();

    let audience = vec!["db".to_owned()];
    let token = ca
        .mint_jwt_svid(&JwtSvidRequest {
            spiffe_id: &id,
            audience: &audience,
            ttl: Duration::from_secs(300),
            issuer: None,
        })
        .unwrap();
    let validated = JwtSvid::validate(&token, &bundles, "db", JwtValidation::at(start())).unwrap();
    assert_eq!(validated.spiffe_id(), &id);
}

fn token_keys(keys: &Pkcs11Keys, class: ObjectClass) -> usize {
    keys.with_session(|s| s.find_objects(&[Attribute::Class(class)]).unwrap().len())
}

#[test]
fn svids_are_signed_by_keys_that_never_leave_the_token() {
    if !run_in_child(
        "svids_are_signed_by_keys_that_never_leave_the_token",
        &["ca"],
    ) {
        return;
    }
    for algorithm in [
        KeyAlgorithm::EcP256,
        KeyAlgorithm::EcP384,
        KeyAlgorithm::Rsa2048,
    ] {
        let h = Harness::new();
        let keys = keys("ca");
        let ca = h.open(config(&h, keys.clone(), algorithm));
        mint_and_check(&ca);
        // The stored state names the keys; it holds none.
        let stored = std::fs::read_to_string(h.store.path()).unwrap();
        assert!(!stored.contains("private_key"), "{stored}");
        assert_eq!(stored.matches("\"pkcs11\"").count(), 2, "{stored}");
        // In the token the private keys are sensitive and not extractable.
        keys.with_session(|session| {
            let private = session
                .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
                .unwrap();
            assert!(!private.is_empty());
            for handle in private {
                let attributes = session
                    .get_attributes(
                        handle,
                        &[AttributeType::Sensitive, AttributeType::Extractable],
                    )
                    .unwrap();
                assert!(attributes.contains(&Attribute::Sensitive(true)));
                assert!(attributes.contains(&Attribute::Extractable(false)));
                let value = session.get_attributes(handle, &[AttributeType::Value]);
                assert!(
                    value.as_ref().is_ok_and(Vec::is_empty) || value.is_err(),
                    "the token revealed a private key"
                );
            }
        });
    }
}

#[test]
fn rotation_makes_token_keys_and_a_restart_finds_them_again() {
    if !run_in_child(
        "rotation_makes_token_keys_and_a_restart_finds_them_again",
        &["rot"],
    ) {
        return;
    }
    let h = Harness::new();
    let keys = keys("rot");
    let mut ca = h.open(config(&h, keys.clone(), KeyAlgorithm::EcP256));
    assert_eq!(token_keys(&keys, ObjectClass::PRIVATE_KEY), 2);
    let old_x509 = ca.active_x509().unwrap().clone();
    for kind in [AuthorityKind::X509, AuthorityKind::Jwt] {
        ca.prepare(kind).unwrap();
        ca.activate(kind).unwrap();
    }
    assert_eq!(token_keys(&keys, ObjectClass::PRIVATE_KEY), 4);
    mint_and_check(&ca);
    let bundle = ca.bundle().unwrap();

    // A restart (new session, new module user) finds every key by its reference.
    drop(ca);
    let reopened = h.open(config(&h, self::keys("rot"), KeyAlgorithm::EcP256));
    assert_eq!(reopened.bundle().unwrap(), bundle);
    mint_and_check(&reopened);

    // A revoked authority's key is destroyed in the token.
    let mut ca = reopened;
    let old_id = signet_ca::Authority::id(old_x509.as_ref()).to_owned();
    ca.taint(AuthorityKind::X509, &old_id).unwrap();
    ca.revoke(AuthorityKind::X509, &old_id).unwrap();
    assert_eq!(token_keys(&keys, ObjectClass::PRIVATE_KEY), 3);
    assert_eq!(token_keys(&keys, ObjectClass::PUBLIC_KEY), 3);

    // Keys gone from the token (re-initialized) are a clear error, never replaced silently.
    keys.with_session(|session| {
        for handle in session.find_objects(&[]).unwrap() {
            session.destroy_object(handle).unwrap();
        }
    });
    let error = CertificateAuthority::open(
        config(&h, self::keys("rot"), KeyAlgorithm::EcP256),
        h.store.clone(),
        h.clock.clone(),
    )
    .unwrap_err();
    assert!(matches!(error, Error::Device(_)), "{error}");
    assert!(
        error.to_string().contains("holds no key with id"),
        "{error}"
    );
}

#[test]
fn a_wrong_pin_or_an_unknown_token_is_refused_without_showing_the_pin() {
    if !run_in_child(
        "a_wrong_pin_or_an_unknown_token_is_refused_without_showing_the_pin",
        &["pins"],
    ) {
        return;
    }
    let wrong = "9999-not-the-pin";
    let error = Pkcs11Keys::open(&token("pins", wrong)).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("PIN of token \"pins\" is incorrect"),
        "{error}"
    );
    assert!(!error.to_string().contains(wrong));
    assert!(
        !format!("{:?}", token("pins", wrong)).contains(wrong),
        "Debug hides the PIN"
    );
    let error = Pkcs11Keys::open(&token("nope", PIN)).unwrap_err();
    assert!(
        error.to_string().contains("no token labelled \"nope\""),
        "{error}"
    );
    assert!(!error.to_string().contains(PIN));
    let mut missing = token("pins", PIN);
    missing.module = "/nonexistent/libpkcs11.so".into();
    assert!(Pkcs11Keys::open(&missing).is_err());
    // A state naming a token key while no token is configured says what to do.
    let h = Harness::new();
    drop(h.open(config(&h, keys("pins"), KeyAlgorithm::EcP256)));
    let error =
        CertificateAuthority::open(h.config(), h.store.clone(), h.clock.clone()).unwrap_err();
    assert!(
        error.to_string().contains("no key device is configured"),
        "{error}"
    );
}
