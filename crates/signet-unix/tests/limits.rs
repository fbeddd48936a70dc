//! Connection limits and accept errors. The accept-error test runs out of file descriptors for
//! real, in a child process with a lowered descriptor limit.

use std::process::Command;
use std::time::{Duration, Instant};

use signet_unix::{AcceptErrors, ConnectionLimiter, ConnectionLimits, Refusal};

#[test]
fn slots_are_counted_per_uid_and_in_total_and_released_on_drop() {
    let limiter = ConnectionLimiter::new(ConnectionLimits {
        total: 3,
        per_peer: 2,
    });
    let a1 = limiter.try_acquire(1000).unwrap();
    let _a2 = limiter.try_acquire(1000).unwrap();
    assert_eq!(limiter.try_acquire(1000).unwrap_err(), Refusal::PerPeer);
    let _b1 = limiter.try_acquire(2000).unwrap();
    assert_eq!(limiter.try_acquire(3000).unwrap_err(), Refusal::Total);
    assert_eq!(limiter.open(), 3);
    drop(a1);
    assert_eq!(limiter.open(), 2);
    let _a3 = limiter.try_acquire(1000).unwrap();
    assert_eq!(limiter.refused(Refusal::PerPeer), 1);
    assert_eq!(limiter.refused(Refusal::Total), 1);
}

#[test]
fn the_total_fits_the_descriptor_limit() {
    let limits = ConnectionLimits {
        total: usize::MAX,
        per_peer: usize::MAX,
    }
    .within_descriptor_limit(100, 2);
    let descriptors = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap();
    assert_eq!(limits.total as u64, (descriptors - 100) / 2);
    assert_eq!(limits.per_peer, limits.total);
}

const CHILD: &str = "SIGNET_TEST_ACCEPT_ERRORS";

/// Out of descriptors, `accept` fails at once and keeps failing: retried at once it spins a
/// core. With `AcceptErrors` a second holds about ten attempts.
#[test]
fn accept_errors_pause_instead_of_spinning() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "out_of_descriptors", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let attempts: u64 = said
        .lines()
        .find_map(|l| l.strip_prefix("failed accepts in one second: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!((2..=15).contains(&attempts), "{attempts} attempts");
}

#[test]
fn out_of_descriptors() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    // A small limit, so running out takes a few files.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(128),
            maximum: limit.maximum,
        },
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    runtime.block_on(async {
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        // A client is queued; then every descriptor is taken.
        let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let mut held = Vec::new();
        while let Ok(file) = std::fs::File::open("/dev/null") {
            held.push(file);
        }
        let mut errors = AcceptErrors::new("test");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(1) {
            match listener.accept().await {
                Ok(_) => panic!("accepted without a free descriptor"),
                Err(error) => errors.pause_after(&error).await,
            }
        }
        drop(held);
        println!("failed accepts in one second: {}", errors.total());
    });
}
