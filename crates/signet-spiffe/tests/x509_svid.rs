//! X509-SVID profile and chain validation, including every hostile case of the spec checklist.
#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::time::Duration;

use rustls_pki_types::CertificateDer;
use signet_spiffe::x509::validate_leaf;
use signet_spiffe::{Bundle, BundleSet, TrustDomain, X509Svid, X509SvidError, verify_chain};
use signet_test_support::rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};
use signet_test_support::{KeyUsageSpec, LeafSpec, TestCa, fixed_now};

const ID: &str = "spiffe://example.org/ns/default/sa/api";

fn bundles_for(ca: &TestCa) -> BundleSet {
    let td = TrustDomain::new(&ca.trust_domain).unwrap();
    let bundle = Bundle::from_der_concat(td, &ca.cert_der).unwrap();
    let mut set = BundleSet::new();
    set.insert(bundle);
    set
}

fn verify(chain: &[Vec<u8>], bundles: &BundleSet) -> Result<String, X509SvidError> {
    let chain: Vec<CertificateDer<'_>> = chain
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    verify_chain(&chain, bundles, fixed_now()).map(|id| id.to_string())
}

fn leaf_error(spec: LeafSpec) -> X509SvidError {
    let ca = TestCa::new("example.org");
    let (cert, _) = ca.issue(&spec);
    let leaf = validate_leaf(&cert).unwrap_err();
    // The chain check applies the same leaf rules before any path building.
    assert_eq!(verify(&[cert], &bundles_for(&ca)).unwrap_err(), leaf);
    leaf
}

#[test]
fn valid_svid_parses_and_verifies() {
    let ca = TestCa::new("example.org");
    let (cert, key) = ca.issue(&LeafSpec::svid(ID));
    let svid = X509Svid::parse(&cert, &key).unwrap();
    assert_eq!(svid.spiffe_id().as_str(), ID);
    assert_eq!(svid.chain_der(), cert);
    assert!(!format!("{svid:?}").contains(&format!("{:?}", &key[..8])));
    assert_eq!(verify(&[cert], &bundles_for(&ca)).unwrap(), ID);
}

#[test]
fn chain_through_an_intermediate_verifies() {
    let root = TestCa::new("example.org");
    let intermediate = root.intermediate(true);
    let (leaf, key) = intermediate.issue(&LeafSpec::svid(ID));
    let mut concat = leaf.clone();
    concat.extend_from_slice(&intermediate.cert_der);
    let svid = X509Svid::parse(&concat, &key).unwrap();
    assert_eq!(svid.chain().len(), 2);
    assert_eq!(
        verify(
            &[leaf.clone(), intermediate.cert_der.clone()],
            &bundles_for(&root)
        )
        .unwrap(),
        ID
    );
    // Without the intermediate there is no path to the root.
    assert!(matches!(
        verify(&[leaf], &bundles_for(&root)),
        Err(X509SvidError::PathValidation(_))
    ));
}

#[test]
fn intermediate_without_key_cert_sign_is_rejected() {
    let root = TestCa::new("example.org");
    let intermediate = root.intermediate(false);
    let (leaf, _) = intermediate.issue(&LeafSpec::svid(ID));
    assert_eq!(
        verify(&[leaf, intermediate.cert_der.clone()], &bundles_for(&root)).unwrap_err(),
        X509SvidError::IntermediateCannotSign(1)
    );
}

#[test]
fn two_uri_sans_are_rejected() {
    let mut spec = LeafSpec::svid(ID);
    spec.uris.push("spiffe://example.org/other".into());
    assert_eq!(leaf_error(spec), X509SvidError::MultipleUriSans(2));
}

#[test]
fn missing_uri_san_is_rejected() {
    let mut spec = LeafSpec::svid(ID);
    spec.uris.clear();
    spec.dns.push("api.example.org".into());
    assert_eq!(leaf_error(spec), X509SvidError::NoUriSan);
}

#[test]
fn non_spiffe_uri_is_rejected() {
    let mut spec = LeafSpec::svid(ID);
    spec.uris = vec!["https://example.org/x".into()];
    assert!(matches!(leaf_error(spec), X509SvidError::BadSpiffeId(_)));
}

#[test]
fn leaf_with_trust_domain_id_is_rejected() {
    assert!(matches!(
        leaf_error(LeafSpec::svid("spiffe://example.org")),
        X509SvidError::RootPathLeaf(_)
    ));
}

#[test]
fn ca_leaf_is_rejected() {
    let mut spec = LeafSpec::svid(ID);
    spec.is_ca = true;
    assert_eq!(leaf_error(spec), X509SvidError::LeafIsCa);
}

#[test]
fn missing_key_usage_is_rejected() {
    let mut spec = LeafSpec::svid(ID);
    spec.key_usage = KeyUsageSpec::Absent;
    assert_eq!(leaf_error(spec), X509SvidError::MissingKeyUsage);
}

#[test]
fn non_critical_key_usage_is_rejected() {
    let mut spec = LeafSpec::svid(ID);
    spec.key_usage = KeyUsageSpec::NonCriticalDigitalSignature;
    assert_eq!(leaf_error(spec), X509SvidError::KeyUsageNotCritical);
}

#[test]
fn leaf_that_can_sign_certificates_is_rejected() {
    for usage in [KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign] {
        let mut spec = LeafSpec::svid(ID);
        spec.key_usage = KeyUsageSpec::Critical(vec![KeyUsagePurpose::DigitalSignature, usage]);
        assert_eq!(leaf_error(spec), X509SvidError::LeafCanSign);
    }
}

#[test]
fn leaf_without_digital_signature_is_rejected() {
    let mut spec = LeafSpec::svid(ID);
    spec.key_usage = KeyUsageSpec::Critical(vec![KeyUsagePurpose::KeyEncipherment]);
    assert_eq!(leaf_error(spec), X509SvidError::MissingDigitalSignature);
}

#[test]
fn eku_without_both_purposes_is_rejected() {
    let mut spec = LeafSpec::svid(ID);
    spec.eku = vec![ExtendedKeyUsagePurpose::ServerAuth];
    assert_eq!(leaf_error(spec), X509SvidError::BadExtendedKeyUsage);
    // EKU may be absent altogether.
    let mut spec = LeafSpec::svid(ID);
    spec.eku.clear();
    let ca = TestCa::new("example.org");
    let (cert, _) = ca.issue(&spec);
    assert_eq!(verify(&[cert], &bundles_for(&ca)).unwrap(), ID);
}

#[test]
fn empty_subject_needs_a_critical_san_which_rcgen_writes() {
    let mut spec = LeafSpec::svid(ID);
    spec.subject_cn = None;
    let ca = TestCa::new("example.org");
    let (cert, _) = ca.issue(&spec);
    assert_eq!(verify(&[cert], &bundles_for(&ca)).unwrap(), ID);
}

#[test]
fn expired_and_not_yet_valid_are_rejected() {
    let ca = TestCa::new("example.org");
    let mut spec = LeafSpec::svid(ID);
    spec.not_before = fixed_now() - Duration::from_secs(7200);
    spec.not_after = fixed_now() - Duration::from_secs(1);
    let (cert, _) = ca.issue(&spec);
    assert!(
        matches!(verify(&[cert], &bundles_for(&ca)), Err(X509SvidError::PathValidation(e)) if e.contains("Expired"))
    );
    let mut spec = LeafSpec::svid(ID);
    spec.not_before = fixed_now() + Duration::from_secs(600);
    let (cert, _) = ca.issue(&spec);
    assert!(
        matches!(verify(&[cert], &bundles_for(&ca)), Err(X509SvidError::PathValidation(e)) if e.contains("NotValidYet"))
    );
}

#[test]
fn svid_is_checked_against_its_own_trust_domain_bundle_only() {
    // An SVID for example.org signed by another trust domain's CA must not be accepted, even
    // though that CA is in the bundle set.
    let other = TestCa::new("other.org");
    let (cert, _) = other.issue(&LeafSpec::svid(ID));
    let mut set = bundles_for(&other);
    assert_eq!(
        verify(std::slice::from_ref(&cert), &set).unwrap_err(),
        X509SvidError::NoBundle("example.org".into())
    );
    let own = TestCa::new("example.org");
    for b in bundles_for(&own).iter() {
        set.insert(b.clone());
    }
    assert!(matches!(
        verify(&[cert], &set),
        Err(X509SvidError::PathValidation(_))
    ));
}

#[test]
fn unknown_issuer_in_same_trust_domain_is_rejected() {
    let trusted = TestCa::new("example.org");
    let rogue = TestCa::new("example.org");
    let (cert, _) = rogue.issue(&LeafSpec::svid(ID));
    assert!(matches!(
        verify(&[cert], &bundles_for(&trusted)),
        Err(X509SvidError::PathValidation(_))
    ));
}

#[test]
fn empty_bundle_trusts_nothing() {
    let ca = TestCa::new("example.org");
    let (cert, _) = ca.issue(&LeafSpec::svid(ID));
    let empty =
        Bundle::from_spiffe_json(TrustDomain::new("example.org").unwrap(), br#"{"keys":[]}"#)
            .unwrap();
    let mut set = BundleSet::new();
    set.insert(empty);
    assert_eq!(
        verify(&[cert], &set).unwrap_err(),
        X509SvidError::EmptyBundle("example.org".into())
    );
}

#[test]
fn parse_rejects_garbage_and_mismatched_keys() {
    let ca = TestCa::new("example.org");
    let (cert, key) = ca.issue(&LeafSpec::svid(ID));
    let (_, other_key) = ca.issue(&LeafSpec::svid(ID));
    assert_eq!(
        X509Svid::parse(&cert, &other_key).unwrap_err(),
        X509SvidError::KeyMismatch
    );
    assert_eq!(
        X509Svid::parse(&cert, b"not a key").unwrap_err(),
        X509SvidError::BadPrivateKey
    );
    assert_eq!(
        X509Svid::parse(b"", &key).unwrap_err(),
        X509SvidError::EmptyChain
    );
    assert!(matches!(
        X509Svid::parse(b"\x30\x03junk", &key),
        Err(X509SvidError::BadCertificate(_))
    ));
    let mut trailing = cert.clone();
    trailing.extend_from_slice(b"garbage");
    assert!(matches!(
        X509Svid::parse(&trailing, &key),
        Err(X509SvidError::BadCertificate(_))
    ));
}

#[test]
fn serials_print_like_openssl_without_the_der_sign_byte() {
    use signet_test_support::rcgen::{CertificateParams, KeyPair, SerialNumber};
    let key = KeyPair::generate().unwrap();
    for (serial, shown) in [
        (vec![0x80, 0x01], "8001"),
        (vec![0x0a, 0xff], "0aff"),
        (vec![0x00, 0x00, 0x7f], "7f"),
    ] {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            signet_spiffe::x509::serial_of(cert.der()).as_deref(),
            Some(shown)
        );
    }
    assert_eq!(signet_spiffe::x509::serial_of(b"not a certificate"), None);
}
