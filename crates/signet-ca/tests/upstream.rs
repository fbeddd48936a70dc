//! An upstream CA that renews itself (cert-manager): the renewed material re-issues our
//! intermediate at once when it chains to a root already trusted, only prepares it when the
//! root is new, and is refused when it drops a root live authorities chain to. Keys come in the
//! encodings cert-manager writes (SEC1, PKCS#1) as well as PKCS#8.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::process::Command;

use common::{Harness, openssl_verify, start};
use signet_ca::{AuthorityStatus, CertificateAuthority, RotationEvent, UpstreamCa};
use signet_test_support::{TestCa, pem_encode};

const ID: &str = "spiffe://example.org/api";

fn material(signer: &TestCa, roots: &[&TestCa]) -> UpstreamCa {
    let bundle: String = roots.iter().map(|r| r.cert_pem()).collect();
    UpstreamCa::from_pem(
        pem_encode("CERTIFICATE", &signer.cert_der).as_bytes(),
        signer.key_pem().as_bytes(),
        Some(bundle.as_bytes()),
    )
    .unwrap()
}

fn statuses(ca: &CertificateAuthority) -> Vec<AuthorityStatus> {
    ca.authorities()
        .iter()
        .filter(|a| a.kind == signet_ca::AuthorityKind::X509)
        .map(|a| a.status)
        .collect()
}

fn verifies_under(ca: &CertificateAuthority, roots: &[&TestCa]) -> bool {
    let svid = common::mint(ca, ID);
    let roots: Vec<Vec<u8>> = roots.iter().map(|r| r.cert_der.clone()).collect();
    let chain: Vec<Vec<u8>> = svid.chain.iter().map(|c| c.to_vec()).collect();
    openssl_verify(&roots, &chain, start()).0
}

#[test]
fn a_renewed_upstream_reissues_the_intermediate_without_an_outage() {
    let root = TestCa::new("example.org");
    let first = root.intermediate(true);
    let h = Harness::new();
    let mut config = h.config();
    config.upstream = Some(material(&first, &[&root]));
    let mut ca = h.open(config);
    let bundle = ca.bundle().unwrap();
    assert!(verifies_under(&ca, &[&root]));

    // The same material again (a resync of the Secret) changes nothing.
    assert!(
        ca.set_upstream(material(&first, &[&root]), true)
            .unwrap()
            .is_empty()
    );

    // cert-manager renewed the intermediate (new key) under the same root: active at once, the
    // bundle (the root) unchanged, so nobody waits for a new bundle.
    let renewed = root.intermediate(true);
    let events = ca.set_upstream(material(&renewed, &[&root]), true).unwrap();
    assert!(
        matches!(
            events.as_slice(),
            [RotationEvent::Prepared(_), RotationEvent::Activated(_)]
        ),
        "{events:?}"
    );
    assert_eq!(
        statuses(&ca),
        [AuthorityStatus::Old, AuthorityStatus::Active]
    );
    assert_eq!(
        ca.bundle().unwrap().x509_authorities(),
        bundle.x509_authorities()
    );
    let active = ca.active_x509().unwrap();
    assert_eq!(
        active.upstream_chain()[0].as_ref(),
        renewed.cert_der.as_slice()
    );
    assert!(verifies_under(&ca, &[&root]));
}

#[test]
fn a_new_root_is_only_prepared_and_a_dropped_root_is_refused() {
    let root = TestCa::new("example.org");
    let first = root.intermediate(true);
    let h = Harness::new();
    let mut config = h.config();
    config.upstream = Some(material(&first, &[&root]));
    let mut ca = h.open(config);

    // Moving to a new root: its bundle must still carry the old one; the new intermediate is
    // prepared (published with the new root), not signing until the bundle has spread.
    let new_root = TestCa::new("example.org");
    let next = new_root.intermediate(true);
    let dropped = ca
        .set_upstream(material(&next, &[&new_root]), true)
        .unwrap_err();
    assert!(dropped.to_string().contains("drops the root"), "{dropped}");
    assert_eq!(statuses(&ca), [AuthorityStatus::Active], "nothing changed");
    let events = ca
        .set_upstream(material(&next, &[&root, &new_root]), true)
        .unwrap();
    assert!(
        matches!(events.as_slice(), [RotationEvent::Prepared(_)]),
        "{events:?}"
    );
    assert_eq!(ca.bundle().unwrap().x509_authorities().len(), 2);
    assert!(
        verifies_under(&ca, &[&root]),
        "the old intermediate still signs"
    );

    // A follower only takes the material.
    let h2 = Harness::new();
    let mut config = h2.config();
    config.upstream = Some(material(&first, &[&root]));
    let mut follower = h2.open(config);
    assert!(
        follower
            .set_upstream(material(&root.intermediate(true), &[&root]), false)
            .unwrap()
            .is_empty()
    );
    assert_eq!(statuses(&follower), [AuthorityStatus::Active]);

    // Self-signed CAs have no upstream to renew.
    let plain = Harness::new();
    let mut own = plain.open(plain.config());
    assert!(own.set_upstream(material(&first, &[&root]), true).is_err());
}

fn openssl(args: &[&str], input: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn upstream_keys_in_sec1_and_pkcs1_load_like_pkcs8() {
    let root = TestCa::new("example.org");
    let sec1 = openssl(&["ec", "-outform", "PEM"], &root.key_pem());
    assert!(sec1.contains("BEGIN EC PRIVATE KEY"), "{sec1}");
    let cert = root.cert_pem();
    let from_sec1 = UpstreamCa::from_pem(cert.as_bytes(), sec1.as_bytes(), None).unwrap();
    assert!(
        from_sec1.same_as(
            &UpstreamCa::from_pem(cert.as_bytes(), root.key_pem().as_bytes(), None).unwrap()
        )
    );

    // An RSA upstream whose key is PKCS#1, as `openssl genrsa -traditional` and cert-manager
    // (encoding PKCS1) write it.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("rsa.pem");
    let crt = dir.path().join("rsa.crt");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=rsa-root",
        ])
        .args([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let pkcs1 = openssl(
        &["rsa", "-traditional"],
        &std::fs::read_to_string(&key).unwrap(),
    );
    assert!(pkcs1.contains("BEGIN RSA PRIVATE KEY"), "{pkcs1}");
    let cert = std::fs::read_to_string(&crt).unwrap();
    assert!(UpstreamCa::from_pem(cert.as_bytes(), pkcs1.as_bytes(), None).is_ok());

    // Keys that are neither refuse with the accepted encodings named.
    let hostile = pem_encode("DSA PRIVATE KEY", b"\x30\x03\x02\x01\x00");
    let err = UpstreamCa::from_pem(cert.as_bytes(), hostile.as_bytes(), None).unwrap_err();
    assert!(err.to_string().contains("EC PRIVATE KEY"), "{err}");
    let garbage = pem_encode("EC PRIVATE KEY", b"\x30\x03\x02\x01\x00");
    assert!(UpstreamCa::from_pem(cert.as_bytes(), garbage.as_bytes(), None).is_err());
}
