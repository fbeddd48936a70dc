//! X509-SVID minting from CSRs, checked with independent parsers (x509-parser, OpenSSL) and with
//! our own SPIFFE validator.

mod common;

use std::time::Duration;

use common::{Harness, openssl_verify, start};
use rustls_pki_types::CertificateDer;
use signet_ca::{Error, KeyAlgorithm, UpstreamCa, X509SvidRequest};
use signet_spiffe::{Bundle, BundleSet, SpiffeId, verify_chain};
use signet_test_support::rcgen::KeyPair;
use signet_test_support::{TestCa, csr_for, csr_with_uris};
use x509_parser::extensions::{GeneralName, ParsedExtension};

const ID: &str = "spiffe://example.org/ns/prod/sa/api";

fn request<'a>(csr: &'a [u8], id: &'a SpiffeId, dns: &'a [String]) -> X509SvidRequest<'a> {
    X509SvidRequest {
        csr_der: csr,
        spiffe_id: id,
        ttl: Duration::from_secs(3600),
        dns_names: dns,
        csr_id_rule: signet_ca::CsrIdRule::Exact,
    }
}

fn bundle_set(bundle: Bundle) -> BundleSet {
    let mut set = BundleSet::new();
    set.insert(bundle);
    set
}

#[test]
fn minted_svid_follows_the_profile() {
    let h = Harness::new();
    let ca = h.open(h.config());
    let id = SpiffeId::new(ID).unwrap();
    let (csr, _key) = csr_for(ID);
    let dns = vec!["api.prod.svc".to_owned(), "api".to_owned()];
    let svid = ca.mint_x509_svid(&request(&csr, &id, &dns)).unwrap();
    assert_eq!(
        svid.chain.len(),
        1,
        "self-signed mode: the root is in the bundle, not the chain"
    );

    let (_, leaf) = x509_parser::parse_x509_certificate(&svid.chain[0]).unwrap();
    // Serial: positive, 128 bits.
    let serial = leaf.raw_serial();
    assert!(serial[0] & 0x80 == 0 || serial[0] == 0);
    assert!(
        leaf.serial.bits() > 120 && leaf.serial.bits() <= 128,
        "serial bits {}",
        leaf.serial.bits()
    );
    // Validity: notBefore = now - 10 s, notAfter = now + ttl.
    let now = start()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(leaf.validity().not_before.timestamp(), now - 10);
    assert_eq!(leaf.validity().not_after.timestamp(), now + 3600);
    // Subject CN = first DNS name; subject differs from issuer.
    assert_eq!(
        leaf.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "api.prod.svc"
    );
    assert_ne!(leaf.subject(), leaf.issuer());
    let mut saw = (false, false, false, false, false);
    for ext in leaf.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                let uris: Vec<_> = san
                    .general_names
                    .iter()
                    .filter_map(|g| match g {
                        GeneralName::URI(u) => Some(*u),
                        _ => None,
                    })
                    .collect();
                let dns: Vec<_> = san
                    .general_names
                    .iter()
                    .filter_map(|g| match g {
                        GeneralName::DNSName(d) => Some(*d),
                        _ => None,
                    })
                    .collect();
                assert_eq!(uris, [ID]);
                assert_eq!(dns, ["api.prod.svc", "api"]);
                saw.0 = true;
            }
            ParsedExtension::KeyUsage(ku) => {
                assert!(ext.critical);
                assert!(ku.digital_signature() && !ku.key_cert_sign() && !ku.crl_sign());
                saw.1 = true;
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                assert!(eku.server_auth && eku.client_auth);
                saw.2 = true;
            }
            ParsedExtension::BasicConstraints(bc) => {
                assert!(!bc.ca);
                saw.3 = true;
            }
            ParsedExtension::AuthorityKeyIdentifier(_) => saw.4 = true,
            _ => {}
        }
    }
    assert_eq!(saw, (true, true, true, true, true));

    // The bundle's root carries SKID, cA and keyCertSign and a path-less SPIFFE ID.
    let bundle = ca.bundle().unwrap();
    let (_, root) = x509_parser::parse_x509_certificate(&bundle.x509_authorities()[0]).unwrap();
    assert!(root.basic_constraints().unwrap().unwrap().value.ca);
    let ku = root.key_usage().unwrap().unwrap();
    assert!(ku.critical && ku.value.key_cert_sign() && ku.value.crl_sign());
    assert!(root.extensions().iter().any(|e| matches!(
        e.parsed_extension(),
        ParsedExtension::SubjectKeyIdentifier(_)
    )));
    let san = root.subject_alternative_name().unwrap().unwrap();
    assert!(matches!(
        san.value.general_names[..],
        [GeneralName::URI("spiffe://example.org")]
    ));

    // Our validator and OpenSSL's strict mode both accept it.
    let chain: Vec<CertificateDer<'_>> = svid
        .chain
        .iter()
        .map(|c| CertificateDer::from(c.as_ref()))
        .collect();
    assert_eq!(
        verify_chain(&chain, &bundle_set(bundle.clone()), start()).unwrap(),
        id
    );
    let roots: Vec<Vec<u8>> = bundle
        .x509_authorities()
        .iter()
        .map(|c| c.to_vec())
        .collect();
    let leafs: Vec<Vec<u8>> = svid.chain.iter().map(|c| c.to_vec()).collect();
    let (ok, out) = openssl_verify(&roots, &leafs, start());
    assert!(ok, "openssl rejected the SVID: {out}");
}

#[test]
fn ttl_is_capped_at_the_authority_expiry_and_the_configured_maximum() {
    let h = Harness::new();
    let mut config = h.config();
    config.max_x509_svid_ttl = Duration::from_secs(1800);
    let ca = h.open(config);
    let id = SpiffeId::new(ID).unwrap();
    let (csr, _) = csr_for(ID);
    let mut req = request(&csr, &id, &[]);
    req.ttl = Duration::from_secs(100 * 3600);
    let svid = ca.mint_x509_svid(&req).unwrap();
    assert_eq!(svid.not_after, start() + Duration::from_secs(1800));

    let h = Harness::new();
    let mut config = h.config();
    config.max_x509_svid_ttl = Duration::from_secs(100 * 3600);
    let ca = h.open(config);
    h.clock.advance(Duration::from_secs(23 * 3600));
    let svid = ca.mint_x509_svid(&req).unwrap();
    let authority_end = ca
        .active_x509()
        .map(|a| signet_ca::Authority::not_after(a.as_ref()))
        .unwrap();
    assert_eq!(
        svid.not_after, authority_end,
        "an SVID never outlives its CA"
    );
}

#[test]
fn hostile_csrs_are_refused() {
    let h = Harness::new();
    let ca = h.open(h.config());
    let id = SpiffeId::new(ID).unwrap();
    let mint = |csr: &[u8]| ca.mint_x509_svid(&request(csr, &id, &[]));

    // Asks for another identity.
    let (csr, _) = csr_for("spiffe://example.org/ns/prod/sa/admin");
    assert!(matches!(mint(&csr), Err(Error::CsrIdMismatch { .. })));
    // Smuggles a second identity next to the authorised one.
    let key = KeyPair::generate().unwrap();
    let csr = csr_with_uris(&key, &[ID, "spiffe://example.org/admin"]);
    assert!(matches!(mint(&csr), Err(Error::CsrIdMismatch { .. })));
    // No identity at all.
    let csr = csr_with_uris(&key, &[]);
    assert!(matches!(mint(&csr), Err(Error::CsrIdMismatch { .. })));
    // Signature broken (last byte of the signature flipped).
    let (mut csr, _) = csr_for(ID);
    let last = csr.len() - 1;
    csr[last] ^= 0x01;
    assert!(matches!(mint(&csr), Err(Error::InvalidCsr(_))));
    // Garbage and trailing bytes.
    assert!(matches!(mint(b"garbage"), Err(Error::InvalidCsr(_))));
    let (mut csr, _) = csr_for(ID);
    csr.extend_from_slice(b"tail");
    assert!(matches!(mint(&csr), Err(Error::InvalidCsr(_))));
}

#[test]
fn requests_outside_the_trust_domain_or_without_path_are_refused() {
    let h = Harness::new();
    let ca = h.open(h.config());
    for bad in ["spiffe://other.org/ns/prod/sa/api", "spiffe://example.org"] {
        let id = SpiffeId::new(bad).unwrap();
        let (csr, _) = csr_for(bad);
        assert!(
            matches!(
                ca.mint_x509_svid(&request(&csr, &id, &[])),
                Err(Error::InvalidRequest(_))
            ),
            "{bad}"
        );
    }
    let id = SpiffeId::new(ID).unwrap();
    let (csr, _) = csr_for(ID);
    for dns in ["-bad.example", "a..b", "under_score.example", ""] {
        let names = vec![dns.to_owned()];
        assert!(
            matches!(
                ca.mint_x509_svid(&request(&csr, &id, &names)),
                Err(Error::InvalidRequest(_))
            ),
            "{dns:?}"
        );
    }
}

#[test]
fn p384_and_rsa_authorities_sign_verifiable_svids() {
    for algorithm in [KeyAlgorithm::EcP384, KeyAlgorithm::Rsa2048] {
        let h = Harness::new();
        let mut config = h.config();
        config.x509_key_algorithm = algorithm;
        config.jwt_key_algorithm = algorithm;
        let ca = h.open(config);
        let id = SpiffeId::new(ID).unwrap();
        let (csr, _) = csr_for(ID);
        let svid = ca.mint_x509_svid(&request(&csr, &id, &[])).unwrap();
        let bundle = ca.bundle().unwrap();
        let chain: Vec<CertificateDer<'_>> = svid
            .chain
            .iter()
            .map(|c| CertificateDer::from(c.as_ref()))
            .collect();
        assert_eq!(
            verify_chain(&chain, &bundle_set(bundle.clone()), start()).unwrap(),
            id,
            "{algorithm:?}"
        );
        let roots: Vec<Vec<u8>> = bundle
            .x509_authorities()
            .iter()
            .map(|c| c.to_vec())
            .collect();
        let (ok, out) = openssl_verify(&roots, &[svid.chain[0].to_vec()], start());
        assert!(ok, "{algorithm:?}: {out}");
    }
}

#[test]
fn upstream_ca_signs_our_intermediate() {
    let upstream_root = TestCa::new("example.org");
    let upstream = UpstreamCa::from_pem(
        upstream_root.cert_pem().as_bytes(),
        upstream_root.key_pem().as_bytes(),
        None,
    )
    .unwrap();
    let h = Harness::new();
    let mut config = h.config();
    config.upstream = Some(upstream);
    let ca = h.open(config);
    let id = SpiffeId::new(ID).unwrap();
    let (csr, _) = csr_for(ID);
    let svid = ca.mint_x509_svid(&request(&csr, &id, &[])).unwrap();
    assert_eq!(svid.chain.len(), 2, "leaf first, then our intermediate");
    let bundle = ca.bundle().unwrap();
    assert_eq!(bundle.x509_authorities().len(), 1);
    assert_eq!(
        bundle.x509_authorities()[0].as_ref(),
        upstream_root.cert_der.as_slice()
    );
    let chain: Vec<CertificateDer<'_>> = svid
        .chain
        .iter()
        .map(|c| CertificateDer::from(c.as_ref()))
        .collect();
    assert_eq!(
        verify_chain(&chain, &bundle_set(bundle), start()).unwrap(),
        id
    );
    let (ok, out) = openssl_verify(
        std::slice::from_ref(&upstream_root.cert_der),
        &svid.chain.iter().map(|c| c.to_vec()).collect::<Vec<_>>(),
        start(),
    );
    assert!(ok, "{out}");
    // The intermediate carries an AKID pointing at the upstream root and ends with it at the latest.
    let (_, inter) = x509_parser::parse_x509_certificate(&svid.chain[1]).unwrap();
    assert!(inter.extensions().iter().any(|e| matches!(
        e.parsed_extension(),
        ParsedExtension::AuthorityKeyIdentifier(_)
    )));
    let (_, root) = x509_parser::parse_x509_certificate(&upstream_root.cert_der).unwrap();
    assert!(inter.validity().not_after <= root.validity().not_after);
}

#[test]
fn unusable_upstream_material_is_refused() {
    let root = TestCa::new("example.org");
    let other = TestCa::new("example.org");
    let err = UpstreamCa::from_pem(root.cert_pem().as_bytes(), other.key_pem().as_bytes(), None)
        .unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    let intermediate = root.intermediate(true);
    let pem = signet_test_support::pem_encode("CERTIFICATE", &intermediate.cert_der);
    let err =
        UpstreamCa::from_pem(pem.as_bytes(), intermediate.key_pem().as_bytes(), None).unwrap_err();
    assert!(err.to_string().contains("bundle"), "{err}");
    assert!(
        UpstreamCa::from_pem(
            pem.as_bytes(),
            intermediate.key_pem().as_bytes(),
            Some(root.cert_pem().as_bytes())
        )
        .is_ok()
    );
    let err = UpstreamCa::from_pem(b"nothing", root.key_pem().as_bytes(), None).unwrap_err();
    assert!(matches!(err, Error::Upstream(_)));
    // SEC1 keys load (tests/upstream.rs); a malformed one is refused.
    let sec1 = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
    let err = UpstreamCa::from_pem(root.cert_pem().as_bytes(), sec1.as_bytes(), None).unwrap_err();
    assert!(
        err.to_string().contains("not a P-256 or P-384 key"),
        "{err}"
    );
}

#[test]
fn agent_csrs_may_omit_the_id_only_when_allowed() {
    let h = Harness::new();
    let ca = h.open(h.config());
    let id = SpiffeId::new("spiffe://example.org/signet/agent/join/abc").unwrap();
    let key = KeyPair::generate().unwrap();
    let unnamed = csr_with_uris(&key, &[]);
    let mut req = request(&unnamed, &id, &[]);
    assert!(matches!(
        ca.mint_x509_svid(&req),
        Err(Error::CsrIdMismatch { .. })
    ));
    req.csr_id_rule = signet_ca::CsrIdRule::ExactOrNone;
    let svid = ca.mint_x509_svid(&req).unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&svid.chain[0]).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert!(matches!(san.value.general_names[..], [GeneralName::URI(u)] if u == id.as_str()));
    // Even then, a CSR naming another ID is refused.
    let other = csr_with_uris(&key, &["spiffe://example.org/signet/agent/join/zzz"]);
    let req = X509SvidRequest {
        csr_der: &other,
        ..req
    };
    assert!(matches!(
        ca.mint_x509_svid(&req),
        Err(Error::CsrIdMismatch { .. })
    ));
}
