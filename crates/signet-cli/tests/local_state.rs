//! Where the daemons keep their state on the host: a non-root server in a directory the kubelet
//! made (emptyDir: root:<fsGroup> 2777), and a quickstart whose predictable directory another
//! user planted first. Real `signet` processes; uid switches need root (as in CI).

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Killed, TD, free_port, http_get, my_uid, signet_bin, wait_for};

#[test]
fn a_non_root_server_runs_in_a_kubelet_made_empty_dir() {
    if my_uid() != 0 {
        eprintln!("skipping: needs root to switch to uid 65532");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let volume = base.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    std::fs::set_permissions(&volume, std::fs::Permissions::from_mode(0o2777)).unwrap();
    let server = |data_dir: &std::path::Path, health: u16| {
        let mut command = Command::new(signet_bin());
        command
            .args(["server", "--trust-domain", TD])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--bind-address", &format!("127.0.0.1:{}", free_port())])
            .args(["--health-address", &format!("127.0.0.1:{health}")])
            .uid(65532)
            .gid(65532)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    };
    // As the chart runs it: the data directory is a subdirectory of the volume.
    let health = free_port();
    let child = Killed(server(&volume.join("server"), health).spawn().unwrap());
    wait_for("the unprivileged server", Duration::from_secs(60), || {
        http_get(health, "/readyz").0 == 200
    });
    let data = std::fs::metadata(volume.join("server")).unwrap();
    assert_eq!((data.uid(), data.mode() & 0o7777), (65532, 0o700));
    assert!(volume.join("server/admin.sock").exists());
    drop(child);
    // The mount point itself cannot be made private by uid 65532: a clear refusal, no chmod.
    let out = server(&volume, free_port()).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("belongs to uid 0") && said.contains("subdirectory"),
        "{said}"
    );
    assert_eq!(std::fs::metadata(&volume).unwrap().mode() & 0o7777, 0o2777);
}

#[test]
fn quickstart_refuses_a_directory_another_user_planted() {
    if my_uid() != 0 {
        eprintln!("skipping: needs root to plant files as another user");
        return;
    }
    // TMPDIR stands in for /tmp: the attacker pre-creates the predictable quickstart directory
    // with their own CA key in it.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let planted = tmp.path().join("signet-quickstart-0");
    std::fs::create_dir_all(planted.join("server")).unwrap();
    std::fs::write(planted.join("server/ca-keys.json"), b"{\"attacker\": true}").unwrap();
    std::fs::set_permissions(
        planted.join("server/ca-keys.json"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    for path in [
        &planted,
        &planted.join("server"),
        &planted.join("server/ca-keys.json"),
    ] {
        std::os::unix::fs::chown(path, Some(4242), Some(4242)).unwrap();
    }
    let out = Command::new(signet_bin())
        .arg("quickstart")
        .args(["--bind-address", &format!("127.0.0.1:{}", free_port())])
        .env("TMPDIR", tmp.path())
        .env_remove("SIGNET_QUICKSTART_DIR")
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("uid 4242"), "{said}");
    // Nothing of ours was written into it.
    let entries: Vec<_> = std::fs::read_dir(planted.join("server")).unwrap().collect();
    assert_eq!(entries.len(), 1, "only the planted key file");

    // Our own directory with a key file another user slipped in: refused as well.
    let own = tmp.path().join("own");
    std::fs::create_dir_all(own.join("server")).unwrap();
    std::fs::set_permissions(own.join("server"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::copy(
        planted.join("server/ca-keys.json"),
        own.join("server/ca-keys.json"),
    )
    .unwrap();
    std::os::unix::fs::chown(own.join("server/ca-keys.json"), Some(4242), Some(4242)).unwrap();
    let out = Command::new(signet_bin())
        .arg("quickstart")
        .arg("--data-dir")
        .arg(&own)
        .args(["--bind-address", &format!("127.0.0.1:{}", free_port())])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("cannot be trusted") && said.contains("uid 4242"),
        "{said}"
    );
}

/// Lost CA keys are lost state, not a first start: a server whose journal records a CA refuses to
/// start without `ca-keys.json` (it used to create a new CA and come up "ready" with a bundle no
/// agent trusted), and creates a new one only when told to.
#[test]
fn a_database_restored_from_an_older_copy_is_refused() {
    let mut d = common::Deployment::start();
    d.kill_server();
    let db = d.server_dir().join("signet.db");
    let old_copy = d.server_dir().join("old.db");
    // An SQLite backup taken now (WAL folded in), before the next change.
    let status = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; s=sqlite3.connect(sys.argv[1]); d=sqlite3.connect(sys.argv[2]); s.backup(d)")
        .arg(&db)
        .arg(&old_copy)
        .status()
        .unwrap();
    assert!(status.success());
    d.start_server();
    let entry = d.create_entry("spiffe://example.org/after-backup", "unix:uid:4321", &[]);
    assert!(!entry.is_empty());
    d.kill_server();
    std::fs::rename(&old_copy, &db).unwrap();
    for stale in ["signet.db-wal", "signet.db-shm"] {
        let _ = std::fs::remove_file(d.server_dir().join(stale));
    }

    let server_dir = d.server_dir();
    let server = |extra: &[&str]| server_in(&server_dir, extra);
    let out = server(&[]).wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("committed changes") && said.contains("--accept-data-loss"),
        "{said}"
    );

    // Accepted deliberately: the server serves what the copy holds.
    let child = Killed(server(&["--accept-data-loss"]));
    wait_for(
        "the server on the older copy",
        Duration::from_secs(60),
        || d.admin(&["entry", "list", "-o", "json"]).status.success(),
    );
    let list = d.admin(&["entry", "list", "-o", "json"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(!text.contains("after-backup"), "{text}");
    drop(child);
}

#[test]
fn a_missing_key_store_with_a_ca_journal_is_refused() {
    let mut d = common::Deployment::start();
    let bundle_before = std::fs::read(d.server_dir().join("bundle.pem")).unwrap();
    d.kill_server();
    let keys = d.server_dir().join("ca-keys.json");
    std::fs::rename(&keys, d.server_dir().join("ca-keys.json.moved")).unwrap();
    let server_dir = d.server_dir();
    let server = |extra: &[&str]| server_in(&server_dir, extra);
    let out = server(&[]).wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("ca-keys.json is missing") && said.contains("--new-ca"),
        "{said}"
    );
    assert!(!keys.exists(), "no new CA was created");

    // Restored: the same CA comes back.
    std::fs::rename(d.server_dir().join("ca-keys.json.moved"), &keys).unwrap();
    d.start_server();
    assert_eq!(
        std::fs::read(d.server_dir().join("bundle.pem")).unwrap(),
        bundle_before
    );
    d.kill_server();

    // Deliberately replaced: --new-ca starts a new CA.
    std::fs::remove_file(&keys).unwrap();
    let child = Killed(server(&["--new-ca"]));
    wait_for("the new CA", Duration::from_secs(60), || keys.exists());
    drop(child);
}

/// A limit of zero would refuse everything: each daemon refuses it at start, naming the flag.
#[test]
fn zero_valued_limits_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (args, flag) in [
        (
            vec![
                "server",
                "--trust-domain",
                TD,
                "--max-agent-connections",
                "0",
            ],
            "--max-agent-connections",
        ),
        (
            vec![
                "server",
                "--trust-domain",
                TD,
                "--tls-handshake-timeout",
                "1ms",
            ],
            "--tls-handshake-timeout",
        ),
        (
            vec![
                "agent",
                "--trust-domain",
                TD,
                "--max-streams-per-connection",
                "0",
            ],
            "--max-streams-per-connection",
        ),
        (
            vec![
                "agent",
                "--trust-domain",
                TD,
                "--idle-connection-timeout",
                "0s",
            ],
            "--idle-connection-timeout",
        ),
        (
            vec![
                "proxy",
                "--outbound=127.0.0.1:1,127.0.0.1:2,spiffe://example.org/x",
                "--max-handshakes-per-source",
                "0",
            ],
            "--max-handshakes-per-source",
        ),
    ] {
        let mut command = Command::new(signet_bin());
        command.args(&args);
        if args[0] != "proxy" {
            command.arg("--data-dir").arg(dir.path().join("state"));
        }
        let out = command.output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(said.contains(flag), "{args:?}: {said}");
    }
}

/// A server on `server_dir` with fresh ports and `extra` flags; stderr piped.
fn server_in(server_dir: &std::path::Path, extra: &[&str]) -> std::process::Child {
    Command::new(signet_bin())
        .args(["server", "--trust-domain", TD])
        .arg("--data-dir")
        .arg(server_dir)
        .args(["--bind-address", &format!("127.0.0.1:{}", free_port())])
        .args(["--health-address", &format!("127.0.0.1:{}", free_port())])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}
