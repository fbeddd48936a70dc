//! Taint → re-sign: one agent holds 1,000 X509-SVIDs signed by the active authority; the CA is
//! rotated and the old authority tainted. Measured from the taint until each SVID is replaced by
//! one of the new authority (p50, p99, all 1,000), with a re-sign window of 0 s (as fast as the
//! server signs) and of 5 s (the jitter spreading the load). Server and agent in this process,
//! release build, loopback.
//!
//! Run with `cargo bench -p signet-server --bench taint`.

#![expect(clippy::unwrap_used, reason = "benchmark binary")]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use signet_agent::{AgentConfig, UnixAttestorConfig, WorkloadEndpoint};
use signet_ca::AuthorityKind;
use signet_core::EntryId;
use signet_proto::admin::admin_client::AdminClient;
use signet_proto::admin::{CreateEntryRequest, CreateJoinTokenRequest};
use signet_proto::agent::Entry;
use signet_server::ServerConfig;
use signet_spiffe::TrustDomain;
use signet_test_support::percentile;

const SVIDS: usize = 1000;

async fn run(window: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let td = TrustDomain::new("example.org").unwrap();
    let mut config = ServerConfig::new(td.clone(), dir.path().join("server"));
    config.bind_address = "127.0.0.1:0".parse().unwrap();
    config.health_address = None;
    let server = signet_server::start(config).await.unwrap();
    let mut admin = AdminClient::new(
        signet_tls::source::unix_channel(server.admin_socket.clone())
            .await
            .unwrap(),
    );
    let token = admin
        .create_join_token(CreateJoinTokenRequest { ttl_seconds: 600 })
        .await
        .unwrap()
        .into_inner()
        .token;
    let agent = signet_agent::start(AgentConfig {
        trust_domain: td,
        server_address: server.agent_address.to_string(),
        trust_bundle_path: server.bundle_pem.clone(),
        join_token: Some(token),
        kubernetes: None,
        data_dir: dir.path().join("agent"),
        workload: WorkloadEndpoint::new(dir.path().join("sockets").join("api.sock")),
        unix_attestor: UnixAttestorConfig::default(),
        health_address: None,
        taint_resign_window: window,
        availability_target: std::time::Duration::ZERO,
        persist_svids: false,
    })
    .await
    .unwrap();
    let mut ids = Vec::with_capacity(SVIDS);
    for i in 0..SVIDS {
        let created = admin
            .create_entry(CreateEntryRequest {
                entry: Some(Entry {
                    spiffe_id: format!("spiffe://example.org/workload/{i}"),
                    parent_id: agent.agent_id.to_string(),
                    selectors: vec![format!("unix:uid:{}", 100_000 + i)],
                    ..Entry::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
        ids.push(EntryId::new(created.id));
    }
    while agent.cache.counts().1 < SVIDS {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let old = ids
        .first()
        .and_then(|id| agent.cache.authority_of(id))
        .unwrap();
    server
        .authority
        .force(AuthorityKind::X509, "prepare")
        .unwrap();
    server
        .authority
        .force(AuthorityKind::X509, "activate")
        .unwrap();

    let tainted = Instant::now();
    server
        .authority
        .command(|ca| ca.taint(AuthorityKind::X509, &old))
        .unwrap();
    let mut replaced: HashMap<EntryId, Duration> = HashMap::with_capacity(SVIDS);
    while replaced.len() < SVIDS {
        for id in &ids {
            if !replaced.contains_key(id) && agent.cache.authority_of(id).is_some_and(|a| a != old)
            {
                replaced.insert(id.clone(), tainted.elapsed());
            }
        }
        assert!(
            tainted.elapsed() < Duration::from_secs(120),
            "re-signing stalled"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut times: Vec<Duration> = replaced.into_values().collect();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "taint → {SVIDS} SVIDs re-signed, window {:>2} s: p50 {:>7.1} ms  p99 {:>7.1} ms  all {:>7.1} ms",
        window.as_secs(),
        ms(percentile(&mut times, 0.50)),
        ms(percentile(&mut times, 0.99)),
        ms(times[times.len() - 1]),
    );
    agent.shutdown();
    server.shutdown();
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    run(Duration::ZERO).await;
    run(Duration::from_secs(5)).await;
}
