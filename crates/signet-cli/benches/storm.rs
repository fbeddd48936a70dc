//! Reconnect storms (issue 18 item 3, R6), against real release-built `signet server` and
//! `signet agent` processes:
//!
//! 1. **5,000 agents reconnecting at once.** 5,000 agents are attested with join tokens, each
//!    with one entry, and hold their entry sync streams. The server is killed (SIGKILL) and
//!    started again: every agent reconnects at the same moment, as after a server restart or a
//!    healed partition. Measured: time from the server's start until every agent has a full
//!    snapshot again, the server's peak and settled RSS, its CPU seconds, and how many calls
//!    admission control told to come back later. The "agents" are lightweight: agent API
//!    clients in this process that reconnect exactly as `signet agent` does (jittered
//!    exponential backoff from 200 ms, honouring the server's `grpc-retry-pushback-ms`); one
//!    real `signet agent` runs beside them.
//! 2. **5,000 Workload API clients reconnecting after an agent restart.** 5,000 clients hold
//!    FetchX509SVID streams on the agent's socket; the agent is killed (SIGKILL) and started
//!    again (the server stays up). Measured: time from the agent's start until every client
//!    has an SVID again, the agent's peak and settled RSS.
//!
//! All clients come from one machine, so the per-source and per-uid connection caps (which
//! stop one node or one uid from flooding) are raised to let 5,000 through; everything else is
//! at its defaults. Run with `cargo bench -p signet-cli --bench storm` (AGENTS=, CLIENTS= to
//! change the counts).

#![expect(clippy::unwrap_used, reason = "benchmark binary")]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use signet_core::Backoff;
use signet_proto::admin::admin_client::AdminClient;
use signet_proto::admin::{CreateEntryRequest, CreateJoinTokenRequest};
use signet_proto::agent::sync_entries_response::Update;
use signet_proto::agent::{Entry, SyncEntriesRequest};
use signet_proto::workload::X509svidRequest;
use signet_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use signet_spiffe::TrustDomain;
use signet_test_support::{cpu_seconds, peak_rss_mib, rss_mib};
use tonic::transport::Channel;

const TD: &str = "example.org";

fn count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn uds(path: &Path) -> Result<Channel, signet_tls::source::SourceError> {
    signet_tls::source::unix_channel(path.to_owned()).await
}

fn workload_request() -> tonic::Request<X509svidRequest> {
    let mut r = tonic::Request::new(X509svidRequest {});
    r.metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    r
}

fn metric(port: u16, prefix: &str) -> f64 {
    let (_, body) = common::http_get(port, "/metrics");
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        + 0.0
}

/// The moments each client last (re)gained what it holds: a snapshot, an SVID.
#[derive(Default)]
struct Progress {
    at: Mutex<Vec<Option<Instant>>>,
    refusals_seen: AtomicUsize,
}

impl Progress {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            at: Mutex::new(vec![None; n]),
            refusals_seen: AtomicUsize::new(0),
        })
    }

    fn mark(&self, i: usize) {
        self.at.lock().unwrap()[i] = Some(Instant::now());
    }

    fn since(&self, t: Instant) -> usize {
        self.at
            .lock()
            .unwrap()
            .iter()
            .filter(|at| at.is_some_and(|at| at >= t))
            .count()
    }

    fn latest(&self) -> Option<Instant> {
        self.at.lock().unwrap().iter().flatten().max().copied()
    }
}

/// One lightweight agent: holds its sync stream, reconnecting as `signet agent` does.
async fn light_agent(
    index: usize,
    client: signet_proto::agent::agent_service_client::AgentServiceClient<Channel>,
    progress: Arc<Progress>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let mut client = client.clone();
        let result = async {
            let mut stream = client
                .sync_entries(SyncEntriesRequest {})
                .await?
                .into_inner();
            while let Some(message) = stream.message().await? {
                backoff.reset();
                if let Some(Update::Snapshot(chunk)) = message.update
                    && chunk.last
                {
                    progress.mark(index);
                }
            }
            Ok::<(), tonic::Status>(())
        }
        .await;
        let delay = match result {
            Ok(()) => backoff.next_delay(),
            Err(status) => {
                let error = signet_agent::AgentError::from_status(status);
                if error.retry_after().is_some() {
                    progress.refusals_seen.fetch_add(1, Ordering::Relaxed);
                }
                error.retry_after().unwrap_or_else(|| backoff.next_delay())
            }
        };
        tokio::time::sleep(delay).await;
    }
}

/// One Workload API client: holds a FetchX509SVID stream, reconnecting with jittered backoff
/// as SPIFFE client libraries do.
async fn workload_client(index: usize, socket: std::path::PathBuf, progress: Arc<Progress>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        if let Ok(channel) = uds(&socket).await {
            let mut client = SpiffeWorkloadApiClient::new(channel);
            if let Ok(response) = client.fetch_x509svid(workload_request()).await {
                let mut stream = response.into_inner();
                while let Ok(Some(message)) = stream.message().await {
                    if !message.svids.is_empty() {
                        backoff.reset();
                        progress.mark(index);
                    }
                }
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn wait_all(progress: &Progress, since: Instant, n: usize, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut last_report = Instant::now();
    while progress.since(since) < n {
        assert!(
            started.elapsed() < limit,
            "only {} of {n} recovered after {limit:?}",
            progress.since(since)
        );
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("  {} of {n} so far", progress.since(since));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    progress.latest().unwrap().duration_since(since)
}

#[tokio::main]
async fn main() {
    let agents = count("AGENTS", 5_000);
    let clients = count("CLIENTS", 5_000);
    signet_unix::raise_descriptor_limit();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let server_env = vec![
        ("SIGNET_LOG", "warn".to_owned()),
        (
            "SIGNET_MAX_UNAUTHENTICATED_CONNECTIONS_PER_SOURCE",
            "16384".to_owned(),
        ),
    ];
    let agent_env = vec![
        ("SIGNET_LOG", "warn".to_owned()),
        ("SIGNET_MAX_CONNECTIONS", "16384".to_owned()),
        ("SIGNET_MAX_CONNECTIONS_PER_UID", "16384".to_owned()),
    ];
    let mut deployment = tokio::task::spawn_blocking(move || {
        common::Deployment::start_with_env(server_env, agent_env)
    })
    .await
    .unwrap();
    let mut admin = AdminClient::new(uds(&deployment.admin_socket()).await.unwrap());
    let address = format!("127.0.0.1:{}", deployment.port);
    let trust_domain = TrustDomain::new(TD).unwrap();
    let bootstrap = signet_agent::agent_svid::read_bundle_file(
        &deployment.server_dir().join("bundle.pem"),
        &trust_domain,
    )
    .unwrap();
    let server_id = signet_core::server_id(&trust_domain).unwrap();

    // ---- 1. 5,000 agents reconnecting at once ----
    eprintln!("attesting {agents} agents...");
    let started = Instant::now();
    let mut tokens = Vec::new();
    for _ in 0..agents {
        tokens.push(
            admin
                .create_join_token(CreateJoinTokenRequest { ttl_seconds: 3600 })
                .await
                .unwrap()
                .into_inner()
                .token,
        );
    }
    let tokens: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(tokens));
    let identities = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..32 {
        let (tokens, identities, address, bootstrap, server_id) = (
            tokens.clone(),
            identities.clone(),
            address.clone(),
            bootstrap.clone(),
            server_id.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let Some(token) = tokens.lock().unwrap().pop() else {
                    return;
                };
                let identity = signet_agent::agent_svid::attest_with_join_token(
                    &address,
                    bootstrap.clone(),
                    server_id.clone(),
                    &token,
                )
                .await
                .unwrap();
                identities.lock().unwrap().push(identity);
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let identities = std::mem::take(&mut *identities.lock().unwrap());
    eprintln!(
        "  attested in {:.1} s; creating one entry per agent...",
        started.elapsed().as_secs_f64()
    );
    for (i, identity) in identities.iter().enumerate() {
        admin
            .create_entry(CreateEntryRequest {
                entry: Some(Entry {
                    spiffe_id: format!("spiffe://{TD}/storm/{i}"),
                    parent_id: identity.svid.spiffe_id().to_string(),
                    selectors: vec![format!("unix:uid:{}", 200_000 + i)],
                    ..Entry::default()
                }),
            })
            .await
            .unwrap();
    }
    let progress = Progress::new(agents);
    let opened = Instant::now();
    let mut light = Vec::new();
    for (i, identity) in identities.iter().enumerate() {
        let client = signet_test_support::agent_client(&address, identity);
        light.push(tokio::spawn(light_agent(i, client, progress.clone())));
    }
    let first_sync = wait_all(&progress, opened, agents, Duration::from_secs(300)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let server_pid = deployment.server.as_ref().unwrap().id();
    let steady_rss = rss_mib(Some(server_pid));
    eprintln!(
        "  {agents} agents syncing (first sync {:.1} s); server RSS {steady_rss:.0} MiB; killing the server",
        first_sync.as_secs_f64()
    );

    deployment.kill_server();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restarted = Instant::now();
    let server = tokio::task::spawn_blocking(move || {
        deployment.start_server();
        deployment
    });
    let mut deployment = server.await.unwrap();
    let ready_after = restarted.elapsed();
    let server_pid = deployment.server.as_ref().unwrap().id();
    let recovery = wait_all(&progress, restarted, agents, Duration::from_secs(600)).await;
    // VmHWM: the process's peak since it started, the storm included.
    let server_peak = peak_rss_mib(server_pid);
    let server_cpu = cpu_seconds(server_pid);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let settled = rss_mib(Some(server_pid));
    let refusals = metric(
        deployment.health_port,
        "signet_server_admission_refusals_total",
    );
    let connection_refusals = metric(
        deployment.health_port,
        "signet_server_agent_api_connections_refused_total",
    );
    println!("## Reconnect storm: {agents} agents, server killed and restarted");
    println!(
        "first sync of {agents} agents: {:.1} s",
        first_sync.as_secs_f64()
    );
    println!(
        "server start → all {agents} agents hold a full snapshot again: {:.1} s (server answering its admin API after {:.1} s; agents were backing off for the 3 s it was down)",
        recovery.as_secs_f64(),
        ready_after.as_secs_f64()
    );
    println!(
        "server RSS before the kill: {steady_rss:.0} MiB; peak during the storm: {server_peak:.0} MiB; settled: {settled:.0} MiB"
    );
    println!("server CPU from start to recovery: {server_cpu:.1} s");
    println!(
        "calls told to come back later: {refusals:.0} (agents saw {}); connections refused at accept: {connection_refusals:.0}",
        progress.refusals_seen.load(Ordering::Relaxed)
    );
    for task in light {
        task.abort();
    }

    // ---- 2. 5,000 Workload API clients reconnecting after an agent restart ----
    let uid = rustix::process::geteuid().as_raw();
    admin
        .create_entry(CreateEntryRequest {
            entry: Some(Entry {
                spiffe_id: format!("spiffe://{TD}/storm/workload"),
                parent_id: deployment.agent_id.clone(),
                selectors: vec![format!("unix:uid:{uid}")],
                ..Entry::default()
            }),
        })
        .await
        .unwrap();
    let socket = deployment.socket();
    let progress = Progress::new(clients);
    let opened = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..clients {
        tasks.push(tokio::spawn(workload_client(
            i,
            socket.clone(),
            progress.clone(),
        )));
    }
    let first = wait_all(&progress, opened, clients, Duration::from_secs(300)).await;
    let agent_pid = deployment.agent.as_ref().unwrap().id();
    let agent_before = rss_mib(Some(agent_pid));
    eprintln!(
        "  {clients} Workload API streams open ({:.1} s); agent RSS {agent_before:.0} MiB; killing the agent",
        first.as_secs_f64()
    );
    deployment.kill_agent();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = Instant::now();
    let mut deployment = tokio::task::spawn_blocking(move || {
        deployment.spawn_agent(None);
        deployment
    })
    .await
    .unwrap();
    let agent_pid = deployment.agent.as_ref().unwrap().id();
    let recovery = wait_all(&progress, restarted, clients, Duration::from_secs(300)).await;
    let agent_peak = peak_rss_mib(agent_pid);
    let agent_cpu = cpu_seconds(agent_pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let agent_settled = rss_mib(Some(agent_pid));
    println!("## Reconnect storm: {clients} Workload API clients, agent killed and restarted");
    println!(
        "agent start → all {clients} clients hold an SVID again: {:.1} s",
        recovery.as_secs_f64()
    );
    println!(
        "agent RSS before the kill: {agent_before:.0} MiB; peak during the storm: {agent_peak:.0} MiB; settled: {agent_settled:.0} MiB; CPU {agent_cpu:.1} s"
    );
    for task in tasks {
        task.abort();
    }
    deployment.kill_agent();
    deployment.kill_server();
}
