//! Memory with 100,000 entries, real processes (issue 19 item 2; DESIGN P5): release-built
//! `signet server` and `signet agent`, the server holding 100,000 entries parented to the
//! agent, the agent started with none of them: it syncs all and pre-signs an X509-SVID (a new
//! key each) for every one.
//!
//! Measured: the server's RSS with 100,000 entries (P5: ≤ 200 MiB), the agent's peak RSS
//! (VmHWM) while syncing and pre-signing (≤ 300 MiB) and its steady RSS afterwards, and how long
//! it took. Run with `cargo bench -p signet-cli --bench memory` (`ENTRIES=` to change the count).

#![expect(clippy::unwrap_used, reason = "benchmark binary")]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use signet_proto::admin::CreateEntryRequest;
use signet_proto::admin::admin_client::AdminClient;
use signet_proto::agent::Entry;
use signet_test_support::{cpu_seconds, peak_rss_mib, rss_mib};
use tonic::transport::Channel;

const TD: &str = "example.org";

async fn uds(path: &Path) -> Channel {
    signet_test_support::workload_api::unix_channel(path).await
}

fn metric(port: u16, name: &str) -> f64 {
    let (_, body) = common::http_get(port, "/metrics");
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    let entries: usize = std::env::var("ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let quiet = || vec![("SIGNET_LOG", "warn".to_owned())];
    let mut deployment =
        tokio::task::spawn_blocking(move || common::Deployment::start_with_env(quiet(), quiet()))
            .await
            .unwrap();
    let agent_id = deployment.agent_id.clone();
    let server_pid = deployment.server.as_ref().unwrap().id();
    let server_idle = rss_mib(Some(server_pid));
    deployment.kill_agent();

    eprintln!("creating {entries} entries...");
    let admin = AdminClient::new(uds(&deployment.admin_socket()).await);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut creators = Vec::new();
    for _ in 0..8 {
        let (mut admin, next, agent_id) = (admin.clone(), next.clone(), agent_id.clone());
        creators.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= entries {
                    return;
                }
                admin
                    .create_entry(CreateEntryRequest {
                        entry: Some(Entry {
                            spiffe_id: format!("spiffe://{TD}/memory/workload-{i}"),
                            parent_id: agent_id.clone(),
                            selectors: vec![
                                format!("unix:uid:{}", 100_000 + i),
                                "unix:gid:1000".to_owned(),
                            ],
                            ..Entry::default()
                        }),
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for creator in creators {
        creator.await.unwrap();
    }
    eprintln!("  created in {:.1} s", started.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let server_with_entries = rss_mib(Some(server_pid));

    eprintln!("starting the agent...");
    let started = Instant::now();
    let mut deployment = tokio::task::spawn_blocking(move || {
        deployment.spawn_agent(None);
        deployment
    })
    .await
    .unwrap();
    let agent_pid = deployment.agent.as_ref().unwrap().id();
    let port = deployment.agent_health_port;
    let mut synced_at = None;
    loop {
        let held = metric(port, "signet_agent_entries");
        let signed = metric(port, "signet_agent_svids");
        if synced_at.is_none() && held as usize >= entries {
            synced_at = Some(started.elapsed());
        }
        if signed as usize >= entries {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "only {signed} of {entries} signed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let signed_after = started.elapsed();
    let agent_peak = peak_rss_mib(agent_pid);
    let agent_cpu = cpu_seconds(agent_pid);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let agent_steady = rss_mib(Some(agent_pid));
    let server_after = rss_mib(Some(server_pid));
    let server_peak = peak_rss_mib(server_pid);

    println!("## Memory with {entries} entries (real processes, release build)");
    println!(
        "server RSS idle: {server_idle:.0} MiB; with {entries} entries: {server_with_entries:.0} MiB; after the agent synced and signed: {server_after:.0} MiB (peak {server_peak:.0} MiB)"
    );
    println!(
        "agent start → {entries} entries held: {:.1} s; → all pre-signed: {:.1} s; agent CPU {agent_cpu:.0} s",
        synced_at.unwrap_or_default().as_secs_f64(),
        signed_after.as_secs_f64()
    );
    println!(
        "agent RSS peak while syncing and pre-signing: {agent_peak:.0} MiB; steady 10 s after: {agent_steady:.0} MiB"
    );
    deployment.kill_agent();
    deployment.kill_server();
}
