//! Kubernetes-mode benchmarks (DESIGN §15), in one process with the real controller, server and
//! agent code paths; pod events come from an in-memory API server:
//!
//! - P2: pod scheduled → SVID cached on its node's agent, p50/p99, 10,000 pods over 100 nodes
//!   (100 agents, each attested with PSAT and watching its node's pods).
//! - P6: one agent syncing 100,000 entries: time to the full entry set, time until every SVID is
//!   pre-signed, RSS growth, and that no message-size limit is hit.
//!
//! Run with `cargo bench -p signet-cli --bench kubernetes` (or `hack/bench-kubernetes.sh`).

#![expect(clippy::unwrap_used, reason = "benchmark binary")]

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use signet_spiffe::TrustDomain;
use signet_test_support::fake_cluster::FakeCluster;
use signet_test_support::k8s::uid_for;
use signet_test_support::{percentile, rss_mib};

const TD: &str = "example.org";

fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "uid": uid_for(&format!("node/{name}"))}})
}

fn agent_pod(node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("agent-{node}"), "namespace": "signet", "uid": uid_for(&format!("agent/{node}"))},
        "spec": {"nodeName": node, "serviceAccountName": "signet-agent", "containers": []},
        "status": {"phase": "Running"}})
}

fn workload_pod(i: usize, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("w-{i}"), "namespace": "work", "uid": uid_for(&format!("work/{i}")), "labels": {"app": format!("app{}", i % 50)}},
        "spec": {"nodeName": node, "serviceAccountName": format!("sa{}", i % 20), "containers": []},
        "status": {"phase": "Running"}})
}

fn base_cluster(nodes: usize) -> FakeCluster {
    let cluster = FakeCluster::new();
    for ns in ["signet", "work"] {
        cluster.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    for n in 0..nodes {
        let name = format!("n{n}");
        cluster.apply(node(&name));
        cluster.apply(agent_pod(&name));
    }
    cluster.apply(json!({"apiVersion": "signet.dev/v1alpha1", "kind": "ClusterSPIFFEID",
        "metadata": {"name": "default", "generation": 1},
        "spec": {"spiffeIDTemplate": "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}",
                 "workloadSelectorTemplates": ["k8s:ns:{{ .PodMeta.Namespace }}"]}}));
    // A token is the node name; the review answers like the API server does for the agent's
    // projected token on that node.
    cluster.on_token_review(|request| {
        let node = request["spec"]["token"].as_str().unwrap_or_default().to_owned();
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "status": {"authenticated": true, "audiences": ["signet-server"],
                "user": {"username": "system:serviceaccount:signet:signet-agent",
                    "extra": {"authentication.kubernetes.io/pod-name": [format!("agent-{node}")],
                              "authentication.kubernetes.io/pod-uid": [uid_for(&format!("agent/{node}"))]}}}})
    });
    cluster
}

async fn start_server(cluster: &FakeCluster, dir: &Path) -> signet_server::RunningServer {
    let mut config =
        signet_server::ServerConfig::new(TrustDomain::new(TD).unwrap(), dir.join("server"));
    config.bind_address = "127.0.0.1:0".parse().unwrap();
    config.health_address = None;
    let mut options =
        signet_server::k8s::KubernetesOptions::new(cluster.client(), "signet", "server-0", "bench");
    options.agent_service_accounts = BTreeSet::from(["signet:signet-agent".to_owned()]);
    config.kubernetes = Some(options);
    signet_server::start(config).await.unwrap()
}

async fn start_agent(
    cluster: &FakeCluster,
    server: &signet_server::RunningServer,
    dir: &Path,
    node: &str,
) -> signet_agent::RunningAgent {
    let token = dir.join(format!("token-{node}"));
    std::fs::write(&token, node).unwrap();
    signet_agent::start(signet_agent::AgentConfig {
        workload: signet_agent::WorkloadEndpoint::new(
            dir.join(format!("sock-{node}")).join("api.sock"),
        ),
        trust_domain: TrustDomain::new(TD).unwrap(),
        server_address: server.agent_address.to_string(),
        trust_bundle_path: server.bundle_pem.clone(),
        join_token: None,
        data_dir: dir.join(format!("agent-{node}")),
        unix_attestor: signet_agent::UnixAttestorConfig::default(),
        health_address: None,
        taint_resign_window: signet_agent::DEFAULT_TAINT_RESIGN_WINDOW,
        availability_target: std::time::Duration::ZERO,
        persist_svids: false,
        kubernetes: Some(signet_agent::AgentKubernetes {
            client: cluster.client(),
            node_name: node.to_owned(),
            token_path: token,
            attestor: signet_agent::attestor::k8s::K8sAttestorConfig::default(),
        }),
    })
    .await
    .unwrap()
}

async fn p2() {
    const NODES: usize = 100;
    const PODS: usize = 10_000;
    const PER_TICK: usize = 25;
    let dir = tempfile::tempdir().unwrap();
    let cluster = base_cluster(NODES);
    let server = start_server(&cluster, dir.path()).await;
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut agents = Vec::new();
    for n in 0..NODES {
        let agent = start_agent(&cluster, &server, dir.path(), &format!("n{n}")).await;
        let cache = agent.cache.clone();
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut changes = cache.subscribe();
            let mut known = std::collections::HashSet::new();
            while changes.changed().await.is_ok() {
                let now = Instant::now();
                for id in cache.signed_entry_ids() {
                    if known.insert(id.clone()) {
                        seen.lock().unwrap().entry(id.to_string()).or_insert(now);
                    }
                }
            }
        });
        agents.push(agent);
    }
    let rss_ready = rss_mib(None);
    println!("P2: {NODES} agents attested (PSAT) and synced; RSS {rss_ready:.0} MiB");

    let mut created: HashMap<String, Instant> = HashMap::new();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    for batch in 0..PODS / PER_TICK {
        tick.tick().await;
        for i in batch * PER_TICK..(batch + 1) * PER_TICK {
            let pod = workload_pod(i, &format!("n{}", i % NODES));
            let uid = pod["metadata"]["uid"].as_str().unwrap().to_owned();
            created.insert(format!("csid/default/{uid}"), Instant::now());
            cluster.apply(pod);
        }
    }
    let fed = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.lock().unwrap().len() < PODS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.lock().unwrap().clone();
    let mut latencies: Vec<Duration> = created
        .iter()
        .filter_map(|(id, at)| seen.get(id).map(|s| s.saturating_duration_since(*at)))
        .collect();
    let delivered = latencies.len();
    println!(
        "P2: {PODS} pods over {NODES} nodes fed at {:.0} pods/s; {delivered} SVIDs cached on their agents",
        PODS as f64 / fed.as_secs_f64()
    );
    println!(
        "P2: pod scheduled → SVID cached on its agent: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&mut latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&mut latencies, 0.99).as_secs_f64() * 1e3,
        percentile(&mut latencies, 1.0).as_secs_f64() * 1e3,
    );
    println!(
        "P2: process RSS with {NODES} agents + server + controller + API fake: {:.0} MiB",
        rss_mib(None)
    );
    for agent in agents {
        agent.shutdown();
    }
    server.shutdown();
}

async fn p6() {
    // SIGNET_BENCH_ENTRIES overrides the size (e.g. for a smaller run under a heap profiler).
    let entries_wanted: usize = std::env::var("SIGNET_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    #[expect(non_snake_case, reason = "reads like the constant it replaces")]
    let ENTRIES = entries_wanted;
    let dir = tempfile::tempdir().unwrap();
    let cluster = base_cluster(1);
    // ClusterStaticEntries parented to the node's agent: the entry count is independent of the
    // node's pod count (a node runs at most a few hundred pods; its agent may still serve many
    // entries, e.g. as a downstream/gateway).
    let parent = format!(
        "spiffe://{TD}/signet/agent/k8s/bench/{}",
        uid_for("node/n0")
    );
    for i in 0..ENTRIES {
        cluster.apply(
            json!({"apiVersion": "signet.dev/v1alpha1", "kind": "ClusterStaticEntry",
            "metadata": {"name": format!("e{i}"), "generation": 1},
            "spec": {"spiffeID": format!("spiffe://{TD}/static/{i}"), "parentID": parent,
                     "selectors": [format!("unix:uid:{}", 100_000 + i)]}}),
        );
    }
    let started = Instant::now();
    let server = start_server(&cluster, dir.path()).await;
    while !(server.entries.is_synced() && server.entries.len() == ENTRIES) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss_before = rss_mib(None);
    let t_agent = Instant::now();
    let agent = start_agent(&cluster, &server, dir.path(), "n0").await;
    let mut synced_at = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (entries, signed) = agent.cache.counts();
        if synced_at.is_none() && entries == ENTRIES {
            synced_at = Some(t_agent.elapsed());
            println!(
                "P6: RSS when the entry set arrived: {:.0} MiB ({signed} signed so far)",
                rss_mib(None)
            );
        }
        if signed == ENTRIES || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (entries, signed) = agent.cache.counts();
    let all_signed = t_agent.elapsed();
    println!(
        "P6: server started and controller computed {ENTRIES} entries (from the API LIST of {ENTRIES} ClusterStaticEntries) in {:.2} s",
        t_agent.duration_since(started).as_secs_f64()
    );
    println!(
        "P6: one agent: full entry set ({entries} entries) after {:.2} s, all {signed} SVIDs pre-signed after {:.1} s",
        synced_at.map_or(f64::NAN, |d| d.as_secs_f64()),
        all_signed.as_secs_f64()
    );
    println!(
        "P6: RSS before the agent {rss_before:.0} MiB, after sync + signing {:.0} MiB (growth {:.0} MiB: the agent's 100k entries, keys and SVIDs, and the server's per-agent sync state)",
        rss_mib(None),
        rss_mib(None) - rss_before
    );
    assert_eq!(entries, ENTRIES, "the agent did not receive every entry");
    agent.shutdown();
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "P6: RSS after the agent stopped and its cache was dropped: {:.0} MiB",
        rss_mib(None)
    );
    server.shutdown();
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let which = std::env::args().skip(1).find(|a| a == "p2" || a == "p6");
    runtime.block_on(async {
        if which.as_deref() != Some("p6") {
            p2().await;
        }
        if which.as_deref() != Some("p2") {
            p6().await;
        }
    });
}
