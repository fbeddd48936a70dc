//! Standalone-mode benchmarks (DESIGN §15 P3 and the standalone issue's figures), against real
//! release-built `signet server` and `signet agent` processes on this machine:
//!
//! 1. Workload API first-response latency with 1,000 concurrent streams (all opened at once),
//!    and the latency of one more stream while the 1,000 stay open.
//! 2. Rotation pushed to all 1,000 open streams: entry update → last stream has the new SVID,
//!    and the spread between the first and the last stream.
//! 3. Entry created via the admin API → SVID delivered on an open Workload API stream, over
//!    1,000 entries.
//! 4. Agent and server RSS with 1,000 entries (all pre-signed).
//!
//! Run with `hack/bench-standalone.sh` or `cargo bench -p signet-cli --bench standalone`.

#![expect(clippy::unwrap_used, reason = "benchmark binary")]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use signet_proto::admin::admin_client::AdminClient;
use signet_proto::admin::{CreateEntryRequest, DeleteEntryRequest, UpdateEntryRequest};
use signet_proto::agent::Entry;
use signet_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use signet_proto::workload::{X509svidRequest, X509svidResponse};
use signet_test_support::{percentile, rss_mib};
use tonic::transport::Channel;

const STREAMS: usize = 1000;
const ENTRIES: usize = 1000;
const TD: &str = "example.org";

async fn uds(path: &Path) -> Channel {
    signet_test_support::workload_api::unix_channel(path).await
}

fn request() -> tonic::Request<X509svidRequest> {
    let mut r = tonic::Request::new(X509svidRequest {});
    r.metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    r
}

fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n = {})",
        percentile(&mut samples, 0.5).as_secs_f64() * 1e3,
        percentile(&mut samples, 0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3,
        samples.len()
    )
}

fn leaf_serial(response: &X509svidResponse) -> Vec<u8> {
    response
        .svids
        .first()
        .map(|s| s.x509_svid[..s.x509_svid.len().min(64)].to_vec())
        .unwrap_or_default()
}

fn entry(spiffe_id: String, parent: &str, selector: String) -> Entry {
    Entry {
        spiffe_id,
        parent_id: parent.to_owned(),
        selectors: vec![selector],
        ..Entry::default()
    }
}

#[tokio::main]
async fn main() {
    // 1,000 streams need well over 1,000 descriptors in this process and in the agent.
    signet_unix::raise_descriptor_limit();

    // The processes log warnings only: a benchmark measures the work, not the logging.
    let quiet = || vec![("SIGNET_LOG", "warn".to_owned())];
    let deployment =
        tokio::task::spawn_blocking(move || common::Deployment::start_with_env(quiet(), quiet()))
            .await
            .unwrap();
    let socket = deployment.socket();
    let mut admin = AdminClient::new(uds(&deployment.admin_socket()).await);
    let agent_id = deployment.agent_id.clone();
    let uid = rustix::process::geteuid().as_raw();
    let me = admin
        .create_entry(CreateEntryRequest {
            entry: Some(entry(
                format!("spiffe://{TD}/bench"),
                &agent_id,
                format!("unix:uid:{uid}"),
            )),
        })
        .await
        .unwrap()
        .into_inner();
    // Wait for the SVID.
    loop {
        let mut c = SpiffeWorkloadApiClient::new(uds(&socket).await);
        if c.fetch_x509svid(request()).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 1. RSS (first, so the open streams below do not inflate it) with 1,000 pre-signed entries (for other uids, so responses stay small).
    eprintln!("creating {ENTRIES} entries for RSS...");
    let signed_before = signed_x509(deployment.health_port);
    let t0 = Instant::now();
    for i in 0..ENTRIES {
        admin
            .create_entry(CreateEntryRequest {
                entry: Some(entry(
                    format!("spiffe://{TD}/bench/rss-{i}"),
                    &agent_id,
                    format!("unix:uid:{}", 100_000 + i),
                )),
            })
            .await
            .unwrap();
    }
    let create_rate = ENTRIES as f64 / t0.elapsed().as_secs_f64();
    // Wait until the server has signed them all (its metrics endpoint counts).
    let t_sign = Instant::now();
    while signed_x509(deployment.health_port) < signed_before + ENTRIES as f64
        && t_sign.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let presign_time = t_sign.elapsed() + t0.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let server_rss = rss_mib(deployment.server.as_ref().map(Child::id));
    let agent_rss = rss_mib(deployment.agent.as_ref().map(Child::id));

    // 1. First-response latency, 1,000 streams opened at once, each on its own connection.
    eprintln!("opening {STREAMS} concurrent Workload API streams...");
    let mut tasks = Vec::new();
    for _ in 0..STREAMS {
        let socket = socket.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = SpiffeWorkloadApiClient::new(uds(&socket).await);
            let t0 = Instant::now();
            let mut stream = client.fetch_x509svid(request()).await.unwrap().into_inner();
            let first = stream.message().await.unwrap().unwrap();
            (t0.elapsed(), stream, leaf_serial(&first))
        }));
    }
    let mut first_latencies = Vec::new();
    let mut streams = Vec::new();
    for task in tasks {
        let (latency, stream, serial) = task.await.unwrap();
        first_latencies.push(latency);
        streams.push((stream, serial));
    }
    let burst = summary(first_latencies);

    // One more stream at a time while the 1,000 stay open.
    let mut steady = Vec::new();
    for _ in 0..200 {
        let mut client = SpiffeWorkloadApiClient::new(uds(&socket).await);
        let t0 = Instant::now();
        let mut stream = client.fetch_x509svid(request()).await.unwrap().into_inner();
        stream.message().await.unwrap().unwrap();
        steady.push(t0.elapsed());
    }
    let steady = summary(steady);

    // 2. Rotation pushed to all 1,000: bump the entry's revision so the agent re-signs it.
    eprintln!("measuring rotation push to {STREAMS} streams...");
    let mut receivers = Vec::new();
    for (mut stream, serial) in streams {
        receivers.push(tokio::spawn(async move {
            loop {
                let message = stream.message().await.unwrap().unwrap();
                if leaf_serial(&message) != serial {
                    return (Instant::now(), stream);
                }
            }
        }));
    }
    let t0 = Instant::now();
    admin
        .update_entry(UpdateEntryRequest {
            entry: Some(Entry {
                hint: String::new(),
                ..me.clone()
            }),
        })
        .await
        .unwrap();
    let mut arrivals = Vec::new();
    let mut kept = Vec::new();
    for r in receivers {
        let (at, stream) = r.await.unwrap();
        arrivals.push(at);
        kept.push(stream);
    }
    arrivals.sort();
    let update_to_last = arrivals.last().unwrap().duration_since(t0);
    let update_to_first = arrivals[0].duration_since(t0);
    let spread = arrivals.last().unwrap().duration_since(arrivals[0]);
    drop(kept);

    // 3. Entry created → SVID delivered on an open stream.
    eprintln!("measuring entry creation → SVID on the Workload API for {ENTRIES} entries...");
    let mut client = SpiffeWorkloadApiClient::new(uds(&socket).await);
    let mut stream = client.fetch_x509svid(request()).await.unwrap().into_inner();
    stream.message().await.unwrap().unwrap();
    let mut delivery = Vec::new();
    for i in 0..ENTRIES {
        let id = format!("spiffe://{TD}/bench/new-{i}");
        let t0 = Instant::now();
        let created = admin
            .create_entry(CreateEntryRequest {
                entry: Some(entry(id.clone(), &agent_id, format!("unix:uid:{uid}"))),
            })
            .await
            .unwrap()
            .into_inner();
        loop {
            let message = stream.message().await.unwrap().unwrap();
            if message.svids.iter().any(|s| s.spiffe_id == id) {
                break;
            }
        }
        delivery.push(t0.elapsed());
        admin
            .delete_entry(DeleteEntryRequest { id: created.id })
            .await
            .unwrap();
        loop {
            let message = stream.message().await.unwrap().unwrap();
            if !message.svids.iter().any(|s| s.spiffe_id == id) {
                break;
            }
        }
    }
    let delivery = summary(delivery);
    drop(stream);

    println!("| measurement | result |");
    println!("|---|---|");
    println!("| first response, {STREAMS} streams opened at once | {burst} |");
    println!("| first response of one more stream while {STREAMS} are open | {steady} |");
    println!(
        "| rotation: entry update → first of {STREAMS} streams has the new SVID | {:.1} ms |",
        update_to_first.as_secs_f64() * 1e3
    );
    println!(
        "| rotation: entry update → all {STREAMS} streams have it | {:.1} ms |",
        update_to_last.as_secs_f64() * 1e3
    );
    println!(
        "| rotation fan-out spread (first → last stream) | {:.1} ms |",
        spread.as_secs_f64() * 1e3
    );
    println!("| entry created (admin API) → SVID on an open Workload API stream | {delivery} |");
    println!("| admin API entry creation rate | {create_rate:.0} entries/s |");
    println!(
        "| {ENTRIES} entries created → all pre-signed on the agent | {:.2} s |",
        presign_time.as_secs_f64()
    );
    println!(
        "| server RSS with {} entries | {server_rss:.1} MiB |",
        ENTRIES + 1
    );
    println!(
        "| agent RSS with {} entries, all pre-signed | {agent_rss:.1} MiB |",
        ENTRIES + 1
    );
}

fn signed_x509(port: u16) -> f64 {
    http_get(port, "/metrics")
        .lines()
        .find(|l| l.starts_with("signet_server_svids_signed_total{kind=\"x509\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    );
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body
}
