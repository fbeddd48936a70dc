//! `signet helper` against a real server and agent: files kept current through rotations (short
//! TTLs), written with their modes, the key always the certificate's, the reload fired (command
//! and signal), JWT-SVIDs refreshed, and `--once` for init containers.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Deployment, Killed, TD, free_port, http_get, my_uid, signet_bin, wait_for};

fn helper(d: &Deployment, dir: &Path, extra: &[&str]) -> Killed {
    Killed(
        Command::new(signet_bin())
            .arg("helper")
            .args(["--socket", &d.endpoint()])
            .arg("--dir")
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn public_key(args: &[&str], file: &Path) -> String {
    let out = Command::new("openssl")
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The key file holds the key of the certificate file's leaf (checked with OpenSSL).
fn key_matches_certificate(dir: &Path) -> bool {
    let from_cert = public_key(&["x509", "-noout", "-pubkey", "-in"], &dir.join("svid.pem"));
    let from_key = public_key(&["pkey", "-pubout", "-in"], &dir.join("svid_key.pem"));
    from_cert == from_key
}

#[test]
fn files_stay_current_through_rotation_and_the_reload_fires() {
    let d = Deployment::start();
    d.create_entry(
        &format!("spiffe://{TD}/helper"),
        &format!("unix:uid:{}", my_uid()),
        &["--x509-svid-ttl", "6s"],
    );
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("certs");
    let reloads = work.path().join("reloads");
    let health = free_port();
    let _helper = helper(
        &d,
        &dir,
        &[
            "--cmd",
            &format!("echo reload >> {}", reloads.display()),
            "--jwt-svid",
            "billing,audit=jwt.token",
            "--health-address",
            &format!("127.0.0.1:{health}"),
        ],
    );
    let cert = dir.join("svid.pem");
    wait_for("the first files", Duration::from_secs(20), || {
        reloads.exists() && cert.exists()
    });
    let first = std::fs::read(&cert).unwrap();
    assert!(key_matches_certificate(&dir));
    assert_eq!(mode(&dir.join("svid_key.pem")), 0o600);
    assert_eq!(mode(&cert), 0o644);
    assert_eq!(mode(&dir.join("svid_bundle.pem")), 0o644);
    let bundle = std::fs::read_to_string(dir.join("svid_bundle.pem")).unwrap();
    assert!(bundle.contains("BEGIN CERTIFICATE"));
    let jwt = std::fs::read_to_string(dir.join("jwt.token")).unwrap();
    assert_eq!(jwt.split('.').count(), 3, "{jwt}");
    assert_eq!(mode(&dir.join("jwt.token")), 0o600);
    assert_eq!(http_get(health, "/readyz").0, 200);

    // The SVID rotates at half its 6 s lifetime: new files, the key still the certificate's, and
    // the command ran again.
    wait_for("a rotated certificate", Duration::from_secs(20), || {
        std::fs::read(&cert).unwrap() != first
    });
    assert!(key_matches_certificate(&dir));
    wait_for("the second reload", Duration::from_secs(10), || {
        std::fs::read_to_string(&reloads).unwrap().lines().count() >= 2
    });
    let leftovers: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn the_reload_signal_reaches_the_process_in_the_pid_file() {
    let d = Deployment::start();
    d.create_entry(
        &format!("spiffe://{TD}/signalled"),
        &format!("unix:uid:{}", my_uid()),
        &[],
    );
    let work = tempfile::tempdir().unwrap();
    let pid_file = work.path().join("server.pid");
    let hups = work.path().join("hups");
    // A stand-in for nginx: records every SIGHUP.
    let _server = Killed(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {pid}; trap 'echo hup >> {hups}' HUP; while :; do sleep 0.1; done",
                pid = pid_file.display(),
                hups = hups.display()
            ))
            .spawn()
            .unwrap(),
    );
    wait_for("the pid file", Duration::from_secs(5), || pid_file.exists());
    let _helper = helper(
        &d,
        &work.path().join("certs"),
        &["--signal", "HUP", "--pid-file", pid_file.to_str().unwrap()],
    );
    wait_for(
        "SIGHUP after the first write",
        Duration::from_secs(20),
        || std::fs::read_to_string(&hups).is_ok_and(|s| s.contains("hup")),
    );
}

#[test]
fn once_writes_and_exits_zero_or_fails_within_its_timeout() {
    let d = Deployment::start();
    let work = tempfile::tempdir().unwrap();
    // No entry for this process yet: --once gives up after its timeout with status 1.
    let out = Command::new(signet_bin())
        .args([
            "helper",
            "--once",
            "--once-timeout",
            "2s",
            "--socket",
            &d.endpoint(),
        ])
        .arg("--dir")
        .arg(work.path().join("none"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("--once-timeout"), "{said}");

    d.create_entry(
        &format!("spiffe://{TD}/init"),
        &format!("unix:uid:{}", my_uid()),
        &[],
    );
    let dir = work.path().join("certs");
    let out = Command::new(signet_bin())
        .args(["helper", "--once", "--socket", &d.endpoint()])
        .arg("--dir")
        .arg(&dir)
        .args(["--cmd", "true"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(key_matches_certificate(&dir));

    // A failing reload command fails the init container.
    let out = Command::new(signet_bin())
        .args(["helper", "--once", "--socket", &d.endpoint()])
        .arg("--dir")
        .arg(&dir)
        .args(["--cmd", "exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
