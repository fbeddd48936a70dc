//! R2 — a CA rotation under traffic, with real processes: a server, an agent, two workloads
//! behind `signet proxy` (mutual TLS with signet-tls) and a relying party validating JWT-SVIDs.
//! While the X.509 CA is prepared, activated, the old one tainted and finally revoked, a steady
//! stream of fresh mTLS handshakes and one long-lived connection carry traffic; while the JWT
//! authority goes through the same steps, fresh JWT-SVIDs are validated through the agent and
//! offline against the published bundle. Nothing may fail and nothing may be lost. SVIDs live
//! 12 s (rotated every ~6 s), the taint re-sign window is 2 s: the whole test takes about a
//! minute.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Deployment, Proxies, TD, free_port, proxy, signet_bin, wait_for};
use signet_test_support::apps::{echo_app, http_app};

const FRONTEND_GID: u32 = 4101;
const BACKEND_GID: u32 = 4102;

#[derive(Default)]
struct Tally {
    attempted: AtomicU64,
    failed: AtomicU64,
}

impl Tally {
    fn record(&self, ok: bool) {
        self.attempted.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn figures(&self) -> (u64, u64) {
        (
            self.attempted.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

fn authority(d: &Deployment, kind: &str, status: &str) -> String {
    d.authorities()
        .into_iter()
        .find(|a| a["kind"] == kind && a["status"] == status)
        .and_then(|a| a["id"].as_str().map(str::to_owned))
        .unwrap()
}

fn ca(d: &Deployment, args: &[&str]) {
    let mut all = vec!["ca"];
    all.extend_from_slice(args);
    let out = d.admin(&all);
    assert!(
        out.status.success(),
        "signet {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One full rotation of `kind`: prepare, let the bundle spread, activate, taint the old one,
/// wait until no agent holds anything it signed, revoke it.
fn rotate(d: &Deployment, kind: &str, spread: Duration) {
    let old = authority(d, kind, "active");
    ca(d, &["prepare", "--kind", kind]);
    std::thread::sleep(spread);
    ca(d, &["activate", "--kind", kind]);
    std::thread::sleep(spread);
    ca(d, &["taint", "--kind", kind, "--id", &old]);
    wait_for(
        "the agents to re-sign everything of the tainted authority",
        Duration::from_secs(20),
        || d.svids_of(&old) == Some(0),
    );
    ca(d, &["revoke", "--kind", kind, "--id", &old]);
    std::thread::sleep(spread);
}

/// Fresh TCP connections through the frontend proxy: each is a new mTLS handshake between the
/// proxies.
fn handshakes(route: u16, stop: &AtomicBool, tally: &Tally) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let ok = (|| -> std::io::Result<bool> {
            let stream = TcpStream::connect(("127.0.0.1", route))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut writer = stream.try_clone()?;
            writeln!(writer, "hello {n}")?;
            let mut line = String::new();
            BufReader::new(stream).read_line(&mut line)?;
            Ok(line.trim() == format!("hello {n}"))
        })()
        .unwrap_or(false);
        tally.record(ok);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// HTTP requests through the proxies (a new connection, so a new handshake, each).
fn requests(route: u16, stop: &AtomicBool, tally: &Tally) {
    while !stop.load(Ordering::Relaxed) {
        let (code, _) = common::http_request(route, "GET", "/r2");
        tally.record(code == 200);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One connection kept open for the whole test, a line every 100 ms.
fn long_lived(route: u16, stop: &AtomicBool, tally: &Tally) {
    let stream = TcpStream::connect(("127.0.0.1", route)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let ok = writeln!(writer, "line {n}").is_ok() && {
            let mut line = String::new();
            reader.read_line(&mut line).is_ok() && line.trim() == format!("line {n}")
        };
        tally.record(ok);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A fresh JWT-SVID of the frontend, validated by two relying parties: the agent (Workload
/// API), and offline against the bundle the server publishes.
fn jwt_round(d: &Deployment) -> (bool, bool) {
    let fetched = std::process::Command::new(signet_bin())
        .args([
            "jwt",
            "fetch",
            "--socket",
            &d.endpoint(),
            "--audience",
            "db",
        ])
        .args(["-o", "json"])
        .gid(FRONTEND_GID)
        .output()
        .unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&fetched.stdout).unwrap_or_default();
    let Some(token) = parsed[0]["token"].as_str() else {
        return (false, false);
    };
    let validate = |extra: &[&str]| {
        std::process::Command::new(signet_bin())
            .args([
                "jwt",
                "validate",
                "--socket",
                &d.endpoint(),
                "--audience",
                "db",
            ])
            .args(extra)
            .arg(token)
            .output()
            .unwrap()
            .status
            .success()
    };
    let bundle = d.server_dir().join("bundle.json");
    (
        validate(&[]),
        validate(&["--bundle", bundle.to_str().unwrap(), "--trust-domain", TD]),
    )
}

#[test]
fn x509_and_jwt_authorities_rotate_under_traffic_without_a_failure() {
    let d = Deployment::start_with_agent_env(vec![("SIGNET_TAINT_RESIGN_WINDOW", "2s".into())]);
    for (name, gid) in [("frontend", FRONTEND_GID), ("backend", BACKEND_GID)] {
        d.create_entry(
            &format!("spiffe://{TD}/{name}"),
            &format!("unix:gid:{gid}"),
            &["--x509-svid-ttl", "12s"],
        );
    }
    let (app, echo) = (http_app(), echo_app());
    let (backend_http, backend_tcp) = (free_port(), free_port());
    let (http_route, tcp_route) = (free_port(), free_port());
    let backend = format!("spiffe://{TD}/backend");
    let _proxies = Proxies(vec![
        proxy(
            &d,
            "backend-http",
            BACKEND_GID,
            &[
                format!("--inbound-listen=127.0.0.1:{backend_http}"),
                format!("--inbound-forward=127.0.0.1:{app}"),
            ],
            backend_http,
        ),
        proxy(
            &d,
            "backend-tcp",
            BACKEND_GID,
            &[
                format!("--inbound-listen=127.0.0.1:{backend_tcp}"),
                format!("--inbound-forward=127.0.0.1:{echo}"),
                "--inbound-protocol=tcp".to_owned(),
            ],
            backend_tcp,
        ),
        proxy(
            &d,
            "frontend",
            FRONTEND_GID,
            &[
                format!("--outbound=127.0.0.1:{http_route},127.0.0.1:{backend_http},{backend}"),
                format!("--outbound=127.0.0.1:{tcp_route},127.0.0.1:{backend_tcp},{backend}"),
            ],
            tcp_route,
        ),
    ]);
    wait_for(
        "traffic through the proxies",
        Duration::from_secs(20),
        || common::http_request(http_route, "GET", "/ready").0 == 200,
    );

    let stop = AtomicBool::new(false);
    let (fresh, http, kept) = (Tally::default(), Tally::default(), Tally::default());
    let started = Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(|| handshakes(tcp_route, &stop, &fresh));
        scope.spawn(|| requests(http_route, &stop, &http));
        scope.spawn(|| long_lived(tcp_route, &stop, &kept));
        rotate(&d, "x509", Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
    });
    let x509_took = started.elapsed();

    // JWT: fresh tokens validated throughout a rotation of the JWT authority.
    let stop = AtomicBool::new(false);
    let (via_agent, offline) = (Tally::default(), Tally::default());
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let (agent_ok, offline_ok) = jwt_round(&d);
                via_agent.record(agent_ok);
                offline.record(offline_ok);
            }
        });
        rotate(&d, "jwt", Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
    });

    let report = format!(
        "X.509 rotation ({:.1} s): fresh mTLS handshakes {:?}, HTTP requests {:?}, long-lived \
         connection lines {:?}; JWT rotation: validated through the agent {:?}, offline {:?} \
         (attempted, failed)",
        x509_took.as_secs_f64(),
        fresh.figures(),
        http.figures(),
        kept.figures(),
        via_agent.figures(),
        offline.figures(),
    );
    println!("R2: {report}");
    for (what, tally, least) in [
        ("fresh handshakes", &fresh, 100),
        ("HTTP requests", &http, 100),
        ("long-lived lines", &kept, 50),
        ("JWT validations through the agent", &via_agent, 20),
        ("offline JWT validations", &offline, 20),
    ] {
        let (attempted, failed) = tally.figures();
        assert!(
            attempted >= least,
            "too little {what}: {report}\n{}",
            d.logs()
        );
        assert_eq!(failed, 0, "{what} failed: {report}\n{}", d.logs());
    }
}
