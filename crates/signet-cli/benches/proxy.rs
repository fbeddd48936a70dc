//! `signet proxy` overhead (issue 6), against release-built processes on this machine: a server,
//! an agent, a backend proxy (inbound mTLS, HTTP policy enforcement, one ALLOW policy) and a
//! frontend proxy (outbound mTLS origination) in front of a small HTTP/1.1 application.
//!
//! 1. Small HTTP requests over keep-alive connections, 16 concurrent clients for 5 s: directly
//!    to the application, then application → frontend proxy → mTLS → backend proxy →
//!    application. Requests/s and p50/p99 for both, and their ratio, in one run.
//! 2. Handshake rate: new connections through both proxies (each one mTLS handshake plus one
//!    request), 8 concurrent clients for 5 s.
//!
//! The workloads are told apart by unix group, so this needs root (it sets the proxies' gid).
//! Run with `cargo bench -p signet-cli --bench proxy`.

#![expect(clippy::unwrap_used, reason = "benchmark binary")]

#[path = "../tests/common/mod.rs"]
mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use signet_proto::admin::admin_client::AdminClient;
use signet_proto::admin::{ApplyPoliciesRequest, CreateEntryRequest};
use signet_proto::agent::Entry;
use signet_test_support::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Channel;

const TD: &str = "example.org";
const CLIENTS: usize = 16;
const HANDSHAKE_CLIENTS: usize = 8;
const RUN: Duration = Duration::from_secs(5);

async fn uds(path: &Path) -> Channel {
    signet_test_support::workload_api::unix_channel(path).await
}

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn wait_port(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "port {port} never opened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads one HTTP/1.1 response (headers plus Content-Length body); false on EOF.
async fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> bool {
    buffer.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let headers = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            let length: usize = headers
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                return headers.starts_with("http/1.1 200");
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The application: answers every request on a keep-alive connection with `ok`.
async fn app() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        buffer.drain(..end + 4);
                        if stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    port
}

const REQUEST: &[u8] = b"GET /items/1 HTTP/1.1\r\nHost: backend\r\n\r\n";

/// `clients` concurrent clients sending small GETs for [`RUN`], over one keep-alive connection
/// each or over a new connection per request: (requests per second, sorted latencies).
async fn load(port: u16, clients: usize, connection_per_request: bool) -> (f64, Vec<Duration>) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let connect = || async {
                let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                stream.set_nodelay(true).unwrap();
                stream
            };
            let mut latencies = Vec::new();
            let mut buffer = Vec::new();
            let mut stream = connect().await;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                if connection_per_request {
                    stream = connect().await;
                }
                stream.write_all(REQUEST).await.unwrap();
                assert!(
                    read_response(&mut stream, &mut buffer).await,
                    "request failed"
                );
                latencies.push(started.elapsed());
            }
            latencies
        }));
    }
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    (all.len() as f64 / RUN.as_secs_f64(), all)
}

fn ms(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

fn entry(spiffe_id: &str, parent: &str, gid: u32) -> Entry {
    Entry {
        spiffe_id: spiffe_id.to_owned(),
        parent_id: parent.to_owned(),
        selectors: vec![format!("unix:gid:{gid}")],
        ..Entry::default()
    }
}

#[tokio::main]
async fn main() {
    assert!(
        rustix::process::geteuid().is_root(),
        "run as root: the proxies get their own gid"
    );
    let bin = common::signet_bin();
    // The processes log warnings only: a benchmark measures the work, not the logging.
    let quiet = || vec![("SIGNET_LOG", "warn".to_owned())];
    let deployment =
        tokio::task::spawn_blocking(move || common::Deployment::start_with_env(quiet(), quiet()))
            .await
            .unwrap();
    let socket = deployment.socket();
    let mut admin = AdminClient::new(uds(&deployment.admin_socket()).await);
    let agent_id = deployment.agent_id.clone();
    let mut procs = Procs(Vec::new());
    let frontend = format!("spiffe://{TD}/frontend");
    let backend = format!("spiffe://{TD}/backend");
    for (id, gid) in [(&frontend, 4001), (&backend, 4002)] {
        admin
            .create_entry(CreateEntryRequest {
                entry: Some(entry(id, &agent_id, gid)),
            })
            .await
            .unwrap();
    }
    admin
        .apply_policies(ApplyPoliciesRequest {
            document: format!(
                "apiVersion: signet.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: readers}}\n\
                 spec:\n  targetSPIFFEIDs: [\"{backend}\"]\n  action: ALLOW\n  rules:\n  - from: [{{spiffeIDs: [\"{frontend}\"]}}]\n    to: [{{methods: [GET], paths: [\"/items/*\"]}}]\n"
            ),
            dry_run: false,
        })
        .await
        .unwrap();

    let app_port = app().await;
    let (inbound, outbound) = (free_port(), free_port());
    let endpoint = format!("unix://{}", socket.display());
    procs.0.push(
        Command::new(bin)
            .args(["proxy", "--workload-api", &endpoint, "--log-level", "warn"])
            .args(["--inbound-listen", &format!("127.0.0.1:{inbound}")])
            .args(["--inbound-forward", &format!("127.0.0.1:{app_port}")])
            .gid(4002)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    procs.0.push(
        Command::new(bin)
            .args(["proxy", "--workload-api", &endpoint, "--log-level", "warn"])
            .args([
                "--outbound",
                &format!("127.0.0.1:{outbound},127.0.0.1:{inbound},{backend}"),
            ])
            .gid(4001)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(inbound).await;
    wait_port(outbound).await;
    // The policy reaches the backend proxy asynchronously: wait until a request passes.
    let ready = Instant::now();
    loop {
        let mut stream = TcpStream::connect(("127.0.0.1", outbound)).await.unwrap();
        stream.write_all(REQUEST).await.unwrap();
        if read_response(&mut stream, &mut Vec::new()).await {
            break;
        }
        assert!(
            ready.elapsed() < Duration::from_secs(30),
            "the proxied route never answered 200"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    println!(
        "proxy overhead: {CLIENTS} keep-alive clients, small GETs, {} s each",
        RUN.as_secs()
    );
    let (direct_rate, direct) = load(app_port, CLIENTS, false).await;
    println!(
        "  direct      : {direct_rate:>8.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
        ms(&direct, 0.5),
        ms(&direct, 0.99)
    );
    let (proxied_rate, proxied) = load(outbound, CLIENTS, false).await;
    println!(
        "  via proxies : {proxied_rate:>8.0} req/s, p50 {:.2} ms, p99 {:.2} ms (frontend outbound -> mTLS -> backend inbound, policy checked per request)",
        ms(&proxied, 0.5),
        ms(&proxied, 0.99)
    );
    println!(
        "  ratio       : {:.2} of direct throughput, p99 x{:.1}",
        proxied_rate / direct_rate,
        ms(&proxied, 0.99) / ms(&direct, 0.99)
    );
    println!(
        "handshakes: {HANDSHAKE_CLIENTS} clients, a new connection (one mTLS handshake) per request, {} s",
        RUN.as_secs()
    );
    let (rate, latencies) = load(outbound, HANDSHAKE_CLIENTS, true).await;
    println!(
        "  via proxies : {rate:>8.0} handshakes/s, p50 {:.2} ms, p99 {:.2} ms",
        ms(&latencies, 0.5),
        ms(&latencies, 0.99)
    );
    let (rate, latencies) = load(app_port, HANDSHAKE_CLIENTS, true).await;
    println!(
        "  direct TCP  : {rate:>8.0} connections/s, p50 {:.2} ms, p99 {:.2} ms (baseline)",
        ms(&latencies, 0.5),
        ms(&latencies, 0.99)
    );
}
