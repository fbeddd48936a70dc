//! The Secret key store against a fake API server that keeps one Secret with real
//! `resourceVersion` semantics (create → 409 if it exists, replace → 409 if stale).

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use signet_ca::{
    AuthorityKind, CaConfig, CertificateAuthority, KeyStore, KeyStoreError, ManualClock,
};
use signet_server::k8s::secret_store::SecretKeyStore;
use signet_spiffe::TrustDomain;
use signet_test_support::fake_cluster::{FakeCluster, status_error};

const PATH: &str = "/api/v1/namespaces/signet/secrets";

fn secret(cluster: &FakeCluster) -> Option<serde_json::Value> {
    cluster.get("v1/secrets", "signet", "signet-ca")
}

fn config() -> CaConfig {
    CaConfig::new(TrustDomain::new("example.org").unwrap())
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(signet_test_support::fixed_now()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_creates_the_secret_and_followers_load_it() {
    let server = FakeCluster::new();
    let client = server.client();
    let store = Arc::new(SecretKeyStore::new(client.clone(), "signet", "signet-ca").unwrap());
    assert!(store.load().unwrap().is_none());
    let mut leader = CertificateAuthority::open(config(), store.clone(), clock()).unwrap();
    {
        let secret = secret(&server).unwrap();
        assert_eq!(secret["type"], "Opaque");
        assert!(secret["data"]["ca-state.json"].is_string());
        assert_eq!(
            secret["metadata"]["annotations"]["signet.dev/ca-generation"],
            "1"
        );
    }
    assert!(server.requests().contains(&format!("POST {PATH}")));

    let follower_store = Arc::new(SecretKeyStore::new(client, "signet", "signet-ca").unwrap());
    let mut follower = CertificateAuthority::open_existing(config(), follower_store, clock())
        .unwrap()
        .unwrap();
    assert_eq!(follower.bundle().unwrap(), leader.bundle().unwrap());

    leader.prepare(AuthorityKind::X509).unwrap();
    assert!(follower.reload().unwrap());
    assert_eq!(follower.bundle().unwrap(), leader.bundle().unwrap());
    // The follower, now stale after another change, cannot write.
    leader.activate(AuthorityKind::X509).unwrap();
    assert!(matches!(
        follower.prepare(AuthorityKind::Jwt),
        Err(signet_ca::Error::KeyStore(KeyStoreError::Conflict { .. }))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_write_between_read_and_replace_is_a_conflict() {
    let server = FakeCluster::new();
    let store = Arc::new(SecretKeyStore::new(server.client(), "signet", "signet-ca").unwrap());
    let mut ca = CertificateAuthority::open(config(), store.clone(), clock()).unwrap();
    // Another writer replaces the Secret between our read and our replace.
    let armed = Arc::new(AtomicBool::new(true));
    server.intercept(move |call| {
        (call.method == "PUT" && armed.swap(false, Ordering::SeqCst))
            .then(|| status_error(409, "Conflict", "the object has been modified"))
    });
    assert!(matches!(
        ca.prepare(AuthorityKind::X509),
        Err(signet_ca::Error::KeyStore(KeyStoreError::Conflict { .. }))
    ));
    // Nothing was half-applied: the stored state is the old one and the CA can go on.
    assert_eq!(store.load().unwrap().unwrap().generation, ca.generation());
    ca.prepare(AuthorityKind::X509).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_unreachable_secrets_are_errors_never_replaced() {
    for data in [json!({}), json!({"ca-state.json": "bm90IGpzb24="})] {
        let server = FakeCluster::new();
        server.apply(
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "signet-ca", "namespace": "signet"}, "data": data}),
        );
        let store = Arc::new(SecretKeyStore::new(server.client(), "signet", "signet-ca").unwrap());
        assert!(matches!(
            CertificateAuthority::open(config(), store, clock()),
            Err(signet_ca::Error::KeyStore(KeyStoreError::Corrupt { .. }))
        ));
        assert!(
            !server
                .requests()
                .iter()
                .any(|c| c.starts_with("PUT") || c.starts_with("POST"))
        );
    }
    let forbidden = FakeCluster::new();
    forbidden.intercept(|_| Some(status_error(403, "Forbidden", "secrets is forbidden")));
    let store = Arc::new(SecretKeyStore::new(forbidden.client(), "signet", "signet-ca").unwrap());
    assert!(matches!(
        store.load(),
        Err(KeyStoreError::Unavailable { .. })
    ));
}
