//! End-to-end tests of standalone mode: real `signet server` and `signet agent` processes, real
//! TLS on loopback, real Unix sockets, and the third-party `spiffe` crate as the workload.

#![expect(clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use common::{Deployment, TD, my_uid, signet_bin, wait_for};
use futures::StreamExt;
use spiffe::WorkloadApiClient;
use spiffe::bundle::BundleSource;

async fn client(d: &Deployment) -> WorkloadApiClient {
    WorkloadApiClient::connect_to(d.endpoint())
        .await
        .expect("connect with the spiffe crate")
}

/// Retries until the agent has the identity (entries propagate asynchronously).
async fn fetch_x509(d: &Deployment) -> spiffe::X509Svid {
    let client = client(d).await;
    for _ in 0..100 {
        if let Ok(svid) = client.fetch_x509_svid().await {
            return svid;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no X509-SVID\n{}", d.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn spiffe_crate_fetches_svids_bundles_and_jwts() {
    let d = Deployment::start();
    let id = format!("spiffe://{TD}/interop");
    d.create_entry(
        &id,
        &format!("unix:uid:{}", my_uid()),
        &["--dns-name", "interop.local"],
    );

    let svid = fetch_x509(&d).await;
    assert_eq!(svid.spiffe_id().to_string(), id);

    let client = client(&d).await;
    let bundles = client.fetch_x509_bundles().await.unwrap();
    let td = spiffe::TrustDomain::new(TD).unwrap();
    let bundle = bundles
        .bundle_for_trust_domain(&td)
        .unwrap()
        .expect("own trust domain bundle");
    assert!(!bundle.authorities().is_empty());

    // The chain verifies against the bundle with OpenSSL too.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(signet_bin())
        .args(["svid", "fetch", "-o", "json", "--write"])
        .arg(dir.path())
        .arg("--socket")
        .arg(d.endpoint())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verify = Command::new("openssl")
        .args(["verify", "-x509_strict", "-purpose", "sslclient", "-CAfile"])
        .arg(dir.path().join("bundle.0.pem"))
        .arg(dir.path().join("svid.0.pem"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // The serial the CLI prints is the one OpenSSL reads from the certificate.
    let fetched: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        fetched[0]["dns_names"],
        serde_json::json!(["interop.local"])
    );
    let openssl_serial = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(dir.path().join("svid.0.pem"))
        .output()
        .unwrap();
    let openssl_serial = String::from_utf8_lossy(&openssl_serial.stdout);
    assert_eq!(
        openssl_serial.trim().trim_start_matches("serial="),
        fetched[0]["serial"].as_str().unwrap().to_uppercase()
    );

    // JWT-SVID: fetched, validated by the agent, and validated locally by the spiffe crate.
    let token = client.fetch_jwt_token(["audience-a"], None).await.unwrap();
    let validated = client
        .validate_jwt_token("audience-a", &token)
        .await
        .unwrap();
    assert_eq!(validated.spiffe_id().to_string(), id);
    assert!(
        client
            .validate_jwt_token("audience-b", &token)
            .await
            .is_err(),
        "wrong audience must fail"
    );
    let jwt_bundles = client.fetch_jwt_bundles().await.unwrap();
    let local = spiffe::JwtSvid::parse_and_validate(&token, &jwt_bundles, &["audience-a"]).unwrap();
    assert_eq!(local.spiffe_id().to_string(), id);
    // A second fetch for the same audience comes from the agent's cache.
    assert_eq!(
        client.fetch_jwt_token(["audience-a"], None).await.unwrap(),
        token
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_is_pushed_to_open_streams() {
    let d = Deployment::start();
    let id = format!("spiffe://{TD}/rotating");
    d.create_entry(
        &id,
        &format!("unix:uid:{}", my_uid()),
        &["--x509-svid-ttl", "6s"],
    );
    fetch_x509(&d).await;
    let client = client(&d).await;
    let mut stream = client.stream_x509_svids().await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    let second = tokio::time::timeout(Duration::from_secs(15), stream.next())
        .await
        .expect("a rotation within 15 s")
        .unwrap()
        .unwrap();
    assert_eq!(second.spiffe_id(), first.spiffe_id());
    assert_ne!(
        second.leaf().as_ref(),
        first.leaf().as_ref(),
        "a new certificate was pushed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn x509_source_follows_updates() {
    let d = Deployment::start();
    let id = format!("spiffe://{TD}/source");
    d.create_entry(&id, &format!("unix:uid:{}", my_uid()), &[]);
    fetch_x509(&d).await;
    let source = spiffe::X509Source::builder()
        .endpoint(d.endpoint())
        .build()
        .await
        .unwrap();
    let svid = source.svid().unwrap();
    assert_eq!(svid.spiffe_id().to_string(), id);
    let td = spiffe::TrustDomain::new(TD).unwrap();
    assert!(source.bundle_for_trust_domain(&td).unwrap().is_some());
}

#[test]
fn unregistered_user_gets_permission_denied() {
    let d = Deployment::start();
    d.create_entry(
        &format!("spiffe://{TD}/root-only"),
        &format!("unix:uid:{}", my_uid()),
        &[],
    );
    wait_for("the SVID", Duration::from_secs(10), || {
        d.workload(&["svid", "fetch"]).status.success()
    });
    if my_uid() != 0 {
        eprintln!("skipping the other-user half: needs root to switch uid");
        return;
    }
    let out = Command::new(signet_bin())
        .args(["svid", "fetch", "--socket"])
        .arg(d.endpoint())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no identity"), "{err}");
}

#[test]
fn garbage_and_oversized_messages_do_not_hurt_the_agent() {
    use std::io::{Read, Write};
    let d = Deployment::start();
    d.create_entry(
        &format!("spiffe://{TD}/g"),
        &format!("unix:uid:{}", my_uid()),
        &[],
    );
    let mut raw = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(&[0xff; 4096]).unwrap();
    let mut buf = Vec::new();
    let _ = raw.read_to_end(&mut buf);
    // An oversized request is refused with a gRPC status, not a crash.
    let huge = "x".repeat(100 * 1024);
    let out = d.workload(&["jwt", "validate", "--audience", "a", &huge]);
    assert!(!out.status.success());
    // The agent still serves.
    wait_for("the SVID", Duration::from_secs(10), || {
        d.workload(&["svid", "fetch"]).status.success()
    });
    let out = d.workload(&["jwt", "validate", "--audience", "a", "not.a.jwt"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("InvalidArgument"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn server_restart_keeps_workloads_served_and_entries() {
    let mut d = Deployment::start();
    let selector = format!("unix:uid:{}", my_uid());
    d.create_entry(&format!("spiffe://{TD}/before"), &selector, &[]);
    wait_for("the SVID", Duration::from_secs(10), || {
        d.workload(&["svid", "fetch"]).status.success()
    });
    d.kill_server();
    // Cached SVIDs keep being served while the server is down.
    let out = d.workload(&["svid", "fetch", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.start_server();
    // Entries survived the restart (SQLite), and new ones reach the reconnected agent.
    let list = d.admin(&["entry", "list", "-o", "json"]);
    let entries: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(entries.as_array().unwrap().len(), 1);
    d.create_entry(&format!("spiffe://{TD}/after"), &selector, &[]);
    wait_for(
        "the new identity after the restart",
        Duration::from_secs(30),
        || {
            let out = d.workload(&["svid", "fetch", "-o", "json"]);
            String::from_utf8_lossy(&out.stdout).contains("/after")
        },
    );
}

#[test]
fn agent_restart_reuses_its_identity() {
    let mut d = Deployment::start();
    d.create_entry(
        &format!("spiffe://{TD}/a"),
        &format!("unix:uid:{}", my_uid()),
        &[],
    );
    wait_for("the SVID", Duration::from_secs(10), || {
        d.workload(&["svid", "fetch"]).status.success()
    });
    let id_before = d.agent_id.clone();
    d.kill_agent();
    d.start_agent(None);
    assert_eq!(d.agent_id, id_before);
    wait_for("the SVID after restart", Duration::from_secs(10), || {
        d.workload(&["svid", "fetch"]).status.success()
    });
}

#[test]
fn corrupt_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("server")).unwrap();
    std::fs::write(dir.path().join("server/signet.db"), vec![0x42; 8192]).unwrap();
    let out = Command::new(signet_bin())
        .args([
            "server",
            "--trust-domain",
            TD,
            "--bind-address",
            "127.0.0.1:0",
            "--health-address",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("server"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is unusable"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("server/signet.db")).unwrap(),
        vec![0x42; 8192],
        "never replaced"
    );
}

/// The admin CLI's agent commands against a real agent (the agent API's side of bans and
/// evictions is tested in process in `signet-server/tests/agent_api.rs`).
#[test]
fn agents_are_listed_banned_and_evicted_from_the_cli() {
    let d = Deployment::start();
    let listed = |d: &Deployment| {
        let list = d.admin(&["agent", "list", "-o", "json"]);
        String::from_utf8_lossy(&list.stdout).contains(&d.agent_id)
    };
    assert!(listed(&d));
    for command in ["ban", "unban", "evict"] {
        let out = d.admin(&["agent", command, &d.agent_id]);
        assert!(
            out.status.success(),
            "agent {command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(!listed(&d), "an evicted agent is no longer listed");
}

#[test]
fn health_and_metrics_endpoints() {
    let d = Deployment::start();
    d.create_entry(
        &format!("spiffe://{TD}/m"),
        &format!("unix:uid:{}", my_uid()),
        &[],
    );
    wait_for("the SVID", Duration::from_secs(10), || {
        d.workload(&["svid", "fetch"]).status.success()
    });
    for port in [d.health_port, d.agent_health_port] {
        assert_eq!(common::http_get(port, "/livez").0, 200);
        assert_eq!(common::http_get(port, "/readyz").0, 200);
    }
    let (_, server) = common::http_get(d.health_port, "/metrics");
    assert!(
        server.contains("signet_server_svids_signed_total{kind=\"x509\"}"),
        "{server}"
    );
    assert!(
        server.contains("signet_server_attestations_total{result=\"ok\"} 1"),
        "{server}"
    );
    assert!(server.contains("signet_server_entries 1\n"), "{server}");
    let (_, agent) = common::http_get(d.agent_health_port, "/metrics");
    assert!(
        agent.contains("signet_agent_workload_calls_total{method=\"FetchX509SVID\",result=\"ok\"}"),
        "{agent}"
    );
    assert!(agent.contains("signet_agent_svids 1"), "{agent}");
    assert!(d.workload(&["healthcheck"]).status.success());
    assert!(d.admin(&["healthcheck"]).status.success());
}

/// `signet jwt validate --bundle`: a JWT-SVID checked offline against the bundle the server
/// publishes (what the kind e2e does with the signet-bundle ConfigMap), no agent involved.
#[test]
fn jwt_validates_offline_against_the_published_bundle() {
    let d = Deployment::start();
    d.create_entry(
        &format!("spiffe://{TD}/jwt"),
        &format!("unix:uid:{}", my_uid()),
        &[],
    );
    let mut fetched = None;
    wait_for("a JWT-SVID", Duration::from_secs(10), || {
        let out = d.workload(&["jwt", "fetch", "--audience", "e2e", "-o", "json"]);
        fetched = out.status.success().then_some(out.stdout);
        fetched.is_some()
    });
    let svids: serde_json::Value = serde_json::from_slice(&fetched.unwrap()).unwrap();
    let token = svids[0]["token"].as_str().unwrap().to_owned();
    let bundle = d.admin(&["bundle", "show", "--format", "spiffe"]);
    assert!(bundle.status.success());
    let dir = tempfile::tempdir().unwrap();
    let bundle_file = dir.path().join("bundle.spiffe");
    std::fs::write(&bundle_file, &bundle.stdout).unwrap();
    let validate = |audience: &str, trust_domain: &str, token: &str| {
        Command::new(signet_bin())
            .args(["jwt", "validate", "-o", "json", "--audience", audience])
            .args(["--trust-domain", trust_domain, "--bundle"])
            .arg(&bundle_file)
            .arg(token)
            .output()
            .unwrap()
    };

    let ok = validate("e2e", TD, &token);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let view: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(view["spiffe_id"], format!("spiffe://{TD}/jwt"));

    let wrong_audience = validate("other", TD, &token);
    assert!(!wrong_audience.status.success());
    // The bundle is declared for another trust domain: the token's issuer has no bundle.
    let wrong_domain = validate("e2e", "other.example", &token);
    assert!(!wrong_domain.status.success());
    let (head, _) = token.rsplit_once('.').unwrap();
    let forged = validate("e2e", TD, &format!("{head}.AAAA"));
    assert!(!forged.status.success());
    let err = String::from_utf8_lossy(&forged.stderr);
    assert!(err.contains("invalid JWT-SVID"), "{err}");
    // The token can come from standard input, out of the process list.
    let mut piped = Command::new(signet_bin())
        .args([
            "jwt",
            "validate",
            "--audience",
            "e2e",
            "--trust-domain",
            TD,
            "--bundle",
        ])
        .arg(&bundle_file)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = piped.stdin.take().unwrap();
        writeln!(stdin, "{token}").unwrap();
    }
    assert!(piped.wait_with_output().unwrap().status.success());
    // --trust-domain without --bundle is a usage error, and so is the reverse.
    let usage = Command::new(signet_bin())
        .args(["jwt", "validate", "--audience", "e2e", "--trust-domain", TD])
        .arg(&token)
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
    // --bundle without --trust-domain is a usage error.
    let usage = Command::new(signet_bin())
        .args(["jwt", "validate", "--audience", "e2e", "--bundle"])
        .arg(&bundle_file)
        .arg(&token)
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
}

/// Entries that could never serve anyone are refused when written, with the reason.
#[test]
fn entries_that_could_never_match_are_refused() {
    let d = Deployment::start();
    let server = format!("spiffe://{TD}/signet/server");
    let workload = format!("spiffe://{TD}/some/workload");
    for (parent, selector, why) in [
        (d.agent_id.as_str(), "unix:uid:abc", "not a value"),
        (d.agent_id.as_str(), "unix:uid:-1", "not a value"),
        (d.agent_id.as_str(), "unix:uid: 1001", "not a value"),
        (d.agent_id.as_str(), "unix:uid:4294967296", "not a value"),
        (d.agent_id.as_str(), "unix:path:bin/sleep", "not a value"),
        (
            d.agent_id.as_str(),
            "unix:colour:blue",
            "unknown unix selector",
        ),
        (d.agent_id.as_str(), "k8s:ns:default", "only unix:"),
        (server.as_str(), "unix:uid:0", "must be an agent"),
        (workload.as_str(), "unix:uid:0", "must be an agent"),
    ] {
        let out = d.admin(&[
            "entry",
            "create",
            "--spiffe-id",
            &format!("spiffe://{TD}/never"),
            "--parent-id",
            parent,
            "--selector",
            selector,
        ]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{selector} under {parent} was accepted"
        );
        assert!(said.contains(why), "{selector}: {said}");
    }
}
