//! The proxy in process: a frontend proxy (outbound route) and a backend proxy (inbound
//! listener), each fed by its own Workload API on a temp socket with SVIDs of one CA, real mTLS
//! between them on loopback, and policies pushed the way the agent pushes them.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use signet_core::policy::{
    DefaultPolicy, OperationSpec, PolicyBinding, PolicySet, PolicySpec, PolicyTarget, RuleSpec,
    SourceSpec,
};
use signet_proxy::{Inbound, Mode, Outbound, Protocol, ProxyConfig, RunningProxy};
use signet_test_support::apps::{echo_app, echoes, http_app, http_request};
use signet_test_support::workload_api::{
    FakeWorkloadApi, SigningCa, TD, entry_for_uid, entry_in, my_uid,
};

const HTTP_PORT: i32 = 8443;
const TCP_PORT: i32 = 5432;
const WAIT: Duration = Duration::from_secs(10);

fn id(name: &str) -> String {
    format!("spiffe://{TD}/{name}")
}

/// An enforced policy `name` targeting the backend.
fn policy(name: &str, action: signet_core::policy::Action, rules: Vec<RuleSpec>) -> PolicyBinding {
    let compiled = signet_core::policy::compile(
        "default",
        name,
        &PolicySpec {
            selector: None,
            target_spiffe_ids: vec![id("backend")],
            action,
            enforcement: signet_core::policy::Enforcement::Enforce,
            rules,
        },
    )
    .unwrap();
    let PolicyTarget::SpiffeIds(targets) = compiled.target else {
        unreachable!("targets are SPIFFE IDs")
    };
    PolicyBinding {
        policy: compiled.policy,
        targets,
    }
}

fn from_frontend(port: i32, methods: &[&str], paths: &[&str]) -> RuleSpec {
    RuleSpec {
        from: vec![SourceSpec {
            spiffe_ids: vec![id("frontend")],
            ..SourceSpec::default()
        }],
        to: vec![OperationSpec {
            ports: vec![port],
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            not_paths: vec![],
        }],
    }
}

fn policies(bindings: Vec<PolicyBinding>) -> PolicySet {
    PolicySet {
        default_policy: DefaultPolicy::AllowTrustDomain,
        bindings,
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn config(api: &FakeWorkloadApi) -> ProxyConfig {
    ProxyConfig {
        workload_socket: api.socket(),
        inbound: None,
        outbound: Vec::new(),
        metrics_address: Some(loopback()),
        first_svid_timeout: WAIT,
        bounds: signet_proxy::ProxyBounds::default(),
    }
}

/// Frontend and backend with their own Workload APIs, SVIDs of one CA.
struct Mesh {
    frontend_api: FakeWorkloadApi,
    backend_api: FakeWorkloadApi,
}

impl Mesh {
    fn new() -> Self {
        let ca = SigningCa::new();
        let frontend_api = FakeWorkloadApi::start(ca.clone());
        frontend_api.issue(vec![entry_for_uid("frontend", my_uid())]);
        let backend_api = FakeWorkloadApi::start(ca);
        backend_api.issue(vec![entry_for_uid("backend", my_uid())]);
        Self {
            frontend_api,
            backend_api,
        }
    }

    async fn backend(&self, forward: u16, protocol: Protocol, mode: Mode) -> RunningProxy {
        let mut config = config(&self.backend_api);
        config.inbound = Some(Inbound {
            listen: loopback(),
            forward: SocketAddr::from(([127, 0, 0, 1], forward)),
            protocol,
            policy_port: match protocol {
                Protocol::Http => HTTP_PORT as u16,
                Protocol::Tcp => TCP_PORT as u16,
            },
            mode,
        });
        signet_proxy::start(config).await.unwrap()
    }

    /// A frontend route to `backend`'s inbound listener, accepting the server as `server_id`.
    async fn frontend(&self, backend: &RunningProxy, server_id: &str) -> RunningProxy {
        let mut config = config(&self.frontend_api);
        config.outbound = vec![Outbound {
            listen: loopback(),
            target: backend.inbound_address.unwrap().to_string(),
            server_id: signet_core::policy::IdPattern::parse(server_id).unwrap(),
        }];
        signet_proxy::start(config).await.unwrap()
    }
}

fn route(proxy: &RunningProxy) -> u16 {
    proxy.outbound_addresses[0].port()
}

/// A blocking request off the runtime's threads.
async fn request(port: u16, method: &'static str, path: &'static str) -> (u16, String) {
    tokio::task::spawn_blocking(move || http_request(port, method, path))
        .await
        .unwrap()
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_are_authorized_one_by_one_and_policy_changes_apply_live() {
    let mesh = Mesh::new();
    mesh.backend_api.set_policies(policies(vec![policy(
        "frontend-reads-items",
        signet_core::policy::Action::Allow,
        vec![from_frontend(HTTP_PORT, &["GET"], &["/items/*"])],
    )]));
    let backend = mesh.backend(http_app(), Protocol::Http, Mode::Strict).await;
    let frontend = mesh.frontend(&backend, &id("backend")).await;
    let port = route(&frontend);

    let (code, body) = request(port, "GET", "/items/1").await;
    assert_eq!(
        (code, body.as_str()),
        (
            200,
            format!("GET /items/1 peer={}", id("frontend")).as_str()
        ),
        "allowed, and the application learns who called"
    );
    assert_eq!(request(port, "POST", "/items/1").await.0, 403);
    assert_eq!(request(port, "GET", "/admin").await.0, 403);

    mesh.backend_api.set_policies(policies(vec![policy(
        "frontend-writes-items",
        signet_core::policy::Action::Allow,
        vec![from_frontend(HTTP_PORT, &["GET", "POST"], &["/items/*"])],
    )]));
    until("the new policy", async || {
        request(port, "POST", "/items/1").await.0 == 200
    })
    .await;
    assert_eq!(request(port, "GET", "/admin").await.0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_id_header_from_the_client_never_reaches_the_application() {
    let mesh = Mesh::new();
    mesh.backend_api.set_policies(policies(Vec::new()));
    let backend = mesh.backend(http_app(), Protocol::Http, Mode::Strict).await;
    let frontend = mesh.frontend(&backend, &id("backend")).await;
    let port = route(&frontend);
    let body = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            stream,
            "GET /x HTTP/1.1\r\nHost: localhost\r\nx-signet-peer-id: spiffe://{TD}/admin\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    })
    .await
    .unwrap();
    assert!(
        body.ends_with(&format!("GET /x peer={}", id("frontend"))),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_are_authorized_by_peer_and_port() {
    let mesh = Mesh::new();
    let allow_port = |port| {
        policies(vec![policy(
            "frontend-to-db",
            signet_core::policy::Action::Allow,
            vec![from_frontend(port, &[], &[])],
        )])
    };
    mesh.backend_api.set_policies(allow_port(TCP_PORT));
    let backend = mesh.backend(echo_app(), Protocol::Tcp, Mode::Strict).await;
    let frontend = mesh.frontend(&backend, &id("backend")).await;
    let port = route(&frontend);
    let echo = async || {
        tokio::task::spawn_blocking(move || echoes(port))
            .await
            .unwrap()
    };
    // The backend proxy enforces from its first policy set, which may still be on its way.
    until("the first echo", echo).await;
    // The only ALLOW now names another port: this one admits no one.
    mesh.backend_api.set_policies(allow_port(TCP_PORT + 1));
    until("the closing policy", async || !echo().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_refuses_plaintext_and_permissive_mode_admits_it_unauthenticated() {
    let mesh = Mesh::new();
    mesh.backend_api.set_policies(policies(Vec::new()));
    let strict = mesh.backend(http_app(), Protocol::Http, Mode::Strict).await;
    let plain = strict.inbound_address.unwrap().port();
    assert_eq!(request(plain, "GET", "/healthz").await.0, 0, "no answer");

    let permissive = mesh
        .backend(http_app(), Protocol::Http, Mode::Permissive)
        .await;
    let plain = permissive.inbound_address.unwrap().port();
    // Accepted, but without an SVID the default policy (allow-trust-domain) denies it.
    assert_eq!(request(plain, "GET", "/healthz").await.0, 403);
    mesh.backend_api.set_policies(policies(vec![policy(
        "anyone-reads-health",
        signet_core::policy::Action::Allow,
        vec![RuleSpec {
            from: vec![],
            to: vec![OperationSpec {
                paths: vec!["/healthz".into()],
                ..OperationSpec::default()
            }],
        }],
    )]));
    until("the policy admitting unauthenticated peers", async || {
        request(plain, "GET", "/healthz").await.0 == 200
    })
    .await;
    let (_, body) = request(plain, "GET", "/healthz").await;
    assert_eq!(body, "GET /healthz peer=", "no peer ID for plaintext");
    let metrics = request(
        permissive.metrics_address.unwrap().port(),
        "GET",
        "/metrics",
    )
    .await
    .1;
    assert!(
        metrics.contains("direction=\"inbound\",result=\"plaintext\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_route_refuses_a_server_with_another_identity() {
    let mesh = Mesh::new();
    mesh.backend_api.set_policies(policies(Vec::new()));
    let backend = mesh.backend(http_app(), Protocol::Http, Mode::Strict).await;
    let impostor_route = mesh.frontend(&backend, &id("payments")).await;
    let (code, _) = request(route(&impostor_route), "GET", "/items/1").await;
    assert_ne!(code, 200, "the backend is not spiffe://{TD}/payments");
    let honest = mesh.frontend(&backend, &id("backend")).await;
    assert_eq!(request(route(&honest), "GET", "/items/1").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_svid_and_the_first_policy() {
    let mesh = Mesh::new();
    let backend = mesh.backend(http_app(), Protocol::Http, Mode::Strict).await;
    let metrics = backend.metrics_address.unwrap().port();
    let (code, body) = request(metrics, "GET", "/readyz").await;
    assert_eq!(
        (code, body.as_str()),
        (503, "no authorization policy yet\n")
    );
    mesh.backend_api.set_policies(policies(Vec::new()));
    until("readiness", async || {
        request(metrics, "GET", "/readyz").await.0 == 200
    })
    .await;
    assert_eq!(request(metrics, "GET", "/livez").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_of_a_federated_trust_domain_are_authenticated_until_federation_ends() {
    // The backend in example.org, the frontend in partner.example; each entry federates with
    // the other trust domain and each agent holds the other's bundle.
    let ours = SigningCa::new();
    let theirs = SigningCa::for_trust_domain("partner.example");
    let backend_api = FakeWorkloadApi::start(ours.clone());
    let mut backend_entry = entry_for_uid("backend", my_uid());
    backend_entry.federates_with = vec![theirs.trust_domain().clone()];
    backend_api.set_federated_bundles(vec![theirs.bundle()]);
    backend_api.issue(vec![backend_entry]);
    backend_api.set_policies(policies(Vec::new()));
    let frontend_api = FakeWorkloadApi::start(theirs.clone());
    let mut frontend_entry = entry_in(
        "partner.example",
        "frontend",
        &format!("unix:uid:{}", my_uid()),
    );
    frontend_entry.federates_with = vec![ours.trust_domain().clone()];
    frontend_api.set_federated_bundles(vec![ours.bundle()]);
    frontend_api.issue(vec![frontend_entry]);
    let mesh = Mesh {
        frontend_api,
        backend_api,
    };
    let backend = mesh.backend(http_app(), Protocol::Http, Mode::Strict).await;
    let frontend = mesh.frontend(&backend, &id("backend")).await;
    let port = route(&frontend);
    until("the federated bundles to reach the proxies", async || {
        request(port, "GET", "/items/1").await.0 == 200
    })
    .await;
    let (_, body) = request(port, "GET", "/items/1").await;
    assert_eq!(
        body, "GET /items/1 peer=spiffe://partner.example/frontend",
        "the default allow-trust-domain admits a federated peer, and the app learns its ID"
    );

    // The backend's trust domain ends the federation: new connections are refused.
    mesh.backend_api.set_federated_bundles(Vec::new());
    until("the end of federation", async || {
        request(port, "GET", "/items/1").await.0 != 200
    })
    .await;
}
