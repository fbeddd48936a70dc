//! Kubernetes mode end to end in one process: a fake API server (objects from a real cluster's
//! captures) → controller → server (Secret CA, Lease, PSAT) → agent (PSAT, pod watch, k8s
//! attestor over a fake /proc) → the `spiffe` crate fetching the pod's SVID over the Workload API.

#![expect(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use signet_spiffe::TrustDomain;
use signet_test_support::fake_cluster::FakeCluster;
use signet_test_support::k8s::fixture;

const POD_UID: &str = "66cf01ec-811b-46e1-9145-7357b92bad2a";
const APP_CID: &str = "953a816f59f1ed5948728656092d95cace58208684b5357a27949e15c6456de7";
const CSIDS: &str = "signet.dev/v1alpha1/clusterspiffeids";

fn json_fixture(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

fn cluster() -> FakeCluster {
    let cluster = FakeCluster::new();
    for ns in ["demo", "signet"] {
        cluster.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    cluster.apply(json_fixture("node.json"));
    cluster.apply(json_fixture("pod-running.json"));
    cluster.apply(json!({
        "apiVersion": "signet.dev/v1alpha1",
        "kind": "ClusterSPIFFEID",
        "metadata": {"name": "default", "generation": 1},
        "spec": {
            "spiffeIDTemplate": "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}",
            "workloadSelectorTemplates": ["k8s:container-name:app"],
        }
    }));
    let accepted = json_fixture("tokenreview-accepted.json");
    cluster.on_token_review(move |request| {
        assert_eq!(request["spec"]["audiences"], json!(["signet-server"]));
        if request["spec"]["token"] == json!("agent-token") {
            accepted.clone()
        } else {
            json_fixture("tokenreview-wrong-audience.json")
        }
    });
    cluster
}

/// A Kubernetes-mode server on loopback whose agents run as `demo:web` (the captured token's SA).
async fn start_server(
    cluster: &FakeCluster,
    dir: &std::path::Path,
) -> signet_server::RunningServer {
    signet_server::start(server_config(cluster, dir, "127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap()
}

/// The configuration of [`start_server`], for tests that change it (address, default identity).
fn server_config(
    cluster: &FakeCluster,
    dir: &std::path::Path,
    bind_address: std::net::SocketAddr,
) -> signet_server::ServerConfig {
    let td = TrustDomain::new("example.org").unwrap();
    let mut config = signet_server::ServerConfig::new(td, dir.join("server"));
    config.bind_address = bind_address;
    config.health_address = None;
    let mut options =
        signet_server::k8s::KubernetesOptions::new(cluster.client(), "signet", "server-0", "prod");
    options.agent_service_accounts = BTreeSet::from(["demo:web".to_owned()]);
    config.kubernetes = Some(options);
    config
}

/// An agent in Kubernetes mode on node `vm` with the token in `token`.
fn agent_config(
    cluster: &FakeCluster,
    server: &signet_server::RunningServer,
    dir: &std::path::Path,
    token: std::path::PathBuf,
    attestor: signet_agent::attestor::k8s::K8sAttestorConfig,
) -> signet_agent::AgentConfig {
    signet_agent::AgentConfig {
        workload: signet_agent::WorkloadEndpoint::new(dir.join("sockets").join("api.sock")),
        trust_domain: TrustDomain::new("example.org").unwrap(),
        server_address: server.agent_address.to_string(),
        trust_bundle_path: server.bundle_pem.clone(),
        join_token: None,
        data_dir: dir.join("agent"),
        unix_attestor: signet_agent::UnixAttestorConfig::default(),
        health_address: None,
        taint_resign_window: signet_agent::DEFAULT_TAINT_RESIGN_WINDOW,
        availability_target: std::time::Duration::ZERO,
        persist_svids: false,
        kubernetes: Some(signet_agent::AgentKubernetes {
            client: cluster.client(),
            node_name: "vm".into(),
            token_path: token,
            attestor,
        }),
    }
}

async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pod_gets_its_cluster_spiffe_id_through_the_whole_stack() {
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&cluster, dir.path()).await;

    // The CA lives in a Secret and the bundle is published, by the leader.
    assert!(cluster.get("v1/secrets", "signet", "signet-ca").is_some());
    let bundle = eventually("the bundle ConfigMap", async || {
        cluster.get("v1/configmaps", "signet", "signet-bundle")
    })
    .await;
    assert!(
        bundle["data"]["bundle.pem"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert!(
        bundle["data"]["bundle.spiffe"]
            .as_str()
            .unwrap()
            .contains("x509-svid")
    );

    // The workload process is this test process: a fake /proc gives it the captured cgroup.
    let proc_root = dir.path().join("proc");
    let own = proc_root.join(std::process::id().to_string());
    std::fs::create_dir_all(&own).unwrap();
    std::fs::write(
        own.join("cgroup"),
        format!("0::/kubepods/besteffort/pod{POD_UID}/{APP_CID}\n"),
    )
    .unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "agent-token\n").unwrap();
    let socket = dir.path().join("sockets").join("api.sock");
    let attestor = signet_agent::attestor::k8s::K8sAttestorConfig {
        proc_root,
        container_wait: Duration::from_secs(2),
    };
    let agent = signet_agent::start(agent_config(&cluster, &server, dir.path(), token, attestor))
        .await
        .unwrap();
    assert_eq!(
        agent.agent_id.as_str(),
        "spiffe://example.org/signet/agent/k8s/prod/f2ababaf-ec73-4e18-8b0f-e9ffeb713507"
    );

    let client = spiffe::WorkloadApiClient::connect_to(format!("unix://{}", socket.display()))
        .await
        .unwrap();
    let svid = eventually("the pod's X509-SVID", async || {
        client.fetch_x509_svid().await.ok()
    })
    .await;
    assert_eq!(
        svid.spiffe_id().to_string(),
        "spiffe://example.org/ns/demo/sa/web"
    );

    // Status is written by the leader with server-side apply.
    let status = eventually("ClusterSPIFFEID status", async || {
        let object = cluster.get(CSIDS, "", "default")?;
        (object["status"]["conditions"][0]["status"] == json!("True")).then_some(object)
    })
    .await;
    assert_eq!(status["status"]["stats"]["entriesToSet"], json!(1));
    assert_eq!(status["status"]["observedGeneration"], json!(1));
    assert_eq!(
        status["status"]["conditions"][0]["reason"],
        json!("Reconciled")
    );

    // Deleting the pod removes its identity.
    cluster.delete("v1/pods", "demo", "web-0");
    eventually("the identity to go", async || {
        client.fetch_x509_svid().await.err()
    })
    .await;

    agent.shutdown();
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_with_a_token_for_another_audience_is_refused() {
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&cluster, dir.path()).await;
    let token = dir.path().join("token");
    std::fs::write(&token, "token-for-someone-else").unwrap();
    let result = signet_agent::start(agent_config(
        &cluster,
        &server,
        dir.path(),
        token,
        signet_agent::attestor::k8s::K8sAttestorConfig::default(),
    ))
    .await;
    let Err(error) = result else {
        panic!("attested with a wrong-audience token")
    };
    let error = error.to_string();
    assert!(
        error.contains("rejected") || error.contains("refused"),
        "{error}"
    );
    server.shutdown();
}

/// In a fresh cluster the agent often starts before any server replica is reachable: it retries
/// attestation with backoff instead of exiting (and crash-looping for minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_started_before_the_server_attests_once_it_is_reachable() {
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    // A first server run creates the CA Secret and the bundle, then goes away.
    let first = start_server(&cluster, dir.path()).await;
    let address = first.agent_address;
    let config = {
        let token = dir.path().join("token");
        std::fs::write(&token, "agent-token\n").unwrap();
        agent_config(
            &cluster,
            &first,
            dir.path(),
            token,
            signet_agent::attestor::k8s::K8sAttestorConfig::default(),
        )
    };
    first.shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let health_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = config;
    config.health_address = Some(([127, 0, 0, 1], health_port).into());
    let agent = tokio::spawn(signet_agent::start(config));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !agent.is_finished(),
        "the agent must wait for the server, not exit"
    );
    // While it waits it is alive (a startup probe keeps it) but not ready.
    let status = |path: &str| {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", health_port)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response.split(' ').nth(1).unwrap_or_default().to_owned()
    };
    assert_eq!(status("/livez"), "200");
    assert_eq!(status("/readyz"), "503");

    // The replacement replica listens on the same Service address.
    let server = signet_server::start(server_config(&cluster, dir.path(), address))
        .await
        .unwrap();

    let agent = tokio::time::timeout(Duration::from_secs(60), agent)
        .await
        .expect("attested after the server came up")
        .unwrap()
        .unwrap();
    assert!(
        agent
            .agent_id
            .as_str()
            .starts_with("spiffe://example.org/signet/agent/k8s/prod/")
    );
    agent.shutdown();
    server.shutdown();
}

/// The chart's default identity: the leader applies a fallback ClusterSPIFFEID (server-side
/// apply, in place: a restart with a new template updates it without deleting it, so pods keep
/// their identity across upgrades), and pods no other resource matches get it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_keeps_the_default_identity_applied_in_place() {
    let cluster = cluster();
    // The captured pod runs in `demo`; take away the resource that matched it.
    cluster.delete(CSIDS, "", "default");
    let dir = tempfile::tempdir().unwrap();
    let start = |template: &'static str| {
        let cluster = cluster.clone();
        let dir = dir.path().to_owned();
        async move {
            let mut config = server_config(&cluster, &dir, "127.0.0.1:0".parse().unwrap());
            if let Some(options) = config.kubernetes.as_mut() {
                options.default_identity =
                    Some(signet_server::k8s::default_identity::DefaultIdentity {
                        name: "signet-default".into(),
                        spiffe_id_template: template.into(),
                        class_name: None,
                    });
            }
            signet_server::start(config).await.unwrap()
        }
    };
    let server = start("spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}").await;
    let applied = eventually("the default ClusterSPIFFEID", async || {
        cluster.get(CSIDS, "", "signet-default")
    })
    .await;
    assert_eq!(applied["spec"]["fallback"], json!(true));
    let uid = applied["metadata"]["uid"].clone();
    let entry = eventually("the fallback entry", async || {
        server
            .entries
            .all()
            .into_iter()
            .find(|e| e.spiffe_id.as_str() == "spiffe://example.org/ns/demo/sa/web")
    })
    .await;
    assert!(entry.id.as_str().starts_with("csid/signet-default/"));
    server.shutdown();

    // An upgrade changes the template: same object, new spec, new ID for the pod.
    let server =
        start("spiffe://{{ .TrustDomain }}/workload/{{ .PodSpec.ServiceAccountName }}").await;
    eventually("the updated template", async || {
        cluster.get(CSIDS, "", "signet-default").filter(|o| {
            o["spec"]["spiffeIDTemplate"]
                .as_str()
                .is_some_and(|t| t.contains("/workload/"))
        })
    })
    .await;
    let updated = cluster.get(CSIDS, "", "signet-default").unwrap();
    assert_eq!(
        updated["metadata"]["uid"], uid,
        "updated in place, never re-created"
    );
    assert!(
        !cluster
            .requests()
            .iter()
            .any(|r| r.starts_with("DELETE") && r.contains("clusterspiffeids")),
        "the server never deletes ClusterSPIFFEIDs"
    );
    eventually("the new fallback entry", async || {
        server
            .entries
            .all()
            .into_iter()
            .find(|e| e.spiffe_id.as_str() == "spiffe://example.org/workload/web")
    })
    .await;
    server.shutdown();
}

/// `signet authz check` with a `namespace/pod` target, from the live state of a Kubernetes-mode
/// server: the policy's selector resolves to the pod's identity, and `signet policy apply` is
/// refused (policies are resources there).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn authz_check_explains_decisions_for_a_pod() {
    let cluster = cluster();
    cluster.apply(json!({
        "apiVersion": "signet.dev/v1alpha1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "web-readers", "namespace": "demo", "generation": 1},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "action": "ALLOW",
            "rules": [{"from": [{"namespaces": ["shop"]}], "to": [{"methods": ["GET"]}]}]}
    }));
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&cluster, dir.path()).await;
    let policies = server.policies.clone();
    let targets = eventually("the resolved policy", async || {
        let set = policies.current()?;
        let binding = set.bindings.first().filter(|b| !b.targets.is_empty())?;
        Some(
            binding
                .targets
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
        )
    })
    .await;
    assert_eq!(
        targets,
        vec!["spiffe://example.org/ns/demo/sa/web".to_owned()]
    );

    let socket = server.admin_socket.clone();
    let check = move |from: &str, method: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_signet"))
            .args(["authz", "check", "--to", "demo/web-0", "--port", "8080"])
            .args(["--from", from, "--method", method, "--path", "/"])
            .arg("--admin-socket")
            .arg(&socket)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let allowed = tokio::task::spawn_blocking({
        let check = check.clone();
        move || check("spiffe://example.org/ns/shop/sa/cart", "GET")
    })
    .await
    .unwrap();
    assert!(
        allowed.starts_with("ALLOW: allowed by policy demo/web-readers"),
        "{allowed}"
    );
    let denied = tokio::task::spawn_blocking(move || {
        check("spiffe://example.org/ns/shop/sa/cart", "DELETE")
    })
    .await
    .unwrap();
    assert!(denied.starts_with("DENY"), "{denied}");

    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_signet"))
        .args(["authz", "check", "--to", "demo/nope", "--admin-socket"])
        .arg(&server.admin_socket)
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no pod demo/nope"));

    let policy = dir.path().join("p.yaml");
    std::fs::write(&policy, "apiVersion: signet.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: x}\nspec: {targetSPIFFEIDs: [\"spiffe://example.org/x\"], rules: [{}]}\n").unwrap();
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_signet"))
        .args(["policy", "apply", "-f"])
        .arg(&policy)
        .arg("--admin-socket")
        .arg(&server.admin_socket)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("use kubectl"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    server.shutdown();
}

/// Attests a node agent with PSAT against `server`; returns its SVID as a TLS client identity.
async fn attest_psat(
    server: &signet_server::RunningServer,
    token: &std::path::Path,
) -> Result<signet_agent::agent_svid::PersistedIdentity, signet_agent::error::AgentError> {
    let td = TrustDomain::new("example.org").unwrap();
    let bootstrap = signet_agent::agent_svid::read_bundle_file(&server.bundle_pem, &td).unwrap();
    signet_agent::agent_svid::attest(
        &server.agent_address.to_string(),
        bootstrap,
        signet_core::server_id(&td).unwrap(),
        &signet_agent::agent_svid::NodeCredential::PsatTokenFile(token.to_owned()),
    )
    .await
}

/// Whether `identity` may still use the agent API of `server` (an empty signing batch).
async fn still_accepted(
    server: &signet_server::RunningServer,
    identity: &signet_agent::agent_svid::PersistedIdentity,
) -> Result<(), tonic::Status> {
    let td = TrustDomain::new("example.org").unwrap();
    let svid = std::sync::Arc::new(signet_tls::RotatingSvid::new());
    svid.set(
        signet_tls::certified_key(
            identity.svid.chain().to_vec(),
            identity.svid.private_key_pkcs8(),
        )
        .unwrap(),
    );
    let bundles = std::sync::Arc::new(signet_tls::SharedBundles::new(
        signet_agent::agent_svid::single(identity.bundle.clone()),
    ));
    let mut client = signet_agent::client::connect(
        &server.agent_address.to_string(),
        bundles,
        signet_core::server_id(&td).unwrap(),
        Some(svid),
    )
    .unwrap();
    client
        .sign_x509_svids(signet_proto::agent::SignX509SvidsRequest { requests: vec![] })
        .await
        .map(|_| ())
}

async fn admin(
    server: &signet_server::RunningServer,
    action: &str,
    agent: &str,
) -> Result<(), tonic::Status> {
    let channel = signet_cli::uds::channel(&server.admin_socket)
        .await
        .unwrap();
    let mut admin = signet_proto::admin::admin_client::AdminClient::new(channel);
    let request = signet_proto::admin::AgentRequest {
        spiffe_id: agent.to_owned(),
    };
    match action {
        "ban" => admin.ban_agent(request).await.map(|_| ()),
        "unban" => admin.unban_agent(request).await.map(|_| ()),
        "evict" => admin.evict_agent(request).await.map(|_| ()),
        other => panic!("unknown action {other}"),
    }
}

/// Agent bans and evictions live in the cluster (ConfigMap `signet-agents`), not on a replica's
/// disk: a ban made through one replica holds on the other within seconds and after a restart;
/// an evicted agent's SVID is refused everywhere and it attests again; no replica opens SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bans_and_evictions_hold_on_every_replica_and_across_restarts() {
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let a = start_server(&cluster, &dir.path().join("a")).await;
    let mut b_config = server_config(
        &cluster,
        &dir.path().join("b"),
        "127.0.0.1:0".parse().unwrap(),
    );
    if let Some(k8s) = b_config.kubernetes.as_mut() {
        k8s.replica_name = "server-1".into();
    }
    let b = signet_server::start(b_config.clone()).await.unwrap();
    for replica in ["a", "b"] {
        assert!(
            !dir.path().join(replica).join("server/signet.db").exists(),
            "Kubernetes mode opened SQLite"
        );
    }
    let token = dir.path().join("token");
    std::fs::write(&token, "agent-token").unwrap();
    let identity = attest_psat(&b, &token).await.unwrap();
    let agent = identity.svid.spiffe_id().to_string();
    assert!(still_accepted(&b, &identity).await.is_ok());

    // Banned through A: B refuses its SVID and its attestation within seconds.
    admin(&a, "ban", &agent).await.unwrap();
    eventually("B to refuse the banned agent", async || {
        still_accepted(&b, &identity).await.err()
    })
    .await;
    assert!(
        attest_psat(&b, &token).await.is_err(),
        "a banned agent attested"
    );
    let state = cluster
        .get("v1/configmaps", "signet", "signet-agents")
        .unwrap();
    assert!(state.to_string().contains(&agent), "{state}");

    // The ban survives a restart of B.
    b.shutdown();
    let b = signet_server::start(b_config.clone()).await.unwrap();
    eventually("the restarted B to refuse the banned agent", async || {
        attest_psat(&b, &token).await.err()
    })
    .await;

    // Unbanned through B: both accept it again.
    admin(&b, "unban", &agent).await.unwrap();
    let identity = eventually("A to accept the attestation again", async || {
        attest_psat(&a, &token).await.ok()
    })
    .await;
    eventually("B to accept it again", async || {
        still_accepted(&b, &identity).await.ok()
    })
    .await;

    // Evicted through B: the SVID it holds is refused by A too; a new attestation is accepted.
    admin(&b, "evict", &agent).await.unwrap();
    eventually("A to refuse the evicted SVID", async || {
        still_accepted(&a, &identity).await.err()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let renewed = attest_psat(&a, &token).await.unwrap();
    eventually("the new SVID to be accepted by B", async || {
        still_accepted(&b, &renewed).await.ok()
    })
    .await;
    a.shutdown();
    b.shutdown();
}

async fn change_ca(
    server: &signet_server::RunningServer,
    action: &str,
    id: &str,
) -> Result<signet_proto::admin::ListAuthoritiesResponse, tonic::Status> {
    let channel = signet_cli::uds::channel(&server.admin_socket)
        .await
        .unwrap();
    let mut admin = signet_proto::admin::admin_client::AdminClient::new(channel);
    admin
        .change_authority(signet_proto::admin::ChangeAuthorityRequest {
            kind: "x509".into(),
            action: action.into(),
            id: id.into(),
            force: false,
        })
        .await
        .map(tonic::Response::into_inner)
}

fn authority_states(server: &signet_server::RunningServer) -> Vec<(String, String, bool)> {
    let mut states: Vec<_> = server
        .authority
        .authorities()
        .into_iter()
        .filter(|a| a.kind == signet_ca::AuthorityKind::X509)
        .map(|a| (a.id, format!("{:?}", a.status), a.tainted))
        .collect();
    states.sort();
    states
}

/// A CA change made through any replica (here the follower) is written to the CA Secret under
/// optimistic concurrency and adopted by every other replica within seconds: the same
/// authorities, states and bundle everywhere, and the leader publishes the bundle ConfigMap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ca_changes_through_any_replica_reach_every_replica_within_seconds() {
    let cluster = cluster();
    let dir = tempfile::tempdir().unwrap();
    let leader = start_server(&cluster, &dir.path().join("a")).await;
    let mut follower_config = server_config(
        &cluster,
        &dir.path().join("b"),
        "127.0.0.1:0".parse().unwrap(),
    );
    if let Some(k8s) = follower_config.kubernetes.as_mut() {
        k8s.replica_name = "server-1".into();
    }
    let follower = signet_server::start(follower_config).await.unwrap();
    let original = authority_states(&leader);
    assert_eq!(authority_states(&follower), original);
    let original_id = original[0].0.clone();

    let changed = change_ca(&follower, "prepare", "").await.unwrap();
    assert_eq!(changed.authorities.len(), 3, "x509 prepared + active, jwt");
    eventually("the leader to adopt the prepared authority", async || {
        (authority_states(&leader) == authority_states(&follower)).then_some(())
    })
    .await;
    let published = leader.authority.bundle();
    eventually("the bundle ConfigMap to carry it", async || {
        let map = cluster.get("v1/configmaps", "signet", "signet-bundle")?;
        (map["data"]["bundle.pem"].as_str()? == published.to_pem()).then_some(())
    })
    .await;

    // The other steps through either replica: no write race is lost, every state converges.
    change_ca(&leader, "activate", "").await.unwrap();
    change_ca(&follower, "taint", &original_id).await.unwrap();
    eventually("both replicas to agree on the taint", async || {
        let states = authority_states(&leader);
        (states == authority_states(&follower)
            && states
                .iter()
                .any(|(id, _, tainted)| *id == original_id && *tainted))
        .then_some(())
    })
    .await;
    assert_eq!(leader.authority.bundle(), follower.authority.bundle());
    change_ca(&leader, "revoke", &original_id).await.unwrap();
    eventually("the follower to drop the revoked authority", async || {
        authority_states(&follower)
            .iter()
            .all(|(id, _, _)| *id != original_id)
            .then_some(())
    })
    .await;
    leader.shutdown();
    follower.shutdown();
}

/// A cert-manager `Certificate` (isCA) as its TLS Secret: `tls.crt`, `tls.key`, `ca.crt`.
fn apply_upstream_secret(
    cluster: &FakeCluster,
    issuing: &signet_test_support::TestCa,
    key_of: &signet_test_support::TestCa,
    root: &signet_test_support::TestCa,
) {
    use base64::Engine;
    let b64 = |text: String| base64::engine::general_purpose::STANDARD.encode(text);
    cluster.apply(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": "signet-upstream", "namespace": "signet"},
        "data": {
            "tls.crt": b64(signet_test_support::pem_encode("CERTIFICATE", &issuing.cert_der)),
            "tls.key": b64(key_of.key_pem()),
            "ca.crt": b64(root.cert_pem()),
        }
    }));
}

/// The upstream certificate that signed the active intermediate.
fn active_upstream_cert(server: &signet_server::RunningServer) -> Option<Vec<u8>> {
    let active = server.authority.active_x509()?;
    active.upstream_chain().first().map(|c| c.to_vec())
}

/// The upstream CA comes from a TLS Secret cert-manager renews: the bundle is its root; when the
/// Secret is renewed the leader issues a new intermediate under it at once (same root, no
/// bundle change) and the follower adopts both the material and the intermediate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_ca_secret_renewed_by_cert_manager_reissues_the_intermediate() {
    let cluster = cluster();
    let root = signet_test_support::TestCa::new("example.org");
    let first = root.intermediate(true);
    apply_upstream_secret(&cluster, &first, &first, &root);
    let dir = tempfile::tempdir().unwrap();
    let upstream = signet_server::UpstreamSource::Secret {
        name: "signet-upstream".into(),
    };
    let mut leader_config = server_config(
        &cluster,
        &dir.path().join("a"),
        "127.0.0.1:0".parse().unwrap(),
    );
    leader_config.upstream = Some(upstream.clone());
    let leader = signet_server::start(leader_config).await.unwrap();
    let mut follower_config = server_config(
        &cluster,
        &dir.path().join("b"),
        "127.0.0.1:0".parse().unwrap(),
    );
    follower_config.upstream = Some(upstream);
    if let Some(k8s) = follower_config.kubernetes.as_mut() {
        k8s.replica_name = "server-1".into();
    }
    let follower = signet_server::start(follower_config).await.unwrap();

    let bundle = leader.authority.bundle();
    assert_eq!(bundle.x509_authorities().len(), 1);
    assert_eq!(
        bundle.x509_authorities()[0].as_ref(),
        root.cert_der.as_slice()
    );
    assert_eq!(active_upstream_cert(&leader), Some(first.cert_der.clone()));

    let renewed = root.intermediate(true);
    apply_upstream_secret(&cluster, &renewed, &renewed, &root);
    for server in [&leader, &follower] {
        eventually(
            "the intermediate re-issued under the renewed Secret",
            async || (active_upstream_cert(server) == Some(renewed.cert_der.clone())).then_some(()),
        )
        .await;
    }
    assert_eq!(
        leader.authority.bundle().x509_authorities(),
        bundle.x509_authorities()
    );

    // A broken renewal (a key that does not match) is not adopted.
    let broken = root.intermediate(true);
    let other = root.intermediate(true);
    apply_upstream_secret(&cluster, &broken, &other, &root);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        active_upstream_cert(&leader),
        Some(renewed.cert_der.clone())
    );
    leader.shutdown();
    follower.shutdown();
}
