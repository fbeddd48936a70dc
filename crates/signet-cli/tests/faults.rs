//! Fault injection with real processes (issue 18 item 4). Each scenario runs a server and an
//! agent, a workload holding a FetchX509SVID stream (the [`Watcher`]), injects one fault for
//! longer than every TTL involved, and asserts:
//! - **no expired SVID served**: every SVID in every message was valid when it arrived, and the
//!   stream told the workload something new (a fresh SVID, or an error) before each SVID it held
//!   expired;
//! - **no entry lost**: every entry acknowledged before or during the fault is there after;
//! - **every stream recovers with the same identity**: after the fault the workload holds a
//!   fresh SVID of the same SPIFFE ID, without doing anything;
//! - and the **recovery time** (end of the fault → fresh SVID) is printed.
//!
//! Fast variants run in `.ci/run`. `SIGNET_FAULTS_LONG=1` stretches every TTL and outage by 10×
//! (minutes per scenario): `hack/faults-long.sh`.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::{Deployment, TD, my_uid, wait_for};
use parking_lot::Mutex;
use signet_proto::workload::X509svidRequest;
use signet_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;

/// 1 for the fast variants, 10 for the long ones.
fn scale() -> u32 {
    if std::env::var_os("SIGNET_FAULTS_LONG").is_some() {
        10
    } else {
        1
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n * u64::from(scale()))
}

fn ttl(n: u64) -> String {
    format!("{}s", n * u64::from(scale()))
}

/// What the workload's stream delivered: per message, when, and each SVID's ID and validity.
#[derive(Debug, Clone)]
enum Event {
    Svids {
        at: SystemTime,
        svids: Vec<(String, SystemTime, SystemTime, String)>,
    },
    Error {
        at: SystemTime,
        code: tonic::Code,
    },
}

/// A workload holding a FetchX509SVID stream on the agent's socket, reconnecting after errors
/// as SPIFFE client libraries do.
struct Watcher {
    events: Arc<Mutex<Vec<Event>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn svid_views(
    message: &signet_proto::workload::X509svidResponse,
) -> Vec<(String, SystemTime, SystemTime, String)> {
    message
        .svids
        .iter()
        .map(|s| {
            let certs = signet_spiffe::bundle::split_der_certificates(&s.x509_svid).unwrap();
            let leaf = &certs[0];
            (
                s.spiffe_id.clone(),
                signet_spiffe::x509::not_before_of(leaf).unwrap(),
                signet_spiffe::x509::not_after_of(leaf).unwrap(),
                signet_spiffe::x509::serial_of(leaf).unwrap(),
            )
        })
        .collect()
}

impl Watcher {
    fn start(socket: PathBuf) -> Self {
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s) = (events.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                while !s.load(Ordering::Relaxed) {
                    let channel = signet_tls::source::unix_channel(socket.clone()).await;
                    if let Ok(channel) = channel {
                        let mut client = SpiffeWorkloadApiClient::new(channel);
                        let mut request = tonic::Request::new(X509svidRequest {});
                        request
                            .metadata_mut()
                            .insert("workload.spiffe.io", "true".parse().unwrap());
                        match client.fetch_x509svid(request).await {
                            Ok(response) => {
                                let mut stream = response.into_inner();
                                loop {
                                    let next = tokio::time::timeout(
                                        Duration::from_millis(500),
                                        stream.message(),
                                    )
                                    .await;
                                    if s.load(Ordering::Relaxed) {
                                        return;
                                    }
                                    match next {
                                        Err(_) => continue,
                                        Ok(Ok(Some(message))) => e.lock().push(Event::Svids {
                                            at: SystemTime::now(),
                                            svids: svid_views(&message),
                                        }),
                                        Ok(Ok(None)) => break,
                                        Ok(Err(status)) => {
                                            e.lock().push(Event::Error {
                                                at: SystemTime::now(),
                                                code: status.code(),
                                            });
                                            break;
                                        }
                                    }
                                }
                            }
                            Err(status) => e.lock().push(Event::Error {
                                at: SystemTime::now(),
                                code: status.code(),
                            }),
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        });
        Self {
            events,
            stop,
            thread: Some(thread),
        }
    }

    /// The latest SVIDs held, if the last event was a message.
    fn held(&self) -> Option<Vec<(String, SystemTime, SystemTime, String)>> {
        match self.events.lock().last() {
            Some(Event::Svids { svids, .. }) => Some(svids.clone()),
            _ => None,
        }
    }

    fn serial(&self) -> Option<String> {
        self.held()?.first().map(|s| s.3.clone())
    }

    /// Waits for a message holding `spiffe_id` with a serial other than `old`; returns when.
    fn wait_fresh(&self, spiffe_id: &str, old: &str, limit: Duration) -> Instant {
        wait_for("a fresh SVID on the stream", limit, || {
            self.held().is_some_and(|svids| {
                svids.iter().any(|(id, _, not_after, serial)| {
                    id == spiffe_id && serial != old && *not_after > SystemTime::now()
                })
            })
        });
        Instant::now()
    }

    /// Asserts the workload was never handed, or left holding, an expired SVID.
    fn assert_never_expired(&self) {
        let events = self.events.lock().clone();
        let skew = Duration::from_millis(1500);
        // Before its first SVID the workload may hear PERMISSION_DENIED: the agent had synced
        // and the entry was still on its way.
        let first = events
            .iter()
            .position(|e| matches!(e, Event::Svids { .. }))
            .unwrap_or(events.len());
        for (i, event) in events.iter().enumerate().skip(first) {
            let (at, svids) = match event {
                Event::Svids { at, svids } => (at, svids),
                Event::Error { code, .. } => {
                    // The agent cannot know yet; it never says "no identity" to a workload
                    // whose entry it holds.
                    assert_ne!(
                        *code,
                        tonic::Code::PermissionDenied,
                        "event {i}: {events:?}"
                    );
                    continue;
                }
            };
            let at: SystemTime = *at;
            let told_next: SystemTime = match events.get(i + 1) {
                Some(Event::Svids { at: next, .. } | Event::Error { at: next, .. }) => *next,
                None => SystemTime::now(),
            };
            for (id, not_before, not_after, _) in svids {
                let (not_before, not_after): (SystemTime, SystemTime) = (*not_before, *not_after);
                assert!(
                    not_after > at,
                    "message {i} at {at:?} carried {id} expired at {not_after:?}"
                );
                assert!(
                    not_before <= at + skew,
                    "message {i} carried {id} not valid before {not_before:?}"
                );
                assert!(
                    not_after + skew >= told_next,
                    "message {i}: {id} expired at {not_after:?} but the workload heard nothing until {told_next:?}"
                );
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn entry_ids(d: &Deployment) -> Vec<String> {
    let out = d.admin(&["entry", "list", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut ids: Vec<String> = list
        .as_array()
        .or_else(|| list["entries"].as_array())
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// A deployment with short TTLs, one workload entry and a watcher holding its SVID.
struct Scenario {
    d: Deployment,
    watcher: Watcher,
    spiffe_id: String,
    entries: Vec<String>,
}

const WORKLOAD_TTL: u64 = 6;
const AGENT_TTL: u64 = 8;

impl Scenario {
    fn start(setup: impl FnOnce(&mut Deployment)) -> Self {
        Self::start_with(Vec::new(), setup)
    }

    fn start_with(
        server_env: Vec<(&'static str, String)>,
        setup: impl FnOnce(&mut Deployment),
    ) -> Self {
        Self::start_full(server_env, WORKLOAD_TTL, setup)
    }

    fn start_full(
        mut server_env: Vec<(&'static str, String)>,
        workload_ttl: u64,
        setup: impl FnOnce(&mut Deployment),
    ) -> Self {
        server_env.push(("SIGNET_AGENT_SVID_TTL", ttl(AGENT_TTL)));
        let d = Deployment::start_custom(TD, server_env, Vec::new(), setup);
        let spiffe_id = format!("spiffe://{TD}/faults");
        let id = d.create_entry(
            &spiffe_id,
            &format!("unix:uid:{}", my_uid()),
            &["--x509-svid-ttl", &ttl(workload_ttl)],
        );
        let watcher = Watcher::start(d.socket());
        wait_for("the first SVID", Duration::from_secs(20), || {
            watcher.serial().is_some()
        });
        Self {
            d,
            watcher,
            spiffe_id,
            entries: vec![id],
        }
    }

    /// Waits out `outage` (longer than every TTL), then lets `restore` end the fault and
    /// checks recovery, the stream and the entries.
    fn recover(&mut self, name: &str, restore: impl FnOnce(&mut Deployment)) {
        let before = self.watcher.serial().unwrap_or_default();
        restore(&mut self.d);
        let restored = Instant::now();
        let at = self.watcher.wait_fresh(&self.spiffe_id, &before, secs(60));
        println!(
            "{name}: fresh SVID on the same stream {:.1} s after the fault ended",
            at.duration_since(restored).as_secs_f64()
        );
        // The agent also takes new entries again.
        let late = self.d.create_entry(
            &format!("spiffe://{TD}/faults-after"),
            &format!("unix:uid:{}", my_uid()),
            &[],
        );
        self.entries.push(late);
        wait_for("the entry made after the fault", secs(30), || {
            self.watcher
                .held()
                .is_some_and(|held| held.iter().any(|s| s.0.ends_with("/faults-after")))
        });
        self.watcher.assert_never_expired();
        let mut expected = self.entries.clone();
        expected.sort();
        let present = entry_ids(&self.d);
        for id in &expected {
            assert!(present.contains(id), "entry {id} lost: {present:?}");
        }
    }

    /// The outage every scenario holds its fault for: longer than the workload and agent TTLs.
    fn outage() -> Duration {
        secs(AGENT_TTL + 4)
    }
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn server_killed_for_longer_than_every_ttl() {
    let mut s = Scenario::start(|_| {});
    s.d.kill_server();
    std::thread::sleep(Scenario::outage());
    s.recover("server SIGKILL", Deployment::start_server);
}

#[test]
fn agent_restarted_during_a_server_outage_longer_than_every_ttl() {
    // A 20 s workload SVID, so that the copy on disk is still valid when the agent restarts.
    let mut s = Scenario::start_full(Vec::new(), 20, |_| {});
    // Let the SVID cache reach the disk (written at most every 2 s).
    std::thread::sleep(Duration::from_secs(3));
    s.d.kill_server();
    s.d.kill_agent();
    let restarted = Instant::now();
    s.d.spawn_agent(None);
    // With the server down, an unexpired SVID can only come from the agent's data directory.
    let served_again = wait_for_valid(&s.watcher, &s.spiffe_id, Duration::from_secs(20));
    assert!(
        served_again,
        "the restarted agent did not serve the persisted SVID"
    );
    println!(
        "agent restarted during the outage: persisted SVID on the stream {:.1} s after the restart",
        restarted.elapsed().as_secs_f64()
    );
    std::thread::sleep(secs(24));
    s.recover("agent restart during the outage", Deployment::start_server);
}

/// Whether the stream delivers an unexpired SVID of `spiffe_id` again within `limit` (after a
/// reconnection).
fn wait_for_valid(watcher: &Watcher, spiffe_id: &str, limit: Duration) -> bool {
    let since = watcher.events.lock().len();
    let started = Instant::now();
    while started.elapsed() < limit {
        let found = watcher.events.lock()[since..]
            .iter()
            .any(|event| match event {
                Event::Svids { svids, at } => svids.iter().any(|s| s.0 == spiffe_id && s.2 > *at),
                Event::Error { .. } => false,
            });
        if found {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn server_stopped_for_longer_than_every_ttl() {
    // SIGSTOP: connections stay open and nothing answers (a hung server, a GC pause, a VM
    // freeze): the agent must not wait on them forever.
    let mut s = Scenario::start(|_| {});
    let pid = s.d.server.as_ref().unwrap().id();
    signal(pid, "STOP");
    std::thread::sleep(Scenario::outage());
    s.recover("server SIGSTOP", |_| signal(pid, "CONT"));
}

/// A network namespace holding the server, joined to ours by a veth pair.
struct Netns {
    name: String,
    host_side: String,
    server_ip: String,
}

impl Netns {
    fn create() -> Option<Self> {
        let n = std::process::id() % 250;
        let name = format!("sgf{}", std::process::id());
        let host_side = format!("sgh{}", std::process::id());
        let peer = format!("sgn{}", std::process::id());
        let (host_ip, server_ip) = (format!("10.232.{n}.1"), format!("10.232.{n}.2"));
        let ip = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        let ok = ip(&["netns", "add", &name])
            && ip(&[
                "link", "add", &host_side, "type", "veth", "peer", "name", &peer,
            ])
            && ip(&["link", "set", &peer, "netns", &name])
            && ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_side])
            && ip(&["link", "set", &host_side, "up"])
            && ip(&[
                "netns",
                "exec",
                &name,
                "ip",
                "addr",
                "add",
                &format!("{server_ip}/30"),
                "dev",
                &peer,
            ])
            && ip(&["netns", "exec", &name, "ip", "link", "set", &peer, "up"])
            && ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        let netns = Self {
            name,
            host_side,
            server_ip,
        };
        ok.then_some(netns)
    }

    fn link(&self, up: bool) {
        let status = Command::new("ip")
            .args([
                "link",
                "set",
                &self.host_side,
                if up { "up" } else { "down" },
            ])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_side])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn server_partitioned_by_a_cut_link_for_longer_than_every_ttl() {
    if my_uid() != 0 {
        eprintln!("skipping: needs root for network namespaces");
        return;
    }
    let netns = Netns::create().expect("network namespace and veth pair (needs root and iproute2)");
    let mut s = Scenario::start(|d| {
        d.server_prefix = vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            netns.name.clone(),
        ];
        d.server_host = netns.server_ip.clone();
    });
    // The link goes down: no RST, no FIN; packets vanish.
    netns.link(false);
    std::thread::sleep(Scenario::outage());
    s.recover("link cut", |_| netns.link(true));
    s.d.kill_agent();
    s.d.kill_server();
}

/// A TCP proxy that holds every chunk for `delay` before passing it on: a slow server or a
/// congested path.
fn delaying_proxy(to: String, delay: Arc<Mutex<Duration>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&to) else {
                continue;
            };
            for (mut from, mut into) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let delay = delay.clone();
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 16 * 1024];
                    while let Ok(n) = from.read(&mut buffer) {
                        if n == 0 {
                            break;
                        }
                        std::thread::sleep(*delay.lock());
                        if into.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = into.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    port
}

#[test]
fn a_slow_server_delays_rotation_but_no_expired_svid_is_served() {
    let delay = Arc::new(Mutex::new(Duration::ZERO));
    let mut s = Scenario::start(|d| {
        let proxy = delaying_proxy(format!("127.0.0.1:{}", d.port), delay.clone());
        d.agent_server_address = Some(format!("127.0.0.1:{proxy}"));
    });
    // Every chunk each way held 700 ms: calls take seconds, keep-alive pings arrive late.
    *delay.lock() = Duration::from_millis(700);
    let before = s.watcher.serial().unwrap();
    let slow = Instant::now();
    // Rotation still happens while slow (the SVID lives 6 s and is re-signed at ~3 s).
    s.watcher.wait_fresh(&s.spiffe_id, &before, secs(30));
    println!(
        "slow server (700 ms per chunk each way): rotated after {:.1} s",
        slow.elapsed().as_secs_f64()
    );
    std::thread::sleep(Scenario::outage());
    s.recover("slow server", |_| *delay.lock() = Duration::ZERO);
}

fn libfaketime() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

#[test]
fn a_server_clock_behind_ours_shortens_svids_but_none_expires() {
    let Some(library) = libfaketime() else {
        panic!("libfaketime is needed (Debian package faketime; .ci/run installs it)");
    };
    // The server's clock is 5 s behind (×10 in the long variant): each SVID it signs (12 s)
    // lives 5 s less in our time.
    let server_env = vec![
        ("LD_PRELOAD", library.display().to_string()),
        ("FAKETIME", format!("-{}s", 5 * scale())),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
        ("FAKETIME_DONT_RESET", "1".to_owned()),
    ];
    let mut s = Scenario::start_full(server_env, 12, |_| {});
    // Several rotations under the skew.
    let mut serial = s.watcher.serial().unwrap();
    for _ in 0..3 {
        s.watcher.wait_fresh(&s.spiffe_id, &serial, secs(20));
        serial = s.watcher.serial().unwrap();
    }
    let held = s.watcher.held().unwrap();
    let (_, not_before, not_after, _) = &held[0];
    let life = not_after.duration_since(*not_before).unwrap();
    assert!(
        not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            < secs(12 - 5 + 1),
        "the skew is visible: {life:?}"
    );
    s.d.kill_server();
    std::thread::sleep(Scenario::outage());
    let label = format!("server clock {} s behind", 5 * scale());
    s.recover(&label, Deployment::start_server);
}

#[test]
fn a_locked_database_fails_writes_clearly_and_loses_nothing() {
    let mut s = Scenario::start(|_| {});
    let database = s.d.server_dir().join("signet.db");
    // Another process takes the write lock and keeps it.
    let mut holder = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys,time\n\
             c=sqlite3.connect(sys.argv[1],isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('locked',flush=True)\n\
             time.sleep(float(sys.argv[2]))\n\
             c.execute('ROLLBACK')",
        ])
        .arg(&database)
        .arg(Scenario::outage().as_secs().to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = [0u8; 6];
    holder
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut line)
        .unwrap();
    assert_eq!(&line, b"locked");
    let locked = Instant::now();
    // A write during the lock fails with an error that says so (after the busy timeout), and
    // the server keeps signing: the workload's SVID rotates.
    let out = s.d.admin(&[
        "entry",
        "create",
        "--spiffe-id",
        &format!("spiffe://{TD}/during-lock"),
        "--parent-id",
        &s.d.agent_id,
        "--selector",
        "unix:uid:4242",
    ]);
    let said = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(!out.status.success(), "a write went through a held lock");
    assert!(said.contains("locked") || said.contains("busy"), "{said}");
    println!(
        "database locked: write refused after {:.1} s",
        locked.elapsed().as_secs_f64()
    );
    let before = s.watcher.serial().unwrap();
    s.watcher.wait_fresh(&s.spiffe_id, &before, secs(20));
    s.recover("database locked", |_| {
        let _ = holder.wait();
    });
}

/// A small tmpfs mounted over `path` (needs root), unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&path).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", path.display());
        Self(path)
    }

    /// Fills the file system; returns the filler to delete.
    fn fill(&self) -> PathBuf {
        let filler = self.0.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.flush();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_under_the_server_and_the_agent_fails_writes_and_loses_nothing() {
    if my_uid() != 0 {
        eprintln!("skipping: needs root to mount a tmpfs");
        return;
    }
    let mounts: Arc<Mutex<Vec<Tmpfs>>> = Arc::new(Mutex::new(Vec::new()));
    let m = mounts.clone();
    let mut s = Scenario::start(move |d| {
        m.lock().push(Tmpfs::mount(d.server_dir(), "16m"));
        m.lock()
            .push(Tmpfs::mount(d.dir.path().join("agent"), "4m"));
    });
    let fillers: Vec<PathBuf> = mounts.lock().iter().map(Tmpfs::fill).collect();
    let full = Instant::now();
    // Creating entries fails with an error about space (SQLite: "database or disk is full");
    // keep trying through the outage: nothing acknowledged may be lost.
    let mut refused = 0;
    while full.elapsed() < Scenario::outage() {
        let out = s.d.admin(&[
            "entry",
            "create",
            "--spiffe-id",
            &format!("spiffe://{TD}/during-full-{refused}"),
            "--parent-id",
            &s.d.agent_id,
            "--selector",
            "unix:uid:4242",
            "-o",
            "json",
        ]);
        if out.status.success() {
            let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            s.entries.push(created["id"].as_str().unwrap().to_owned());
        } else {
            refused += 1;
            let said = String::from_utf8_lossy(&out.stderr).to_lowercase();
            assert!(said.contains("full") || said.contains("space"), "{said}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(refused > 0, "no write was refused on a full disk");
    let (_, metrics) = common::http_get(s.d.agent_health_port, "/metrics");
    let failures = metrics
        .lines()
        .find(|l| l.starts_with("signet_agent_svid_cache_write_failures_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        failures > 0.0,
        "the agent's cache writes did not fail? {metrics}"
    );
    s.recover("disk full", |_| {
        for filler in fillers {
            std::fs::remove_file(filler).unwrap();
        }
    });
    // The server restarts from what is on its disk with every acknowledged entry.
    s.d.kill_server();
    s.d.start_server();
    let present = entry_ids(&s.d);
    for id in &s.entries {
        assert!(present.contains(id), "entry {id} lost across the restart");
    }
    s.d.kill_agent();
    s.d.kill_server();
    drop(s);
    drop(mounts);
}
