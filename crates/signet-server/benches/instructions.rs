//! Hot paths for deterministic instruction counts (issue 19 item 3), run under
//! `valgrind --tool=callgrind --toggle-collect='*measured_*'` by `hack/instructions.sh`: only the
//! instructions executed inside a `measured_*` function are counted, and each one runs its path
//! [`ITERATIONS`] times, so the count per operation is the total divided by that.
//!
//! `instructions <path>`, path one of:
//! - `mint`: an X509-SVID minted from a CSR (P-256, 1 h) by the CA;
//! - `workload`: the FetchX509SVID message for a workload with 10 identities, from an agent cache
//!   of 1,010 entries (selector match, response built, protobuf-encoded);
//!
//! The controller's path (one pod change at 30,000 pods) is counted in the controller's own
//! benchmark, beside its fixture (`cargo bench -p signet-controller --bench controller --
//! instructions`).
//!
//! Without valgrind it just runs (a smoke test of the paths).

#![expect(clippy::unwrap_used, reason = "benchmark binary")]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prost::Message;
use signet_ca::{CaConfig, CertificateAuthority, CsrIdRule, FileKeyStore, SystemClock};
use signet_core::{RegistrationEntry, SelectorSet};
use signet_spiffe::{SpiffeId, TrustDomain};
use signet_test_support::workload_api::{SigningCa, entry_with_selector};

/// Repetitions inside each measured function.
pub const ITERATIONS: usize = 100;

fn ca(dir: &std::path::Path) -> CertificateAuthority {
    CertificateAuthority::open(
        CaConfig::new(TrustDomain::new("example.org").unwrap()),
        Arc::new(FileKeyStore::new(dir.join("ca.json"))),
        Arc::new(SystemClock),
    )
    .unwrap()
}

#[inline(never)]
fn measured_mint(ca: &CertificateAuthority, csrs: &[Vec<u8>], id: &SpiffeId) -> usize {
    let mut total = 0;
    for csr in csrs {
        let minted = ca
            .mint_x509_svid(&signet_ca::X509SvidRequest {
                csr_der: csr,
                spiffe_id: id,
                ttl: Duration::from_secs(3600),
                dns_names: &[],
                csr_id_rule: CsrIdRule::Exact,
            })
            .unwrap();
        total += minted.chain.len();
    }
    total
}

fn mint() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(dir.path());
    let id = SpiffeId::new("spiffe://example.org/ns/default/sa/web").unwrap();
    let csrs: Vec<Vec<u8>> = (0..ITERATIONS)
        .map(|_| signet_ca::csr::new_key_and_csr(Some(&id)).unwrap().1)
        .collect();
    // Warm up (first-use initialisation is not the steady path).
    measured_mint(&ca, &csrs[..1], &id);
    black_box(measured_mint(&ca, &csrs, &id));
}

#[inline(never)]
fn measured_workload(cache: &signet_agent::SvidCache, selectors: &SelectorSet) -> usize {
    let mut bytes = 0;
    let bundle = cache.bundle();
    for _ in 0..ITERATIONS {
        let identities = cache.identities(selectors);
        let response = signet_agent::x509_svid_response(bundle.as_deref(), &identities);
        bytes += response.encode_to_vec().len();
    }
    bytes
}

fn workload() {
    let ca = SigningCa::new();
    let cache = signet_agent::SvidCache::new();
    cache.set_bundle(ca.bundle());
    let mut entries: Vec<RegistrationEntry> = (0..10)
        .map(|i| entry_with_selector(&format!("mine-{i}"), "unix:uid:1000"))
        .collect();
    entries
        .extend((0..1000).map(|i| {
            entry_with_selector(&format!("other-{i}"), &format!("unix:uid:{}", 2000 + i))
        }));
    cache.replace_entries(entries.clone());
    for entry in &entries {
        let svid = ca.svid(entry);
        cache.store_svid(
            &entry.id,
            signet_agent::CachedSvid {
                svid: svid.svid,
                authority_id: svid.authority_id,
                refresh_at: SystemTime::now() + Duration::from_secs(300),
                revision: svid.revision,
            },
        );
    }
    let selectors: SelectorSet = [
        "unix:uid:1000".parse().unwrap(),
        "unix:gid:1000".parse().unwrap(),
    ]
    .into_iter()
    .collect();
    assert_eq!(cache.identities(&selectors).ready.len(), 10);
    black_box(measured_workload(&cache, &selectors));
}

fn main() {
    let path = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    match path.as_str() {
        "mint" => mint(),
        "workload" => workload(),
        // `cargo bench` passes `--bench`: run every path once as a smoke test.
        _ => {
            mint();
            workload();
            println!("instructions: every path ran; count them with hack/instructions.sh");
        }
    }
}
