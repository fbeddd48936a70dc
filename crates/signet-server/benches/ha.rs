//! Standalone HA on PostgreSQL (a real PostgreSQL started in a temporary directory, servers and
//! an agent in this process, release build, loopback):
//! 1. an entry created through server A → its SVID cached by an agent attached to server B
//!    (p50/p99 over 1,000 entries, created one after the other);
//! 2. database statements per second with 3 servers and 1,000 connected agents (sync streams
//!    open), at rest and during 100 entry changes per second (PostgreSQL's own counters:
//!    `pg_stat_database.xact_commit + xact_rollback` and `pg_stat_statements`-free);
//! 3. the resident memory of this process with 100,000 entries loaded in three servers.
//!
//! Run with `cargo bench -p signet-server --bench ha`.

#![expect(clippy::unwrap_used, reason = "benchmark binary")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use signet_agent::{AgentConfig, UnixAttestorConfig, WorkloadEndpoint};
use signet_core::EntryId;
use signet_proto::admin::admin_client::AdminClient;
use signet_proto::admin::{CreateEntryRequest, CreateJoinTokenRequest};
use signet_proto::agent::{Entry, SyncEntriesRequest};
use signet_server::datastore::postgres::PostgresConfig;
use signet_server::{CaStateProtection, RunningServer, ServerConfig};
use signet_spiffe::TrustDomain;
use signet_test_support::postgres::TestPostgres;
use signet_test_support::{percentile, rss_mib};
use tonic::transport::Channel;

const TD: &str = "example.org";

fn td() -> TrustDomain {
    TrustDomain::new(TD).unwrap()
}

async fn server(db: &TestPostgres, dir: &std::path::Path, name: &str) -> RunningServer {
    let mut config = ServerConfig::new(td(), dir.join(name));
    config.bind_address = "127.0.0.1:0".parse().unwrap();
    config.health_address = None;
    config.datastore = Some(PostgresConfig {
        url: db.url(),
        password: None,
        extra_roots: Vec::new(),
    });
    config.ca_state_protection = Some(CaStateProtection::from_key_file(&"5a".repeat(32)).unwrap());
    config.agent_api_bounds.max_connections = 20_000;
    config.agent_api_bounds.unauthenticated_per_source = 20_000;
    signet_server::start(config).await.unwrap()
}

async fn admin(server: &RunningServer) -> AdminClient<Channel> {
    AdminClient::new(
        signet_tls::source::unix_channel(server.admin_socket.clone())
            .await
            .unwrap(),
    )
}

async fn token(admin: &mut AdminClient<Channel>) -> String {
    admin
        .create_join_token(CreateJoinTokenRequest { ttl_seconds: 3600 })
        .await
        .unwrap()
        .into_inner()
        .token
}

/// Statements committed or rolled back in database `signet` so far.
fn transactions(db: &TestPostgres) -> i64 {
    db.psql("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'signet'")
        .parse()
        .unwrap()
}

fn rate(db: &TestPostgres, over: Duration) -> f64 {
    let before = transactions(db);
    std::thread::sleep(over);
    // psql's own query counts once; subtract it.
    (transactions(db) - before - 1) as f64 / over.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let db = TestPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let a = server(&db, dir.path(), "a").await;
    let b = server(&db, dir.path(), "b").await;
    let c = server(&db, dir.path(), "c").await;
    let mut on_a = admin(&a).await;

    // 1. Entry on A → SVID cached by an agent of B.
    let agent = signet_agent::start(AgentConfig {
        trust_domain: td(),
        server_address: b.agent_address.to_string(),
        trust_bundle_path: b.bundle_pem.clone(),
        join_token: Some(token(&mut on_a).await),
        kubernetes: None,
        data_dir: dir.path().join("agent"),
        workload: WorkloadEndpoint::new(dir.path().join("sockets").join("api.sock")),
        unix_attestor: UnixAttestorConfig::default(),
        health_address: None,
        taint_resign_window: signet_agent::DEFAULT_TAINT_RESIGN_WINDOW,
        availability_target: std::time::Duration::ZERO,
        persist_svids: false,
    })
    .await
    .unwrap();
    let mut latencies = Vec::with_capacity(1000);
    for i in 0..1000 {
        let started = Instant::now();
        let created = on_a
            .create_entry(CreateEntryRequest {
                entry: Some(Entry {
                    spiffe_id: format!("spiffe://{TD}/w/{i}"),
                    parent_id: agent.agent_id.to_string(),
                    selectors: vec![format!("unix:uid:{}", 100_000 + i)],
                    ..Entry::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
        let id = EntryId::new(created.id);
        while agent.cache.authority_of(&id).is_none() {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        latencies.push(started.elapsed());
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "entry created on A → SVID cached by an agent of B (n = 1000): p50 {:.2} ms, p99 {:.2} ms",
        ms(percentile(&mut latencies, 0.50)),
        ms(percentile(&mut latencies, 0.99))
    );

    // 2. 1,000 agents with open sync streams, spread over the three servers.
    let servers = [&a, &b, &c];
    let mut streams = Vec::with_capacity(1000);
    let started = Instant::now();
    for i in 0..1000 {
        let server = servers[i % 3];
        let identity = signet_agent::agent_svid::attest_with_join_token(
            &server.agent_address.to_string(),
            signet_agent::agent_svid::read_bundle_file(&server.bundle_pem, &td()).unwrap(),
            signet_core::server_id(&td()).unwrap(),
            &token(&mut on_a).await,
        )
        .await
        .unwrap();
        let mut client =
            signet_test_support::agent_client(&server.agent_address.to_string(), &identity);
        let stream = client
            .sync_entries(SyncEntriesRequest {})
            .await
            .unwrap()
            .into_inner();
        streams.push((client, stream));
    }
    println!(
        "1000 agents attested and syncing across 3 servers in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // PostgreSQL flushes a backend's statistics up to 10 s late: let the attestation burst settle.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let db = Arc::new(db);
    let idle = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || rate(&db, Duration::from_secs(20)))
            .await
            .unwrap()
    };
    println!("database transactions/s at rest, 3 servers, 1000 agents: {idle:.1}");

    let changing = tokio::spawn({
        let socket = a.admin_socket.clone();
        let parent = agent.agent_id.to_string();
        async move {
            let mut admin =
                AdminClient::new(signet_tls::source::unix_channel(socket).await.unwrap());
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            for i in 0..1500 {
                tick.tick().await;
                admin
                    .create_entry(CreateEntryRequest {
                        entry: Some(Entry {
                            spiffe_id: format!("spiffe://{TD}/churn/{i}"),
                            parent_id: parent.clone(),
                            selectors: vec![format!("unix:uid:{}", 200_000 + i)],
                            ..Entry::default()
                        }),
                    })
                    .await
                    .unwrap();
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let busy = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || rate(&db, Duration::from_secs(10)))
            .await
            .unwrap()
    };
    changing.await.unwrap();
    println!(
        "database transactions/s during 100 entry changes/s (plus the agent of B re-signing): {busy:.1}"
    );
    drop(streams);
    agent.shutdown();

    // 3. Memory with 100,000 entries in each of the three servers (written straight into the
    // database, then one resync notification).
    let before = rss_mib(None);
    let template = a.entries.all().first().cloned().unwrap();
    let mut batch = Vec::new();
    for i in 0..100_000 {
        let mut entry = (*template).clone();
        entry.id = EntryId::new(format!("bulk-{i}"));
        entry.spiffe_id = signet_spiffe::SpiffeId::new(&format!("spiffe://{TD}/bulk/{i}")).unwrap();
        let body = serde_json::to_string(&entry).unwrap().replace('\'', "''");
        batch.push(format!(
            "('{}', '{}', '{}', '{body}', 1)",
            entry.id, entry.spiffe_id, entry.parent_id
        ));
        if batch.len() == 200 {
            db.psql(&format!(
                "INSERT INTO entries (id, spiffe_id, parent_id, body, revision) VALUES {}",
                batch.join(",")
            ));
            batch.clear();
        }
    }
    db.psql("SELECT pg_notify('signet_changes', 'resync')");
    let loaded = Instant::now();
    while servers.iter().any(|s| s.entries.len() < 100_000) {
        assert!(
            loaded.elapsed() < Duration::from_secs(300),
            "servers did not load the entries"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "100,000 entries in each of 3 servers: RSS of the process {:.0} MiB (was {:.0} MiB), \
         {:.0} MiB per server; resync took {:.1} s",
        rss_mib(None),
        before,
        (rss_mib(None) - before) / 3.0,
        loaded.elapsed().as_secs_f64()
    );
    for server in [a, b, c] {
        server.shutdown();
    }
}
