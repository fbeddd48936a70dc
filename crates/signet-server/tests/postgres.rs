//! Several servers on one real PostgreSQL (started by the test in a temporary directory): a
//! change made through one server reaches the others by LISTEN/NOTIFY, a join token is redeemed
//! once across servers, a ban on one holds on the others, exactly one server rotates the CA and
//! the others adopt it, the CA keys are sealed in the database, and a database restart is
//! followed by a resync.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::time::{Duration, Instant};

use signet_agent::agent_svid;
use signet_proto::admin::admin_client::AdminClient;
use signet_proto::admin::{AgentRequest, CreateEntryRequest, CreateJoinTokenRequest};
use signet_proto::agent::agent_service_client::AgentServiceClient;
use signet_proto::agent::{Entry, SignX509SvidsRequest};
use signet_server::datastore::postgres::PostgresConfig;
use signet_server::{CaStateProtection, RunningServer, ServerConfig};
use signet_spiffe::{SpiffeId, TrustDomain};
use signet_test_support::postgres::TestPostgres;
use tonic::transport::Channel;

const TD: &str = "example.org";

fn td() -> TrustDomain {
    TrustDomain::new(TD).unwrap()
}

fn config(db: &TestPostgres, dir: &std::path::Path, name: &str) -> ServerConfig {
    let mut config = ServerConfig::new(td(), dir.join(name));
    config.bind_address = "127.0.0.1:0".parse().unwrap();
    config.health_address = None;
    config.datastore = Some(PostgresConfig {
        url: db.url(),
        password: None,
        extra_roots: Vec::new(),
    });
    config.ca_state_protection = Some(CaStateProtection::from_key_file(&"5a".repeat(32)).unwrap());
    config
}

async fn admin(server: &RunningServer) -> AdminClient<Channel> {
    AdminClient::new(
        signet_tls::source::unix_channel(server.admin_socket.clone())
            .await
            .unwrap(),
    )
}

async fn token(server: &RunningServer) -> String {
    admin(server)
        .await
        .create_join_token(CreateJoinTokenRequest { ttl_seconds: 600 })
        .await
        .unwrap()
        .into_inner()
        .token
}

async fn attest(
    server: &RunningServer,
    token: &str,
) -> Result<agent_svid::PersistedIdentity, signet_agent::AgentError> {
    let bootstrap = agent_svid::read_bundle_file(&server.bundle_pem, &td()).unwrap();
    agent_svid::attest_with_join_token(
        &server.agent_address.to_string(),
        bootstrap,
        signet_core::server_id(&td()).unwrap(),
        token,
    )
    .await
}

fn client(
    server: &RunningServer,
    identity: &agent_svid::PersistedIdentity,
) -> AgentServiceClient<Channel> {
    signet_test_support::agent_client(&server.agent_address.to_string(), identity)
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_sharing_postgres_see_each_others_changes_at_once() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let db = TestPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let a = signet_server::start(config(&db, dir.path(), "a"))
        .await
        .unwrap();
    let b = signet_server::start(config(&db, dir.path(), "b"))
        .await
        .unwrap();
    let c = signet_server::start(config(&db, dir.path(), "c"))
        .await
        .unwrap();
    // One CA, in the database, sealed.
    assert_eq!(a.authority.bundle(), b.authority.bundle());
    assert_eq!(a.authority.bundle(), c.authority.bundle());
    let stored = db.psql("SELECT encode(state, 'escape') FROM ca_state");
    assert!(stored.starts_with("SGN1"), "the CA state is sealed");
    assert!(!stored.contains("private_key"));

    // A join token made on A is redeemed on B, once; the same token on C then fails.
    let joined = token(&a).await;
    let identity = attest(&b, &joined).await.unwrap();
    assert!(
        attest(&c, &joined).await.is_err(),
        "a join token is single-use across servers"
    );
    let agent_id = identity.svid.spiffe_id().to_string();

    // An entry created through A is in B's and C's index within milliseconds.
    let entry = admin(&a)
        .await
        .create_entry(CreateEntryRequest {
            entry: Some(Entry {
                spiffe_id: format!("spiffe://{TD}/api"),
                parent_id: agent_id.clone(),
                selectors: vec!["unix:uid:4242".into()],
                ..Entry::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let id = signet_core::EntryId::new(entry.id.clone());
    let took = eventually("the entry on B and C", || {
        b.entries.get(&id).is_some() && c.entries.get(&id).is_some()
    })
    .await;
    println!("entry created on A → in B's and C's index: {took:?}");

    // The agent attested on B signs its entry through C.
    let mut on_c = client(&c, &identity);
    let (_, csr) = signet_ca::csr::new_key_and_csr(Some(
        &SpiffeId::new(&format!("spiffe://{TD}/api")).unwrap(),
    ))
    .unwrap();
    let signed = on_c
        .sign_x509_svids(SignX509SvidsRequest {
            requests: vec![signet_proto::agent::SvidRequest {
                entry_id: entry.id.clone(),
                csr,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        signed.results[0].error.is_empty(),
        "{:?}",
        signed.results[0].error
    );

    // Banned through A: refused by C.
    admin(&a)
        .await
        .ban_agent(AgentRequest {
            spiffe_id: agent_id.clone(),
        })
        .await
        .unwrap();
    let banned_id = SpiffeId::new(&agent_id).unwrap();
    eventually("C to know the ban", || c.agents_banned(&banned_id)).await;
    let refused = on_c
        .sign_x509_svids(SignX509SvidsRequest { requests: vec![] })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    // Deleted through B: gone from A.
    admin(&b)
        .await
        .delete_entry(signet_proto::admin::DeleteEntryRequest {
            id: entry.id.clone(),
        })
        .await
        .unwrap();
    eventually("A to drop the entry", || a.entries.get(&id).is_none()).await;

    // Exactly one server rotates; a rotation it stores reaches the others.
    let leaders: Vec<&RunningServer> = [&a, &b, &c]
        .into_iter()
        .filter(|s| s.is_leading())
        .collect();
    assert_eq!(leaders.len(), 1, "exactly one server holds the CA lock");
    leaders[0]
        .authority
        .force(signet_ca::AuthorityKind::X509, "prepare")
        .unwrap();
    let bundle = leaders[0].authority.bundle();
    eventually("every server to adopt the prepared authority", || {
        [&a, &b, &c].iter().all(|s| s.authority.bundle() == bundle)
    })
    .await;

    // The servers' notification connections are cut while A keeps writing: each reconnects and
    // resyncs, so nothing written meanwhile is missed.
    let cut = db.psql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'",
    );
    assert_eq!(cut, "3", "one notification connection per server");
    let mut written = Vec::new();
    for i in 0..20 {
        let created = admin(&a)
            .await
            .create_entry(CreateEntryRequest {
                entry: Some(Entry {
                    spiffe_id: format!("spiffe://{TD}/during-cut/{i}"),
                    parent_id: agent_id.clone(),
                    selectors: vec![format!("unix:uid:{}", 5000 + i)],
                    ..Entry::default()
                }),
            })
            .await
            .unwrap();
        written.push(signet_core::EntryId::new(created.into_inner().id));
    }
    eventually(
        "B and C to resync what was written while they were deaf",
        || {
            written
                .iter()
                .all(|id| b.entries.get(id).is_some() && c.entries.get(id).is_some())
        },
    )
    .await;

    // A database restart under load: every write acknowledged before, during or after it
    // reaches every server.
    let load = {
        let socket = a.admin_socket.clone();
        let agent_id = agent_id.clone();
        tokio::spawn(async move {
            let mut admin =
                AdminClient::new(signet_tls::source::unix_channel(socket).await.unwrap());
            let mut acknowledged = Vec::new();
            for i in 0..400 {
                let created = admin
                    .create_entry(CreateEntryRequest {
                        entry: Some(Entry {
                            spiffe_id: format!("spiffe://{TD}/load/{i}"),
                            parent_id: agent_id.clone(),
                            selectors: vec![format!("unix:uid:{}", 10_000 + i)],
                            ..Entry::default()
                        }),
                    })
                    .await;
                if let Ok(created) = created {
                    acknowledged.push(signet_core::EntryId::new(created.into_inner().id));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            acknowledged
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    db.restart();
    let acknowledged = load.await.unwrap();
    assert!(
        acknowledged.len() > 100,
        "the load ran: {}",
        acknowledged.len()
    );
    eventually("every acknowledged write on every server", || {
        acknowledged
            .iter()
            .all(|id| b.entries.get(id).is_some() && c.entries.get(id).is_some())
    })
    .await;
    let created = loop {
        match admin(&a)
            .await
            .create_entry(CreateEntryRequest {
                entry: Some(Entry {
                    spiffe_id: format!("spiffe://{TD}/after-restart"),
                    parent_id: agent_id.clone(),
                    selectors: vec!["unix:uid:4243".into()],
                    ..Entry::default()
                }),
            })
            .await
        {
            Ok(created) => break created.into_inner(),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let id = signet_core::EntryId::new(created.id);
    eventually("B and C to see an entry made after the restart", || {
        b.entries.get(&id).is_some() && c.entries.get(&id).is_some()
    })
    .await;
    for server in [a, b, c] {
        server.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_ca_keys_in_the_database_need_an_explicit_choice() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let db = TestPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let mut unsealed = config(&db, dir.path(), "a");
    unsealed.ca_state_protection = None;
    let error = signet_server::start(unsealed)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("--datastore-ca-key-file"), "{error}");

    // Another server with a different key cannot read the sealed CA.
    let a = signet_server::start(config(&db, dir.path(), "a"))
        .await
        .unwrap();
    let mut wrong = config(&db, dir.path(), "b");
    wrong.ca_state_protection = Some(CaStateProtection::from_key_file(&"77".repeat(32)).unwrap());
    let error = signet_server::start(wrong).await.unwrap_err().to_string();
    assert!(error.contains("does not decrypt"), "{error}");
    a.shutdown();
}

/// `signet datastore migrate` copies a CA into an empty database and never overwrites another
/// one: a second deployment's CA migrated into the same database is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_never_overwrites_another_ca_in_the_database() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let db = TestPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let sqlite_deployment = |name: &str| {
        let mut config = ServerConfig::new(td(), dir.path().join(name));
        config.bind_address = "127.0.0.1:0".parse().unwrap();
        config.health_address = None;
        config
    };
    for name in ["first", "second"] {
        signet_server::start(sqlite_deployment(name))
            .await
            .unwrap()
            .shutdown();
    }
    let target = PostgresConfig {
        url: db.url(),
        password: None,
        extra_roots: Vec::new(),
    };
    let key = || CaStateProtection::from_key_file(&"5a".repeat(32)).unwrap();
    let migrate = async |name: &str| {
        let server_dir = dir.path().join(name);
        signet_server::migrate::sqlite_to_postgres(
            &server_dir.join("signet.db"),
            &server_dir.join("ca-keys.json"),
            target.clone(),
            key(),
            &|_, _, _| {},
        )
        .await
    };
    let report = migrate("first").await.unwrap();
    assert!(migrate("first").await.unwrap().ca_state.contains("already"));
    assert!(report.ca_state.contains("copied"), "{}", report.ca_state);
    assert!(report.verified());
    let refused = migrate("second").await.unwrap_err().to_string();
    assert!(refused.contains("another CA state"), "{refused}");
    let missing = signet_server::migrate::sqlite_to_postgres(
        &dir.path().join("nowhere.db"),
        &dir.path().join("ca-keys.json"),
        target.clone(),
        key(),
        &|_, _, _| {},
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(missing.contains("does not exist"), "{missing}");
}
