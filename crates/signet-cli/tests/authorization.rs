//! AuthorizationPolicy end to end in standalone mode, with real processes: a server, an agent,
//! two workloads (told apart by their unix group) each behind `signet proxy`, a plain HTTP
//! application and a TCP echo service, policies applied with `signet policy apply`.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Deployment, Proxies, TD, free_port, proxy, signet_bin, wait_for};
use std::os::unix::process::CommandExt;

const FRONTEND_GID: u32 = 4001;
const BACKEND_GID: u32 = 4002;
/// The ports policies name (the proxies listen on random ones).
const HTTP_PORT: &str = "8443";
const TCP_PORT: &str = "5432";

fn frontend() -> String {
    format!("spiffe://{TD}/frontend")
}

fn backend() -> String {
    format!("spiffe://{TD}/backend")
}

use signet_test_support::apps::{echo_app, echoes, http_app};

fn request(port: u16, method: &str, path: &str) -> (u16, String) {
    common::http_request(port, method, path)
}

fn apply(d: &Deployment, yaml: &str) -> String {
    let path = d.dir.path().join("policy.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = d.admin(&["policy", "apply", "-f", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn policy(name: &str, action: &str, rules: &str) -> String {
    format!(
        "apiVersion: signet.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}}}\n\
         spec:\n  targetSPIFFEIDs: [\"{}\"]\n  action: {action}\n  rules:\n{rules}",
        backend()
    )
}

struct Setup {
    d: Deployment,
    proxies: Proxies,
    http_route: u16,
    impostor_route: u16,
    tcp_route: u16,
    backend_http: u16,
    backend_metrics: u16,
}

fn setup(ttl: &str, mode: &str) -> Setup {
    let d = Deployment::start();
    d.create_entry(
        &frontend(),
        &format!("unix:gid:{FRONTEND_GID}"),
        &["--x509-svid-ttl", ttl],
    );
    d.create_entry(
        &backend(),
        &format!("unix:gid:{BACKEND_GID}"),
        &["--x509-svid-ttl", ttl],
    );
    let (app, echo) = (http_app(), echo_app());
    let (backend_http, backend_tcp, backend_metrics) = (free_port(), free_port(), free_port());
    let (http_route, tcp_route, impostor_route) = (free_port(), free_port(), free_port());
    let backend_http_proxy = proxy(
        &d,
        "backend-http",
        BACKEND_GID,
        &[
            format!("--inbound-listen=127.0.0.1:{backend_http}"),
            format!("--inbound-forward=127.0.0.1:{app}"),
            format!("--policy-port={HTTP_PORT}"),
            format!("--mode={mode}"),
            format!("--metrics-address=127.0.0.1:{backend_metrics}"),
        ],
        backend_http,
    );
    let backend_tcp_proxy = proxy(
        &d,
        "backend-tcp",
        BACKEND_GID,
        &[
            format!("--inbound-listen=127.0.0.1:{backend_tcp}"),
            format!("--inbound-forward=127.0.0.1:{echo}"),
            "--inbound-protocol=tcp".to_owned(),
            format!("--policy-port={TCP_PORT}"),
        ],
        backend_tcp,
    );
    let frontend_proxy = proxy(
        &d,
        "frontend",
        FRONTEND_GID,
        &[
            format!(
                "--outbound=127.0.0.1:{http_route},127.0.0.1:{backend_http},{}",
                backend()
            ),
            format!(
                "--outbound=127.0.0.1:{tcp_route},127.0.0.1:{backend_tcp},{}",
                backend()
            ),
        ],
        tcp_route,
    );
    Setup {
        d,
        proxies: Proxies(vec![backend_http_proxy, backend_tcp_proxy, frontend_proxy]),
        http_route,
        impostor_route,
        tcp_route,
        backend_http,
        backend_metrics,
    }
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    wait_for(what, Duration::from_secs(15), &mut check);
}

#[test]
fn http_and_tcp_policies_are_enforced_and_changes_apply_live() {
    let s = setup("1h", "strict");
    // No policy yet: the default (allow-trust-domain) admits the frontend, and the application
    // learns who called.
    let (code, body) = request(s.http_route, "GET", "/items/1");
    assert_eq!(
        (code, body.as_str()),
        (200, format!("GET /items/1 peer={}", frontend()).as_str())
    );
    assert!(echoes(s.tcp_route));

    let out = apply(
        &s.d,
        &policy(
            "frontend-reads-items",
            "ALLOW",
            &format!(
                "  - from: [{{spiffeIDs: [\"{}\"]}}]\n    to: [{{ports: [{HTTP_PORT}], methods: [GET], paths: [\"/items/*\"]}}]\n",
                frontend()
            ),
        ),
    );
    assert!(
        out.contains("default/frontend-reads-items created"),
        "{out}"
    );
    eventually("the ALLOW policy to deny /admin", || {
        request(s.http_route, "GET", "/admin").0 == 403
    });
    assert_eq!(request(s.http_route, "GET", "/items/1").0, 200);
    assert_eq!(
        request(s.http_route, "POST", "/items/1").0,
        403,
        "method not allowed"
    );
    assert_eq!(
        request(s.http_route, "GET", "/items/%2e%2e/admin").0,
        403,
        "dot segments resolved before matching"
    );
    // The ALLOW policy names only the HTTP port: the TCP port is now closed to everyone.
    assert!(!echoes(s.tcp_route));

    // Explained from the server's live state.
    let check = s.d.admin(&[
        "authz",
        "check",
        "--from",
        &frontend(),
        "--to",
        &backend(),
        "--port",
        HTTP_PORT,
        "--method",
        "GET",
        "--path",
        "/admin",
        "--exit-code",
    ]);
    let text = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("DENY: ALLOW policies target the workload and none matched"),
        "{text}"
    );
    assert!(
        text.contains("default/frontend-reads-items ALLOW (Enforce): no rule matched"),
        "{text}"
    );

    apply(
        &s.d,
        &policy(
            "frontend-uses-db",
            "ALLOW",
            &format!("  - from: [{{spiffeIDs: [\"spiffe://{TD}/front*\"]}}]\n    to: [{{ports: [{TCP_PORT}]}}]\n")
                .replace("front*", "frontend"),
        ),
    );
    eventually("the TCP ALLOW policy", || echoes(s.tcp_route));

    apply(
        &s.d,
        &policy(
            "no-secrets",
            "DENY",
            "  - to: [{paths: [\"/items/secret\"]}]\n",
        ),
    );
    eventually("the DENY policy", || {
        request(s.http_route, "GET", "/items/secret").0 == 403
    });
    assert_eq!(
        request(s.http_route, "GET", "/items/1").0,
        200,
        "DENY only where it matches"
    );

    let list = s.d.admin(&["policy", "list", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list["default_policy"], "allow-trust-domain");
    assert_eq!(list["policies"].as_array().unwrap().len(), 3);

    let metrics = common::http_get(s.backend_metrics, "/metrics").1;
    assert!(
        metrics.contains("signet_authz_denied_total{policy=\"default/no-secrets\",action=\"DENY\",enforcement=\"Enforce\"}"),
        "{metrics}"
    );
    let audit = s.proxies.log(0);
    assert!(
        audit.contains("request denied by authorization policy"),
        "{audit}"
    );
    assert!(!audit.contains("PRIVATE KEY"));

    for name in ["frontend-reads-items", "frontend-uses-db", "no-secrets"] {
        let out = s.d.admin(&["policy", "delete", name]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eventually("the default policy again", || {
        request(s.http_route, "GET", "/admin").0 == 200
    });
    assert!(echoes(s.tcp_route));
}

#[test]
fn strict_mode_refuses_clients_without_an_svid() {
    let s = setup("1h", "strict");
    // Plaintext: closed before any byte reaches the application.
    assert_eq!(request(s.backend_http, "GET", "/items/1").0, 0);
    // TLS without a client certificate, from OpenSSL's client.
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{}", s.backend_http),
            "-ign_eof",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin
                    .write_all(b"GET /items/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            }
            child.wait_with_output()
        })
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("HTTP/1.1 200"), "{stdout}");
    let metrics = common::http_get(s.backend_metrics, "/metrics").1;
    assert!(
        metrics.contains("direction=\"inbound\",result=\"refused_plaintext\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("direction=\"inbound\",result=\"handshake_failed\"} 1"),
        "{metrics}"
    );
    // The frontend, with its SVID, still gets through.
    assert_eq!(request(s.http_route, "GET", "/items/1").0, 200);
    // A server presenting another SPIFFE ID than the route expects is refused by the client side.
    assert_eq!(request(s.impostor_route, "GET", "/items/1").0, 0);
}

/// Connections that never finish their handshake (slowloris) from one source hold at most that
/// source's handshake share (64) and never the slots of established connections: the rest are
/// closed at accept and mTLS clients from elsewhere are served at once. (The proxy's 10,000
/// connection cap used to count them, and two floods refused half of the legitimate calls.)
#[test]
fn a_slowloris_flood_is_held_to_its_share_and_mtls_clients_are_served() {
    let s = setup("1h", "strict");
    let backend: std::net::SocketAddr = format!("127.0.0.1:{}", s.backend_http).parse().unwrap();
    let mut flood = common::SilentConnections::open(&["127.0.0.2".to_owned()], 300, backend);
    eventually("the flood beyond its share to be refused", || {
        common::http_get(s.backend_metrics, "/metrics")
            .1
            .contains("direction=\"inbound\",result=\"handshakes_overloaded\"} 236")
    });
    let still_open = flood.still_open();
    assert_eq!(still_open, 64);
    let start = std::time::Instant::now();
    for _ in 0..20 {
        assert_eq!(request(s.http_route, "GET", "/items/1").0, 200);
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    drop(flood);

    // The shares are configuration: a proxy started with --max-handshakes-per-source=16 holds 16.
    let (small, app) = (free_port(), http_app());
    let _small_proxy = Proxies(vec![proxy(
        &s.d,
        "backend-small",
        BACKEND_GID,
        &[
            format!("--inbound-listen=127.0.0.1:{small}"),
            format!("--inbound-forward=127.0.0.1:{app}"),
            "--max-handshakes-per-source=16".to_owned(),
            "--handshake-timeout=60s".to_owned(),
        ],
        small,
    )]);
    let target: std::net::SocketAddr = format!("127.0.0.1:{small}").parse().unwrap();
    let mut flood = common::SilentConnections::open(&["127.0.0.3".to_owned()], 40, target);
    let mut held = 0;
    for _ in 0..50 {
        held = flood.still_open();
        if held == 16 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(held, 16);
}

/// Runs OpenSSL's TLS client against the backend proxy with the frontend's SVID (fetched from the
/// Workload API as the frontend's group): a third-party mTLS client.
#[test]
fn openssl_with_the_frontend_svid_is_served_and_verifies_the_backend() {
    let s = setup("1h", "strict");
    let dir = s.d.dir.path().join("frontend-svid");
    let fetched = Command::new(signet_bin())
        .args(["svid", "fetch", "--socket", &s.d.endpoint(), "--write"])
        .arg(&dir)
        .gid(FRONTEND_GID)
        .output()
        .unwrap();
    assert!(
        fetched.status.success(),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let openssl = |request: &str| {
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{}", s.backend_http),
            ])
            .args(["-cert", &path("svid.0.pem"), "-key", &path("svid.0.key")])
            .args([
                "-CAfile",
                &path("bundle.0.pem"),
                "-verify_return_error",
                "-ign_eof",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(request.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = openssl("GET /items/1 HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    assert!(
        out.contains(&format!("GET /items/1 peer={}", frontend())),
        "{out}"
    );
}

#[test]
fn rotation_keeps_long_lived_connections() {
    let s = setup("6s", "strict");
    let stream = TcpStream::connect(("127.0.0.1", s.tcp_route)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let installed = |log: &str| log.matches("X509-SVID installed").count();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut round = 0;
    // Talk over one connection until both ends have rotated at least once.
    while installed(&s.proxies.log(1)) < 2 || installed(&s.proxies.log(2)) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no rotation within 30 s"
        );
        round += 1;
        writeln!(writer, "round {round}").unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), format!("round {round}"));
        std::thread::sleep(Duration::from_millis(250));
    }
    writeln!(writer, "after rotation").unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        "after rotation",
        "the long-lived connection survived"
    );
    assert!(echoes(s.tcp_route), "new handshakes use the new SVIDs");
}

async fn authz_client(
    d: &Deployment,
) -> signet_proto::authz::authorization_client::AuthorizationClient<tonic::transport::Channel> {
    let socket = d.socket();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .unwrap();
    signet_proto::authz::authorization_client::AuthorizationClient::new(channel)
}

fn with_header<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_serves_the_callers_policy_and_decisions() {
    use signet_proto::authz::{CheckRequest, Decision, WatchPolicyRequest};
    let d = Deployment::start();
    let me = format!("spiffe://{TD}/tester");
    d.create_entry(&me, &format!("unix:uid:{}", common::my_uid()), &[]);
    apply(
        &d,
        &policy(
            "deny-evil",
            "DENY",
            &format!("  - from: [{{spiffeIDs: [\"spiffe://{TD}/evil\"]}}]\n"),
        )
        .replace(&backend(), &me),
    );
    let mut client = authz_client(&d).await;

    let refused = client.check(CheckRequest::default()).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::InvalidArgument,
        "the security header is required"
    );

    let mut stream = client
        .watch_policy(with_header(WatchPolicyRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.spiffe_ids, vec![me.clone()]);
    assert_eq!(first.trust_domain, TD);
    assert_eq!(first.policies.len(), 1, "{first:?}");
    assert_eq!(first.policies[0].name, "deny-evil");

    let check = |peer: &str, method: &str, path: &str| CheckRequest {
        target_spiffe_id: String::new(),
        peer_spiffe_id: peer.to_owned(),
        port: 443,
        method: method.to_owned(),
        path: path.to_owned(),
    };
    let evil = client
        .check(with_header(check(&format!("spiffe://{TD}/evil"), "", "")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(evil.decision, Decision::Deny as i32);
    assert_eq!(evil.deciding_policies, vec!["default/deny-evil".to_owned()]);
    let good = client
        .check(with_header(check(
            &format!("spiffe://{TD}/good"),
            "GET",
            "/a/../b",
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(good.decision, Decision::Allow as i32, "{}", good.reason);
    assert_eq!(good.reason, "default policy allow-trust-domain");
    let stranger = client
        .check(with_header(check("spiffe://elsewhere.org/x", "", "")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        stranger.decision,
        Decision::Deny as i32,
        "another trust domain"
    );
    let anonymous = client
        .check(with_header(check("", "", "")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(anonymous.decision, Decision::Deny as i32, "no SVID");

    for (request, code) in [
        (
            check("not a spiffe id", "", ""),
            tonic::Code::InvalidArgument,
        ),
        (check("", "GET", ""), tonic::Code::InvalidArgument),
        (
            check("", "GET", &"/a".repeat(10_000)),
            tonic::Code::InvalidArgument,
        ),
        (
            CheckRequest {
                target_spiffe_id: format!("spiffe://{TD}/someone-else"),
                ..check("", "", "")
            },
            tonic::Code::PermissionDenied,
        ),
        (
            CheckRequest {
                port: 0,
                ..check("", "", "")
            },
            tonic::Code::InvalidArgument,
        ),
    ] {
        let status = client
            .check(with_header(request.clone()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{request:?}: {status:?}");
    }

    // A policy change is pushed to the open stream.
    apply(
        &d,
        &policy("audit-all", "AUDIT", "  - {}\n").replace(&backend(), &me),
    );
    let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let names: Vec<&str> = next.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["audit-all", "deny-evil"]);
}
