//! Helpers shared by the CA integration tests.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail loudly"
)]
#![allow(dead_code, reason = "each test binary uses a subset")]

use std::process::Command;
use std::sync::Arc;
use std::time::SystemTime;

use signet_ca::{CaConfig, CertificateAuthority, FileKeyStore, ManualClock};
use signet_spiffe::TrustDomain;

pub fn start() -> SystemTime {
    signet_test_support::fixed_now()
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub clock: Arc<ManualClock>,
    pub store: Arc<FileKeyStore>,
}

impl Harness {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FileKeyStore::new(dir.path().join("ca.json")));
        Self {
            dir,
            clock: Arc::new(ManualClock::new(start())),
            store,
        }
    }

    pub fn config(&self) -> CaConfig {
        CaConfig::new(TrustDomain::new("example.org").unwrap())
    }

    pub fn open(&self, config: CaConfig) -> CertificateAuthority {
        CertificateAuthority::open(config, self.store.clone(), self.clock.clone()).unwrap()
    }
}

/// Runs `openssl verify -x509_strict` on a chain at a given time; returns (success, output).
pub fn openssl_verify(roots: &[Vec<u8>], chain: &[Vec<u8>], at: SystemTime) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, certs: &[Vec<u8>]| {
        let path = dir.path().join(name);
        let pem: String = certs
            .iter()
            .map(|c| signet_test_support::pem_encode("CERTIFICATE", c))
            .collect();
        std::fs::write(&path, pem).unwrap();
        path
    };
    let roots_path = write("roots.pem", roots);
    let leaf_path = write("leaf.pem", &chain[..1]);
    let mut cmd = Command::new("openssl");
    cmd.arg("verify")
        .arg("-x509_strict")
        .arg("-purpose")
        .arg("sslclient");
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    cmd.arg("-attime").arg(secs.to_string());
    cmd.arg("-CAfile").arg(&roots_path);
    if chain.len() > 1 {
        let untrusted = write("untrusted.pem", &chain[1..]);
        cmd.arg("-untrusted").arg(untrusted);
    }
    cmd.arg(&leaf_path);
    let output = cmd
        .output()
        .expect("openssl must be installed (.ci/run installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// An X509-SVID of `id` (10 minutes) minted from a fresh CSR.
pub fn mint(ca: &CertificateAuthority, id: &str) -> signet_ca::MintedX509Svid {
    let spiffe_id = signet_spiffe::SpiffeId::new(id).unwrap();
    let (csr, _key) = signet_test_support::csr_for(id);
    ca.mint_x509_svid(&signet_ca::X509SvidRequest {
        csr_der: &csr,
        spiffe_id: &spiffe_id,
        ttl: std::time::Duration::from_secs(600),
        dns_names: &[],
        csr_id_rule: signet_ca::CsrIdRule::Exact,
    })
    .unwrap()
}
