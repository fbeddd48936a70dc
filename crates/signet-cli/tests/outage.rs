//! Server outages with real processes (issue 18): an outage longer than a workload SVID's
//! lifetime (the agent never serves the expired SVID — a fetch gets UNAVAILABLE saying why and
//! the agent's metrics count it — and once the server is back the workload gets a fresh SVID
//! without doing anything); one longer than the agent SVID's; and an agent restarted during an
//! outage, which serves the SVIDs it had from its data directory.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{Deployment, TD, my_uid, wait_for};

fn fetch(d: &Deployment) -> (bool, String) {
    let out = d.workload(&["svid", "fetch", "-o", "json"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn an_expired_svid_is_never_served_and_a_fresh_one_comes_back_with_the_server() {
    let mut d = Deployment::start();
    d.create_entry(
        &format!("spiffe://{TD}/short"),
        &format!("unix:uid:{}", my_uid()),
        &["--x509-svid-ttl", "6s"],
    );
    wait_for("the SVID", Duration::from_secs(15), || fetch(&d).0);
    d.kill_server();
    let started = Instant::now();
    // The fetch that is refused first (a fetch waits up to 10 s for a pending SVID: the agent
    // keeps trying to have it re-signed).
    let (asked_at, refused) = loop {
        let asked_at = started.elapsed();
        let (served, text) = fetch(&d);
        if !served {
            break (asked_at, text);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the expired SVID is still served"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(refused.contains("expired"), "{refused}");
    assert!(
        refused.to_lowercase().contains("unavailable") || refused.contains("retry"),
        "{refused}"
    );
    // The SVID had at most its 6 s lifetime left when the server died (it is re-signed at half
    // life): withheld at its expiry, not later.
    assert!(
        asked_at < Duration::from_secs(7),
        "withheld only {asked_at:?} after the server died"
    );
    let (code, metrics) = common::http_request(d.agent_health_port, "GET", "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("signet_agent_svids_expired 1"),
        "{metrics}"
    );
    println!("SVID withheld {asked_at:?} after the server died");

    d.start_server();
    wait_for(
        "a fresh SVID once the server is back",
        Duration::from_secs(30),
        || fetch(&d).0,
    );
}

/// A server outage longer than the agent SVID's lifetime (issue 18, item 1): the join-token
/// agent re-attests by itself with a proof made with its expired SVID's key — no new token —
/// and serves new entries again.
#[test]
fn a_join_token_agent_recovers_after_its_svid_expired_during_an_outage() {
    let mut d =
        Deployment::start_with_env(vec![("SIGNET_AGENT_SVID_TTL", "6s".into())], Vec::new());
    d.create_entry(
        &format!("spiffe://{TD}/before"),
        &format!("unix:uid:{}", my_uid()),
        &[],
    );
    wait_for("the first SVID", Duration::from_secs(15), || fetch(&d).0);
    d.kill_server();
    std::thread::sleep(Duration::from_secs(8));
    let down = Instant::now();
    d.start_server();
    d.create_entry(
        &format!("spiffe://{TD}/after"),
        &format!("unix:uid:{}", my_uid()),
        &[],
    );
    wait_for(
        "the entry made after the outage",
        Duration::from_secs(60),
        || fetch(&d).1.contains("/after"),
    );
    println!("recovered {:?} after the server came back", down.elapsed());
    assert!(
        d.logs().contains("re-attested with the expired agent SVID"),
        "{}",
        d.logs()
    );
}

fn serial(text: &str) -> String {
    let view: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_default();
    view[0]["serial"]
        .as_str()
        .or_else(|| view["serial"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn an_agent_restarted_while_the_server_is_down_serves_the_svids_it_had() {
    let mut d = Deployment::start();
    d.create_entry(
        &format!("spiffe://{TD}/kept"),
        &format!("unix:uid:{}", my_uid()),
        &[],
    );
    wait_for("the SVID", Duration::from_secs(15), || fetch(&d).0);
    // Let the cache writer run (it writes at most every 2 s).
    std::thread::sleep(Duration::from_secs(3));
    let (_, before) = fetch(&d);
    let served_before = serial(&before);
    assert!(!served_before.is_empty(), "{before}");

    let cache_file = d.dir.path().join("agent/svid-cache.db");
    let mode = std::fs::metadata(&cache_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the cache holds private keys");

    d.kill_server();
    d.kill_agent();
    let restarted = Instant::now();
    d.spawn_agent(None);
    let (served, after) = fetch(&d);
    assert!(served, "nothing served after the restart: {after}");
    assert_eq!(serial(&after), served_before, "a different SVID: {after}");
    println!(
        "the restarted agent served its persisted SVID {:?} after start",
        restarted.elapsed()
    );
    assert!(
        d.logs().contains("restored the persisted SVID cache"),
        "{}",
        d.logs()
    );

    d.start_server();
    d.create_entry(
        &format!("spiffe://{TD}/new"),
        &format!("unix:uid:{}", my_uid()),
        &[],
    );
    wait_for(
        "the entry made after the outage",
        Duration::from_secs(30),
        || fetch(&d).1.contains("/new"),
    );
}

#[test]
fn without_persistence_a_restarted_agent_answers_unavailable_not_permission_denied() {
    let mut d = Deployment::start_with_agent_env(vec![("SIGNET_PERSIST_SVIDS", "false".into())]);
    d.create_entry(
        &format!("spiffe://{TD}/kept"),
        &format!("unix:uid:{}", my_uid()),
        &[],
    );
    wait_for("the SVID", Duration::from_secs(15), || fetch(&d).0);
    assert!(!d.dir.path().join("agent/svid-cache.db").exists());
    d.kill_server();
    d.kill_agent();
    d.spawn_agent(None);
    let (served, text) = fetch(&d);
    assert!(!served);
    assert!(text.to_lowercase().contains("unavailable"), "{text}");
    assert!(!text.to_lowercase().contains("permission"), "{text}");
}
