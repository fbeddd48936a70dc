//! P1 benchmark (DESIGN §15): X509-SVIDs minted per second per core from CSRs (CSR parsing and
//! signature verification included), JWT-SVIDs per second, and this machine's raw ECDSA P-256
//! sign and verify rates, measured in the same run with `openssl speed` and with aws-lc-rs.
//!
//! Run with `hack/bench-ca.sh` or `cargo bench -p signet-ca --bench mint`.

#![expect(clippy::unwrap_used, reason = "benchmark binary")]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, UnparsedPublicKey};
use signet_ca::{
    CaConfig, CertificateAuthority, FileKeyStore, JwtSvidRequest, SystemClock, X509SvidRequest,
};
use signet_spiffe::{SpiffeId, TrustDomain};

const RUN: Duration = Duration::from_secs(3);
const ID: &str = "spiffe://example.org/ns/bench/sa/workload";

/// Runs `op` repeatedly for `RUN` on this thread; returns operations per second.
fn rate(mut op: impl FnMut(usize)) -> f64 {
    for i in 0..50 {
        op(i);
    }
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < RUN {
        for _ in 0..20 {
            op(n);
            n += 1;
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// `openssl speed -seconds 3 ecdsap256`: (sign/s, verify/s).
fn openssl_speed() -> Option<(f64, f64)> {
    let output = Command::new("openssl")
        .args(["speed", "-seconds", "3", "ecdsap256"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("ecdsa") && l.contains("nistp256"))?;
    let numbers: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let verify = *numbers.last()?;
    let sign = *numbers.get(numbers.len().checked_sub(2)?)?;
    Some((sign, verify))
}

fn combined(sign: f64, verify: f64) -> f64 {
    1.0 / (1.0 / sign + 1.0 / verify)
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileKeyStore::new(dir.path().join("ca.json")));
    let config = CaConfig::new(TrustDomain::new("example.org").unwrap());
    let ca = CertificateAuthority::open(config, store, Arc::new(SystemClock)).unwrap();
    let id = SpiffeId::new(ID).unwrap();

    eprintln!("preparing 512 CSRs with distinct P-256 keys...");
    let csrs: Vec<Vec<u8>> = (0..512)
        .map(|_| signet_test_support::csr_for(ID).0)
        .collect();

    eprintln!("measuring X509-SVID minting from CSRs ({RUN:?})...");
    let x509 = rate(|i| {
        let request = X509SvidRequest {
            csr_der: &csrs[i % csrs.len()],
            spiffe_id: &id,
            ttl: Duration::from_secs(3600),
            dns_names: &[],
            csr_id_rule: signet_ca::CsrIdRule::Exact,
        };
        std::hint::black_box(ca.mint_x509_svid(&request).unwrap());
    });

    eprintln!("measuring JWT-SVID minting ({RUN:?})...");
    let audience = vec!["bench".to_owned()];
    let jwt = rate(|_| {
        let request = JwtSvidRequest {
            spiffe_id: &id,
            audience: &audience,
            ttl: Duration::from_secs(300),
            issuer: None,
        };
        std::hint::black_box(ca.mint_jwt_svid(&request).unwrap());
    });

    eprintln!("measuring raw aws-lc-rs ECDSA P-256 ({RUN:?} each)...");
    let rng = SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
        .unwrap();
    let message = [7u8; 128];
    let sig = key.sign(&rng, &message).unwrap();
    let public = UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_ASN1,
        key.public_key().as_ref().to_vec(),
    );
    let lc_sign = rate(|_| {
        std::hint::black_box(key.sign(&rng, &message).unwrap());
    });
    let lc_verify = rate(|_| {
        public.verify(&message, sig.as_ref()).unwrap();
    });

    eprintln!("running openssl speed -seconds 3 ecdsap256...");
    let openssl = openssl_speed();

    println!("| measurement | rate (per second, one core) |");
    println!("|---|---|");
    println!("| X509-SVIDs minted from CSRs (parse + verify CSR, sign leaf) | {x509:.0} |");
    println!("| JWT-SVIDs minted (ES256) | {jwt:.0} |");
    println!("| aws-lc-rs ECDSA P-256 sign | {lc_sign:.0} |");
    println!("| aws-lc-rs ECDSA P-256 verify | {lc_verify:.0} |");
    println!(
        "| aws-lc-rs sign+verify pair | {:.0} |",
        combined(lc_sign, lc_verify)
    );
    match openssl {
        Some((sign, verify)) => {
            let raw = combined(sign, verify);
            println!("| openssl speed ecdsap256 sign | {sign:.0} |");
            println!("| openssl speed ecdsap256 verify | {verify:.0} |");
            println!("| openssl sign+verify pair | {raw:.0} |");
            println!();
            let ratio = 100.0 * x509 / raw;
            let verdict = if ratio >= 60.0 { "meets" } else { "MISSES" };
            println!(
                "P1: X509-SVID minting = {ratio:.0} % of the raw OpenSSL P-256 sign+verify rate ({verdict} the 60 % target)"
            );
        }
        None => println!(
            "\nP1: openssl not found or its output not understood; install Debian's openssl to compute the ratio"
        ),
    }
}
