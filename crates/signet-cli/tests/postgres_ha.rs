//! Standalone HA with real processes: two `signet server` processes on one PostgreSQL (started
//! by the test), an agent given both addresses. The server the agent uses is killed with
//! SIGKILL, restarted, and the other killed: whichever server the agent used died once; the
//! workload keeps its SVIDs throughout, the agent fails over, and entries created on the
//! survivor reach the workload.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{TD, free_port, my_uid, signet_bin, wait_for};
use signet_test_support::postgres::TestPostgres;

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn server(dir: &Path, name: &str, port: u16, db: &TestPostgres, key: &Path) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let socket = dir.join(name).join("admin.sock");
    // A killed server leaves its socket behind.
    let _ = std::fs::remove_file(&socket);
    let child = Command::new(signet_bin())
        .args(["server", "--trust-domain", TD])
        .args(["--bind-address", &format!("127.0.0.1:{port}")])
        .args(["--health-address", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.join(name))
        .args(["--datastore", &db.url()])
        .arg("--datastore-ca-key-file")
        .arg(key)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_for(&format!("server {name}"), Duration::from_secs(30), || {
        socket.exists()
    });
    child
}

fn admin(dir: &Path, name: &str, args: &[&str]) -> Output {
    Command::new(signet_bin())
        .args(args)
        .arg("--admin-socket")
        .arg(dir.join(name).join("admin.sock"))
        .output()
        .unwrap()
}

fn svids(socket: &Path) -> Option<Vec<String>> {
    let out = Command::new(signet_bin())
        .args(["svid", "fetch", "-o", "json", "--socket"])
        .arg(format!("unix://{}", socket.display()))
        .output()
        .unwrap();
    let fetched: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(
        fetched
            .as_array()?
            .iter()
            .filter_map(|s| s["spiffe_id"].as_str().map(str::to_owned))
            .collect(),
    )
}

fn create_entry(dir: &Path, server: &str, agent: &str, path: &str) {
    let out = admin(
        dir,
        server,
        &[
            "entry",
            "create",
            "--spiffe-id",
            &format!("spiffe://{TD}/{path}"),
            "--parent-id",
            agent,
            "--selector",
            &format!("unix:uid:{}", my_uid()),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_agent_fails_over_when_its_server_is_killed() {
    let db = TestPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let key: PathBuf = dir.join("ca-state.key");
    std::fs::write(&key, "3c".repeat(32)).unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let mut processes = Killed(vec![
        server(dir, "a", port_a, &db, &key),
        server(dir, "b", port_b, &db, &key),
    ]);
    let token = admin(dir, "a", &["token", "create", "-o", "json"]);
    let token: serde_json::Value = serde_json::from_slice(&token.stdout).unwrap();
    let socket = dir.join("sockets").join("api.sock");
    let agent_log = std::fs::File::create(dir.join("agent.log")).unwrap();
    processes.0.push(
        Command::new(signet_bin())
            .args(["agent", "--trust-domain", TD])
            .args([
                "--server-address",
                &format!("127.0.0.1:{port_a},127.0.0.1:{port_b}"),
            ])
            .arg("--trust-bundle")
            .arg(dir.join("a").join("bundle.pem"))
            .args(["--join-token", token["token"].as_str().unwrap()])
            .arg("--data-dir")
            .arg(dir.join("agent"))
            .arg("--socket-path")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(agent_log)
            .spawn()
            .unwrap(),
    );
    wait_for("the agent socket", Duration::from_secs(30), || {
        socket.exists()
    });
    let agents = admin(dir, "b", &["agent", "list", "-o", "json"]);
    let agents: serde_json::Value = serde_json::from_slice(&agents.stdout).unwrap();
    let agent = agents[0]["spiffe_id"].as_str().unwrap().to_owned();

    create_entry(dir, "b", &agent, "first");
    wait_for("the first SVID", Duration::from_secs(15), || {
        svids(&socket).is_some_and(|s| s.len() == 1)
    });

    // Kill one server, then the other's turn: whichever the agent used, it ends on a live one.
    let killed = Instant::now();
    let mut a = processes.0.remove(0);
    a.kill().unwrap();
    a.wait().unwrap();
    create_entry(dir, "b", &agent, "second");
    wait_for(
        "the entry made on B after A died",
        Duration::from_secs(30),
        || svids(&socket).is_some_and(|s| s.len() == 2),
    );
    println!(
        "A killed → entry through B at the workload: {:?}",
        killed.elapsed()
    );

    // A comes back, B dies: the agent was on one of them when it died.
    processes.0.push(server(dir, "a", port_a, &db, &key));
    let killed = Instant::now();
    let mut b = processes.0.remove(0);
    b.kill().unwrap();
    b.wait().unwrap();
    create_entry(dir, "a", &agent, "third");
    wait_for(
        "the entry made on A after B died",
        Duration::from_secs(30),
        || svids(&socket).is_some_and(|s| s.len() == 3),
    );
    println!(
        "B killed → entry through A at the workload: {:?}",
        killed.elapsed()
    );
    let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
    assert!(!log.contains("expired"), "{log}");
}

/// `signet datastore migrate` moves a running SQLite deployment to PostgreSQL: the same CA (the
/// bundle is unchanged), the agent known and served, entries kept; running it twice is harmless.
#[test]
fn a_sqlite_server_moves_to_postgres_with_its_agent_and_workloads() {
    let db = TestPostgres::start();
    let mut d = common::Deployment::start();
    d.create_entry(
        &format!("spiffe://{TD}/first"),
        &format!("unix:uid:{}", my_uid()),
        &[],
    );
    wait_for("the first SVID", Duration::from_secs(15), || {
        svids(&d.socket()).is_some_and(|s| s.len() == 1)
    });
    let bundle = d.admin(&["bundle", "show"]).stdout;
    d.kill_server();

    let key = d.dir.path().join("ca-state.key");
    std::fs::write(&key, "4d".repeat(32)).unwrap();
    let migrate = || {
        Command::new(signet_bin())
            .args(["datastore", "migrate", "--from"])
            .arg(d.server_dir().join("signet.db"))
            .args(["--to", &db.url(), "--datastore-ca-key-file"])
            .arg(&key)
            .output()
            .unwrap()
    };
    let first = migrate();
    let report = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        first.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(report.contains("CA state copied"), "{report}");
    assert!(report.contains("verified"), "{report}");
    assert!(report.contains("entries"), "{report}");
    let again = migrate();
    let report = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(again.status.success(), "{report}");
    assert!(report.contains("already in the database"), "{report}");
    assert_eq!(db.psql("SELECT count(*) FROM entries"), "1");

    d.server_env = vec![
        ("SIGNET_DATASTORE", db.url()),
        ("SIGNET_DATASTORE_CA_KEY_FILE", key.display().to_string()),
    ];
    let _ = std::fs::remove_file(d.admin_socket());
    d.start_server();
    assert_eq!(d.admin(&["bundle", "show"]).stdout, bundle, "the same CA");
    d.create_entry(
        &format!("spiffe://{TD}/second"),
        &format!("unix:uid:{}", my_uid()),
        &[],
    );
    wait_for(
        "an entry made on the PostgreSQL server",
        Duration::from_secs(30),
        || svids(&d.socket()).is_some_and(|s| s.len() == 2),
    );
}
