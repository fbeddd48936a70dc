//! Rotation driven by a manual clock, through the file key store, with restarts in between.
#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use common::{Harness, openssl_verify, start};
use rustls_pki_types::CertificateDer;
use signet_ca::{
    AuthorityKind, AuthorityStatus, CertificateAuthority, Error, JwtSvidRequest, KeyStoreError,
    RotationEvent, X509SvidRequest,
};
use signet_spiffe::{BundleSet, JwtSvid, JwtValidation, SpiffeId, verify_chain};
use signet_test_support::csr_for;

const HOUR: Duration = Duration::from_secs(3600);
const ID: &str = "spiffe://example.org/ns/prod/sa/api";

fn mint(ca: &CertificateAuthority) -> Vec<Vec<u8>> {
    let id = SpiffeId::new(ID).unwrap();
    let (csr, _) = csr_for(ID);
    let req = X509SvidRequest {
        csr_der: &csr,
        spiffe_id: &id,
        ttl: HOUR,
        dns_names: &[],
        csr_id_rule: signet_ca::CsrIdRule::Exact,
    };
    ca.mint_x509_svid(&req)
        .unwrap()
        .chain
        .iter()
        .map(|c| c.to_vec())
        .collect()
}

fn verifies(ca: &CertificateAuthority, chain: &[Vec<u8>], at: std::time::SystemTime) -> bool {
    let mut set = BundleSet::new();
    set.insert(ca.bundle().unwrap());
    let chain: Vec<CertificateDer<'_>> = chain
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    verify_chain(&chain, &set, at).is_ok()
}

fn verifies_with_root(root: &[u8], chain: &[Vec<u8>]) -> bool {
    let (_, root) = x509_parser::parse_x509_certificate(root).unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    leaf.verify_signature(Some(root.public_key())).is_ok()
}

fn statuses(ca: &CertificateAuthority, kind: AuthorityKind) -> Vec<AuthorityStatus> {
    let mut s: Vec<_> = ca
        .authorities()
        .into_iter()
        .filter(|a| a.kind == kind)
        .map(|a| a.status)
        .collect();
    s.sort_by_key(|s| *s as u8);
    s
}

#[test]
fn rotation_under_traffic_keeps_every_svid_verifiable() {
    let h = Harness::new();
    let mut ca = h.open(h.config());
    let seq0 = ca.bundle_sequence();
    assert_eq!(
        statuses(&ca, AuthorityKind::X509),
        [AuthorityStatus::Active]
    );
    let first = mint(&ca);

    // Half-life: the successor is prepared and published before it signs anything.
    h.clock.advance(12 * HOUR);
    let events = ca.tick().unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| matches!(e, RotationEvent::Prepared(_)))
    );
    assert_eq!(ca.bundle_sequence(), seq0 + 1);
    assert_eq!(ca.bundle().unwrap().x509_authorities().len(), 2);
    assert_eq!(ca.bundle().unwrap().jwt_authorities().len(), 2);

    // A restart in the middle keeps the exact same keys and sequence.
    let bundle_before = ca.bundle().unwrap();
    drop(ca);
    let mut ca = h.open(h.config());
    assert_eq!(ca.bundle().unwrap(), bundle_before);

    // ⅙ life left: the successor signs; the old root stays in the bundle.
    h.clock.advance(8 * HOUR);
    let events = ca.tick().unwrap();
    assert!(
        events
            .iter()
            .all(|e| matches!(e, RotationEvent::Activated(_))),
        "{events:?}"
    );
    assert_eq!(
        ca.bundle_sequence(),
        seq0 + 1,
        "activation does not change the bundle"
    );
    let second = mint(&ca);
    assert_ne!(first, second);
    let now = start() + 20 * HOUR;
    assert!(verifies(&ca, &second, now));
    let roots: Vec<Vec<u8>> = ca
        .bundle()
        .unwrap()
        .x509_authorities()
        .iter()
        .map(|c| c.to_vec())
        .collect();
    let (ok, out) = openssl_verify(&roots, &second, now);
    assert!(ok, "{out}");

    // The old authority leaves the bundle when it expires; that is also the half-life of the
    // authority prepared at 12 h, so the next successor is published in the same step.
    let old_root = roots
        .iter()
        .find(|r| verifies_with_root(r, &first))
        .cloned()
        .unwrap();
    h.clock.advance(4 * HOUR);
    let events = ca.tick().unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, RotationEvent::Expired(_)))
            .count(),
        2,
        "{events:?}"
    );
    assert_eq!(ca.bundle_sequence(), seq0 + 2);
    let bundle = ca.bundle().unwrap();
    assert_eq!(bundle.x509_authorities().len(), 2);
    assert!(
        !bundle
            .x509_authorities()
            .iter()
            .any(|c| c.as_ref() == old_root.as_slice())
    );
    assert!(
        verifies(&ca, &second, now + HOUR / 2),
        "SVIDs of the new authority still verify"
    );
    assert!(
        !verifies(&ca, &first, start() + HOUR / 2),
        "the expired root no longer anchors anything"
    );
}

#[test]
fn jwt_tokens_stay_valid_across_activation() {
    let h = Harness::new();
    let mut ca = h.open(h.config());
    let id = SpiffeId::new(ID).unwrap();
    let aud = vec!["db".to_owned()];
    let req = JwtSvidRequest {
        spiffe_id: &id,
        audience: &aud,
        ttl: Duration::from_secs(300),
        issuer: None,
    };
    h.clock.advance(20 * HOUR);
    ca.tick().unwrap();
    let before = ca.mint_jwt_svid(&req).unwrap();
    ca.prepare(AuthorityKind::Jwt).unwrap();
    ca.activate(AuthorityKind::Jwt).unwrap();
    let after = ca.mint_jwt_svid(&req).unwrap();
    let mut set = BundleSet::new();
    set.insert(ca.bundle().unwrap());
    let now = h.clock_now();
    let a = JwtSvid::validate(&before, &set, "db", JwtValidation::at(now)).unwrap();
    let b = JwtSvid::validate(&after, &set, "db", JwtValidation::at(now)).unwrap();
    assert_ne!(a.key_id(), b.key_id());
}

trait ClockNow {
    fn clock_now(&self) -> std::time::SystemTime;
}
impl ClockNow for Harness {
    fn clock_now(&self) -> std::time::SystemTime {
        signet_ca::Clock::now(self.clock.as_ref())
    }
}

#[test]
fn taint_and_revoke_through_the_ca() {
    let h = Harness::new();
    let mut ca = h.open(h.config());
    let old = ca.active_x509().unwrap().certificate().clone();
    let old_id = ca
        .authorities()
        .into_iter()
        .find(|a| a.kind == AuthorityKind::X509)
        .unwrap()
        .id;
    assert!(matches!(
        ca.taint(AuthorityKind::X509, &old_id),
        Err(Error::InvalidTransition(_))
    ));
    assert!(matches!(
        ca.activate(AuthorityKind::X509),
        Err(Error::InvalidTransition(_))
    ));
    ca.prepare(AuthorityKind::X509).unwrap();
    ca.activate(AuthorityKind::X509).unwrap();
    let seq = ca.bundle_sequence();
    ca.taint(AuthorityKind::X509, &old_id).unwrap();
    assert_eq!(ca.tainted_x509_authorities(), std::slice::from_ref(&old_id));
    assert_eq!(
        ca.bundle_sequence(),
        seq,
        "taint does not change the bundle"
    );
    ca.revoke(AuthorityKind::X509, &old_id).unwrap();
    assert_eq!(ca.bundle_sequence(), seq + 1);
    assert!(!ca.bundle().unwrap().x509_authorities().contains(&old));
    // Taint survives a restart.
    let h2 = Harness::new();
    let mut ca2 = h2.open(h2.config());
    ca2.prepare(AuthorityKind::Jwt).unwrap();
    ca2.activate(AuthorityKind::Jwt).unwrap();
    let old_jwt = ca2
        .authorities()
        .into_iter()
        .find(|a| a.kind == AuthorityKind::Jwt && a.status == AuthorityStatus::Old)
        .unwrap()
        .id;
    ca2.taint(AuthorityKind::Jwt, &old_jwt).unwrap();
    drop(ca2);
    let ca2 = h2.open(h2.config());
    assert!(
        ca2.authorities()
            .iter()
            .any(|a| a.id == old_jwt && a.tainted)
    );
}

#[test]
fn key_file_is_private_and_corruption_is_never_papered_over() {
    let h = Harness::new();
    let ca = h.open(h.config());
    let bundle = ca.bundle().unwrap();
    drop(ca);
    let path = h.store.path().to_owned();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let original = std::fs::read(&path).unwrap();

    // Truncated (a partial write by something else).
    std::fs::write(&path, &original[..original.len() / 2]).unwrap();
    let err = CertificateAuthority::open(h.config(), h.store.clone(), h.clock.clone()).unwrap_err();
    assert!(
        matches!(err, Error::KeyStore(KeyStoreError::Corrupt { .. })),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap().len(),
        original.len() / 2,
        "the file was not replaced"
    );
    // Empty.
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(
        CertificateAuthority::open(h.config(), h.store.clone(), h.clock.clone()),
        Err(Error::KeyStore(KeyStoreError::Corrupt { .. }))
    ));
    // A key that is not a key.
    let mut doc: serde_json::Value = serde_json::from_slice(&original).unwrap();
    doc["x509"][0]["private_key"] = serde_json::json!("bm90IGEga2V5");
    std::fs::write(&path, doc.to_string()).unwrap();
    assert!(CertificateAuthority::open(h.config(), h.store.clone(), h.clock.clone()).is_err());
    // Restored: the same keys come back.
    std::fs::write(&path, &original).unwrap();
    let ca = CertificateAuthority::open(h.config(), h.store.clone(), h.clock.clone()).unwrap();
    assert_eq!(ca.bundle().unwrap(), bundle);
    drop(ca);
    // World-readable key file.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = CertificateAuthority::open(h.config(), h.store.clone(), h.clock.clone()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::KeyStore(KeyStoreError::InsecurePermissions { mode: 0o644, .. })
        ),
        "{err}"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A key file behind a link, or owned by another user (planted: their CA), is not loaded.
    let elsewhere = path.with_extension("elsewhere");
    std::fs::rename(&path, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
    let err = CertificateAuthority::open(h.config(), h.store.clone(), h.clock.clone()).unwrap_err();
    assert!(
        matches!(err, Error::KeyStore(KeyStoreError::Untrusted { .. })),
        "{err}"
    );
    std::fs::remove_file(&path).unwrap();
    std::fs::rename(&elsewhere, &path).unwrap();
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(&path, Some(4242), Some(4242)).unwrap();
        let err =
            CertificateAuthority::open(h.config(), h.store.clone(), h.clock.clone()).unwrap_err();
        assert!(err.to_string().contains("uid 4242"), "{err}");
        std::os::unix::fs::chown(&path, Some(0), Some(0)).unwrap();
    }
    // Keys of another trust domain.
    let other = signet_ca::CaConfig::new(signet_spiffe::TrustDomain::new("other.org").unwrap());
    let err = CertificateAuthority::open(other, h.store.clone(), h.clock.clone()).unwrap_err();
    assert!(err.to_string().contains("example.org"), "{err}");
    // The secret key never shows in Debug output.
    let ca = CertificateAuthority::open(h.config(), h.store.clone(), h.clock.clone()).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&original).unwrap();
    let secret = doc["x509"][0]["private_key"].as_str().unwrap();
    assert!(!format!("{ca:?} {:?}", ca.active_x509().unwrap()).contains(&secret[..20]));
}

#[test]
fn concurrent_writers_conflict_instead_of_overwriting() {
    let h = Harness::new();
    let mut a = h.open(h.config());
    let mut b = CertificateAuthority::open(h.config(), h.store.clone(), h.clock.clone()).unwrap();
    a.prepare(AuthorityKind::X509).unwrap();
    let err = b.prepare(AuthorityKind::X509).unwrap_err();
    assert!(
        matches!(
            err,
            Error::KeyStore(KeyStoreError::Conflict {
                expected: 1,
                found: 2
            })
        ),
        "{err}"
    );
    // b's failed change was not adopted: it still has a single authority.
    assert_eq!(
        b.authorities()
            .iter()
            .filter(|x| x.kind == AuthorityKind::X509)
            .count(),
        1
    );
    let _ = Arc::strong_count(&h.store);
}

/// Two replicas over one store: the follower opens what the leader created without writing,
/// adopts the leader's rotations on reload, and a stale writer gets a conflict, never a fork.
#[test]
fn followers_open_existing_state_and_reload_the_leaders_changes() {
    let h = Harness::new();
    let follower_store = h.store.clone();
    assert!(
        CertificateAuthority::open_existing(h.config(), follower_store.clone(), h.clock.clone())
            .unwrap()
            .is_none()
    );
    let mut leader = h.open(h.config());
    let mut follower =
        CertificateAuthority::open_existing(h.config(), follower_store, h.clock.clone())
            .unwrap()
            .unwrap();
    assert_eq!(follower.generation(), leader.generation());
    assert_eq!(follower.bundle().unwrap(), leader.bundle().unwrap());
    assert!(!follower.reload().unwrap());

    leader.prepare(AuthorityKind::X509).unwrap();
    assert_ne!(follower.bundle().unwrap(), leader.bundle().unwrap());
    assert!(follower.reload().unwrap());
    assert_eq!(follower.bundle().unwrap(), leader.bundle().unwrap());
    assert_eq!(follower.generation(), leader.generation());

    // A replica that missed a change cannot overwrite it.
    let mut stale =
        CertificateAuthority::open_existing(h.config(), h.store.clone(), h.clock.clone())
            .unwrap()
            .unwrap();
    leader.activate(AuthorityKind::X509).unwrap();
    assert!(matches!(
        stale.prepare(AuthorityKind::Jwt),
        Err(Error::KeyStore(KeyStoreError::Conflict { .. }))
    ));
    assert!(stale.reload().unwrap());
    assert_eq!(stale.bundle().unwrap(), leader.bundle().unwrap());
}
