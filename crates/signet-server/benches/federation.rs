//! Federation propagation: a bundle change in trust domain A (a new X.509 authority prepared)
//! until B's server holds it, and until a workload of B (through its agent's Workload API,
//! followed by `signet-tls`) trusts it. Two servers and an agent in this process, release build,
//! loopback. A serves a refresh hint of 1 s, so the first figure is dominated by the hint (B
//! fetches at the hint, jittered ±10 %); the second is Signet's own push path.
//!
//! Run with `cargo bench -p signet-server --bench federation`.

#![expect(clippy::unwrap_used, reason = "benchmark binary")]

use std::time::{Duration, Instant};

use signet_agent::{AgentConfig, UnixAttestorConfig, WorkloadEndpoint};
use signet_proto::admin::admin_client::AdminClient;
use signet_proto::admin::{
    CreateEntryRequest, CreateJoinTokenRequest, SetFederationRequest, SetMode,
};
use signet_proto::agent::Entry;
use signet_server::ServerConfig;
use signet_server::federation::RefreshBounds;
use signet_server::federation::endpoint::{BundleEndpointConfig, EndpointTls};
use signet_spiffe::TrustDomain;
use signet_test_support::percentile;
use signet_tls::source::{SourceOptions, WorkloadSource};

const ROUNDS: usize = 30;

fn authorities(source: &WorkloadSource, td: &TrustDomain) -> usize {
    signet_tls::BundleSource::bundles(source.bundles().as_ref())
        .get(td)
        .map_or(0, |b| b.x509_authorities().len())
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let a_td = TrustDomain::new("a.example").unwrap();
    let mut a_config = ServerConfig::new(a_td.clone(), dir.path().join("a"));
    a_config.bind_address = "127.0.0.1:0".parse().unwrap();
    a_config.health_address = None;
    a_config.federation.bundle_endpoint = Some(BundleEndpointConfig {
        address: "127.0.0.1:0".parse().unwrap(),
        tls: EndpointTls::Spiffe,
        refresh_hint: Duration::from_secs(1),
    });
    let a = signet_server::start(a_config).await.unwrap();

    let mut b_config =
        ServerConfig::new(TrustDomain::new("b.example").unwrap(), dir.path().join("b"));
    b_config.bind_address = "127.0.0.1:0".parse().unwrap();
    b_config.health_address = None;
    b_config.federation.refresh = RefreshBounds {
        min: Duration::from_millis(500),
        ..RefreshBounds::default()
    };
    let b = signet_server::start(b_config).await.unwrap();
    let mut admin = AdminClient::new(
        signet_tls::source::unix_channel(b.admin_socket.clone())
            .await
            .unwrap(),
    );
    admin
        .set_federation(SetFederationRequest {
            trust_domain: "a.example".into(),
            bundle_endpoint_url: format!(
                "https://127.0.0.1:{}/",
                a.bundle_endpoint_address.unwrap().port()
            ),
            profile: "https_spiffe".into(),
            endpoint_spiffe_id: "spiffe://a.example/signet/server".into(),
            trust_domain_bundle: std::fs::read(&a.bundle_pem).unwrap(),
            mode: SetMode::Upsert as i32,
        })
        .await
        .unwrap();
    let token = admin
        .create_join_token(CreateJoinTokenRequest { ttl_seconds: 600 })
        .await
        .unwrap()
        .into_inner()
        .token;
    let agent = signet_agent::start(AgentConfig {
        trust_domain: TrustDomain::new("b.example").unwrap(),
        server_address: b.agent_address.to_string(),
        trust_bundle_path: b.bundle_pem.clone(),
        join_token: Some(token),
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
    admin
        .create_entry(CreateEntryRequest {
            entry: Some(Entry {
                spiffe_id: "spiffe://b.example/workload".into(),
                parent_id: agent.agent_id.to_string(),
                selectors: vec![format!("unix:uid:{}", rustix::process::getuid().as_raw())],
                federates_with: vec!["a.example".into()],
                ..Entry::default()
            }),
        })
        .await
        .unwrap();
    let mut options = SourceOptions::new(agent.socket_path.clone());
    options.watch_policy = false;
    let source = WorkloadSource::start(options).await.unwrap();
    while authorities(&source, &a_td) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut to_server = Vec::new();
    let mut to_workload = Vec::new();
    for round in 0..ROUNDS {
        let step = if round % 2 == 0 {
            "prepare"
        } else {
            "activate"
        };
        let before = a.authority.bundle().sequence();
        a.authority
            .force(signet_ca::AuthorityKind::X509, step)
            .unwrap();
        let changed = a.authority.bundle();
        if changed.sequence() == before {
            continue; // activation without a bundle change
        }
        let want = changed.x509_authorities().len();
        let started = Instant::now();
        loop {
            let held = b
                .federation
                .bundles()
                .get(&a_td)
                .map(|b| b.x509_authorities().len());
            if held == Some(want) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let at_server = started.elapsed();
        while authorities(&source, &a_td) != want {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        to_server.push(at_server);
        to_workload.push(started.elapsed() - at_server);
        // Let the next change start at a random point of B's refresh cycle.
        tokio::time::sleep(Duration::from_millis(137)).await;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("| measurement | result |");
    println!("|---|---|");
    println!(
        "| bundle change in A → held by B's server (refresh hint 1 s) | p50 {:.0} ms, p99 {:.0} ms (n = {}) |",
        ms(percentile(&mut to_server, 0.5)),
        ms(percentile(&mut to_server, 0.99)),
        to_server.len()
    );
    println!(
        "| held by B's server → trusted by a workload of B (agent push + Workload API) | p50 {:.2} ms, p99 {:.2} ms |",
        ms(percentile(&mut to_workload, 0.5)),
        ms(percentile(&mut to_workload, 0.99))
    );
    agent.shutdown();
    a.shutdown();
    b.shutdown();
}
