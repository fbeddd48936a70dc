//! The CA journal records start-up state and every rotation step in SQLite.

use std::sync::Arc;

use signet_ca::{AuthorityKind, CaConfig, CertificateAuthority, FileKeyStore, SystemClock};
use signet_server::authority::AuthorityService;
use signet_server::datastore::Datastore;
use signet_spiffe::TrustDomain;

#[tokio::test]
async fn rotation_steps_are_journaled_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let datastore = Datastore::open(&dir.path().join("signet.db")).unwrap();
    let store = Arc::new(FileKeyStore::new(dir.path().join("ca.json")));
    let config = CaConfig::new(TrustDomain::new("example.org").unwrap());
    let ca = CertificateAuthority::open(config, store, Arc::new(SystemClock)).unwrap();
    let service =
        AuthorityService::new(ca, Some(dir.path().to_owned()), Some(datastore.clone())).unwrap();
    service.force(AuthorityKind::X509, "prepare").unwrap();
    service.force(AuthorityKind::X509, "activate").unwrap();
    assert!(
        service.force(AuthorityKind::X509, "activate").is_err(),
        "nothing prepared any more"
    );
    assert!(service.force(AuthorityKind::X509, "bogus").is_err());
    let events = datastore.journal_tail(10).await.unwrap();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(
        events[0].starts_with("started: bundle sequence"),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.starts_with("Prepared(")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.starts_with("Activated(")),
        "{events:?}"
    );
    // The bundle files follow the prepared authority (two roots now).
    let pem = std::fs::read_to_string(dir.path().join("bundle.pem")).unwrap();
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2);
    drop(datastore);
    let reopened = Datastore::open(&dir.path().join("signet.db")).unwrap();
    assert_eq!(reopened.journal_tail(10).await.unwrap(), events);
}

#[test]
fn a_database_from_a_newer_signet_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signet.db");
    drop(Datastore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = Datastore::open(&path).unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
}
