//! The CA journal records start-up state and every rotation step in SQLite.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

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

fn entry(n: u32) -> signet_core::RegistrationEntry {
    signet_core::RegistrationEntry {
        id: signet_core::EntryId::new(format!("e{n}")),
        spiffe_id: signet_spiffe::SpiffeId::new(&format!("spiffe://example.org/w{n}")).unwrap(),
        parent_id: signet_spiffe::SpiffeId::new("spiffe://example.org/signet/agent/join/a")
            .unwrap(),
        selectors: signet_core::SelectorSet::parse_all(&["unix:uid:1000"]).unwrap(),
        x509_svid_ttl: std::time::Duration::from_secs(60),
        jwt_svid_ttl: std::time::Duration::from_secs(60),
        dns_names: vec![],
        federates_with: vec![],
        admin: false,
        downstream: false,
        hint: String::new(),
        revision: 1,
    }
}

fn recorded(dir: &std::path::Path) -> i64 {
    std::fs::read_to_string(dir.join("signet.db.generation"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn every_change_moves_the_generation_and_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let datastore = Datastore::open(&dir.path().join("signet.db")).unwrap();
    assert_eq!(datastore.generation().await.unwrap(), 0);
    assert_eq!(recorded(dir.path()), 0);
    datastore.put_entry(entry(1)).await.unwrap();
    datastore.put_entry(entry(2)).await.unwrap();
    datastore
        .delete_entry(signet_core::EntryId::new("e1"))
        .await
        .unwrap();
    datastore.journal_now("started").unwrap();
    assert_eq!(datastore.generation().await.unwrap(), 4);
    assert_eq!(recorded(dir.path()), 4);
    // Reads change nothing.
    datastore.list_entries().await.unwrap();
    assert_eq!(recorded(dir.path()), 4);
}

#[tokio::test]
async fn a_database_that_lost_its_wal_is_refused_until_loss_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signet.db");
    let datastore = Datastore::open(&path).unwrap();
    datastore.put_entry(entry(1)).await.unwrap();
    // What a backup of the main file alone holds while later commits sit in the WAL.
    let stale = dir.path().join("stale.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
    }
    std::fs::copy(&path, &stale).unwrap();
    datastore.put_entry(entry(2)).await.unwrap();
    datastore.put_entry(entry(3)).await.unwrap();
    drop(datastore);
    // The WAL is lost and the stale main file is what remains.
    std::fs::copy(&stale, &path).unwrap();
    let _ = std::fs::remove_file(dir.path().join("signet.db-wal"));
    let _ = std::fs::remove_file(dir.path().join("signet.db-shm"));

    let error = Datastore::open(&path).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(
            error,
            signet_server::datastore::DatastoreError::LostWrites {
                found: 1,
                recorded: 3,
                ..
            }
        ),
        "{message}"
    );
    assert!(message.contains("--accept-data-loss"), "{message}");
    assert!(message.contains("signet.db-wal"), "{message}");

    let accepted =
        Datastore::open_with(&path, signet_server::datastore::LostWrites::Accept).unwrap();
    assert_eq!(accepted.list_entries().await.unwrap().len(), 1);
    assert_eq!(
        recorded(dir.path()),
        1,
        "the remaining state is the new baseline"
    );
    drop(accepted);
    Datastore::open(&path).expect("accepted once, opens normally afterwards");
}

#[tokio::test]
async fn a_deleted_database_is_refused_but_a_deleted_record_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signet.db");
    let datastore = Datastore::open(&path).unwrap();
    datastore.put_entry(entry(1)).await.unwrap();
    drop(datastore);

    std::fs::remove_file(dir.path().join("signet.db.generation")).unwrap();
    drop(Datastore::open(&path).unwrap());
    assert_eq!(recorded(dir.path()), 1);

    for file in ["signet.db", "signet.db-wal", "signet.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(file));
    }
    let error = Datastore::open(&path).unwrap_err();
    assert!(
        matches!(
            error,
            signet_server::datastore::DatastoreError::LostWrites {
                found: 0,
                recorded: 1,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn a_garbled_generation_record_is_an_error_not_a_fresh_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signet.db");
    drop(Datastore::open(&path).unwrap());
    std::fs::write(dir.path().join("signet.db.generation"), "twelve\n").unwrap();
    let error = Datastore::open(&path).unwrap_err();
    assert!(
        error.to_string().contains("not a generation number"),
        "{error}"
    );
}
