//! The Secret key store against a fake API server that keeps one Secret with real
//! `resourceVersion` semantics (create → 409 if it exists, replace → 409 if stale).

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use signet_ca::{
    AuthorityKind, CaConfig, CertificateAuthority, KeyStore, KeyStoreError, ManualClock,
};
use signet_server::k8s::secret_store::SecretKeyStore;
use signet_spiffe::TrustDomain;
use signet_test_support::k8s_mock::{Call, MockApiServer, Reply, status_error};

const PATH: &str = "/api/v1/namespaces/signet/secrets";

#[derive(Default)]
struct FakeSecrets {
    secret: Option<Value>,
    version: u64,
    fail_next_put_with_conflict: bool,
}

fn handler(state: Arc<Mutex<FakeSecrets>>) -> impl FnMut(&Call) -> Reply + Send {
    move |call| {
        let mut s = state.lock().unwrap();
        let path = call.uri.split('?').next().unwrap_or_default();
        match (call.method.as_str(), path) {
            ("GET", p) if p == format!("{PATH}/signet-ca") => match &s.secret {
                Some(secret) => (200, secret.clone()),
                None => status_error(404, "NotFound", "secrets \"signet-ca\" not found"),
            },
            ("POST", p) if p == PATH => {
                if s.secret.is_some() {
                    return status_error(
                        409,
                        "AlreadyExists",
                        "secrets \"signet-ca\" already exists",
                    );
                }
                s.version += 1;
                let mut secret = call.body.clone();
                secret["metadata"]["resourceVersion"] = json!(s.version.to_string());
                s.secret = Some(secret.clone());
                (201, secret)
            }
            ("PUT", p) if p == format!("{PATH}/signet-ca") => {
                let current = s
                    .secret
                    .as_ref()
                    .map(|c| c["metadata"]["resourceVersion"].clone());
                if s.fail_next_put_with_conflict
                    || current != Some(call.body["metadata"]["resourceVersion"].clone())
                {
                    s.fail_next_put_with_conflict = false;
                    return status_error(409, "Conflict", "the object has been modified");
                }
                s.version += 1;
                let mut secret = call.body.clone();
                secret["metadata"]["resourceVersion"] = json!(s.version.to_string());
                s.secret = Some(secret.clone());
                (200, secret)
            }
            _ => status_error(404, "NotFound", "unexpected"),
        }
    }
}

fn config() -> CaConfig {
    CaConfig::new(TrustDomain::new("example.org").unwrap())
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(signet_test_support::fixed_now()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_creates_the_secret_and_followers_load_it() {
    let state = Arc::new(Mutex::new(FakeSecrets::default()));
    let (client, server) = MockApiServer::start(handler(state.clone()));
    let store = Arc::new(SecretKeyStore::new(client.clone(), "signet", "signet-ca").unwrap());
    assert!(store.load().unwrap().is_none());
    let mut leader = CertificateAuthority::open(config(), store.clone(), clock()).unwrap();
    {
        let s = state.lock().unwrap();
        let secret = s.secret.as_ref().unwrap();
        assert_eq!(secret["type"], "Opaque");
        assert!(secret["data"]["ca-state.json"].is_string());
        assert_eq!(
            secret["metadata"]["annotations"]["signet.dev/ca-generation"],
            "1"
        );
    }
    assert!(server.call_lines().contains(&format!("POST {PATH}")));

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
    let state = Arc::new(Mutex::new(FakeSecrets::default()));
    let (client, _server) = MockApiServer::start(handler(state.clone()));
    let store = Arc::new(SecretKeyStore::new(client, "signet", "signet-ca").unwrap());
    let mut ca = CertificateAuthority::open(config(), store.clone(), clock()).unwrap();
    state.lock().unwrap().fail_next_put_with_conflict = true;
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
        let state = Arc::new(Mutex::new(FakeSecrets {
            secret: Some(
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "signet-ca", "namespace": "signet", "resourceVersion": "1"}, "data": data}),
            ),
            version: 1,
            fail_next_put_with_conflict: false,
        }));
        let (client, server) = MockApiServer::start(handler(state));
        let store = Arc::new(SecretKeyStore::new(client, "signet", "signet-ca").unwrap());
        assert!(matches!(
            CertificateAuthority::open(config(), store, clock()),
            Err(signet_ca::Error::KeyStore(KeyStoreError::Corrupt { .. }))
        ));
        assert!(
            !server
                .call_lines()
                .iter()
                .any(|c| c.starts_with("PUT") || c.starts_with("POST"))
        );
    }
    let (client, _server) =
        MockApiServer::start(|_| status_error(403, "Forbidden", "secrets is forbidden"));
    let store = Arc::new(SecretKeyStore::new(client, "signet", "signet-ca").unwrap());
    assert!(matches!(
        store.load(),
        Err(KeyStoreError::Unavailable { .. })
    ));
}
