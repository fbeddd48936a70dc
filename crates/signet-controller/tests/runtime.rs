//! The controller's watch/write loop against the in-memory API server: the entry set is
//! announced only when complete, survives watch restarts without shrinking, drops what vanished
//! during an outage, and only the leader writes status. Time is paused: waits run on virtual
//! time, so "nothing happened for 300 ms" costs no wall-clock time and cannot flake.

#![expect(clippy::unwrap_used, clippy::panic, reason = "tests fail loudly")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use signet_controller::runtime::{EntrySink, RuntimeConfig, run};
use signet_controller::{ControllerConfig, EntryChange, Index};
use signet_spiffe::TrustDomain;
use signet_test_support::fake_cluster::FakeCluster;
use tokio::sync::watch;

#[derive(Default)]
struct Recorder {
    entries: Mutex<BTreeMap<String, String>>,
    dns_names: Mutex<BTreeMap<String, Vec<String>>>,
    removals: Mutex<Vec<String>>,
    synced: Mutex<Option<usize>>,
}

impl EntrySink for Recorder {
    fn apply(&self, changes: Vec<EntryChange>) {
        let mut entries = self.entries.lock().unwrap();
        for change in changes {
            match change {
                EntryChange::Upsert(e) => {
                    entries.insert(e.id.to_string(), e.spiffe_id.to_string());
                    self.dns_names
                        .lock()
                        .unwrap()
                        .insert(e.id.to_string(), e.dns_names.clone());
                }
                EntryChange::Remove(id) => {
                    entries.remove(id.as_str());
                    self.removals.lock().unwrap().push(id.to_string());
                }
            }
        }
    }
    fn synced(&self) {
        *self.synced.lock().unwrap() = Some(self.entries.lock().unwrap().len());
    }
}

impl Recorder {
    fn count(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

fn pod(name: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "demo", "uid": signet_test_support::k8s::uid_for(name)},
        "spec": {"nodeName": node, "serviceAccountName": name, "containers": []},
        "status": {"phase": "Running"}})
}

fn cluster(pods: usize) -> FakeCluster {
    let cluster = FakeCluster::new();
    cluster.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}));
    cluster.apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "uid": "11111111-0000-0000-0000-000000000001"}}));
    for i in 0..pods {
        cluster.apply(pod(&format!("p{i}"), "n1"));
    }
    cluster.apply(json!({"apiVersion": "signet.dev/v1alpha1", "kind": "ClusterSPIFFEID",
        "metadata": {"name": "default", "generation": 3},
        "spec": {"spiffeIDTemplate": "spiffe://{{ .TrustDomain }}/sa/{{ .PodSpec.ServiceAccountName }}"}}));
    cluster
}

fn start(cluster: &FakeCluster, leader: watch::Receiver<bool>) -> Arc<Recorder> {
    let sink = Arc::new(Recorder::default());
    let index = Index::new(ControllerConfig::new(
        TrustDomain::new("example.org").unwrap(),
        "c",
    ));
    tokio::spawn(run(
        cluster.client(),
        index,
        sink.clone(),
        leader,
        RuntimeConfig {
            status_interval: Duration::from_millis(50),
            ..RuntimeConfig::default()
        },
    ));
    sink
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(start_paused = true)]
async fn the_entry_set_is_announced_complete_and_survives_watch_restarts() {
    let cluster = cluster(50);
    let (_leader_tx, leader) = watch::channel(false);
    let sink = start(&cluster, leader);
    eventually("sync", || sink.synced.lock().unwrap().is_some()).await;
    assert_eq!(
        *sink.synced.lock().unwrap(),
        Some(50),
        "announced before the lists were complete"
    );

    // A watch restart after history compaction re-lists everything: nothing may be removed.
    cluster.expire_history();
    cluster.break_watches();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.apply(pod("late", "n1"));
    eventually("the pod created after the restart", || sink.count() == 51).await;
    assert!(
        sink.removals.lock().unwrap().is_empty(),
        "a relist removed entries"
    );

    // A pod deleted while no watch saw it is removed after the next relist, and only it.
    cluster.delete_silently("v1/pods", "demo", "p7");
    cluster.expire_history();
    cluster.break_watches();
    eventually("the missed deletion", || sink.count() == 50).await;
    assert_eq!(sink.removals.lock().unwrap().len(), 1);

    // Status is never written by a follower.
    assert!(
        !cluster.requests().iter().any(|r| r.starts_with("PATCH")),
        "a follower wrote: {:?}",
        cluster.requests()
    );
}

#[tokio::test(start_paused = true)]
async fn the_leader_writes_status_with_server_side_apply() {
    let cluster = cluster(3);
    cluster.apply(
        json!({"apiVersion": "signet.dev/v1alpha1", "kind": "ClusterSPIFFEID",
        "metadata": {"name": "broken", "generation": 1},
        "spec": {"spiffeIDTemplate": "spiffe://{{ .TrustDomain }}/{{ .PodMeta.Labels.app }}"}}),
    );
    let (leader_tx, leader) = watch::channel(false);
    let _sink = start(&cluster, leader);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!cluster.requests().iter().any(|r| r.starts_with("PATCH")));
    leader_tx.send_replace(true);
    let path = "signet.dev/v1alpha1/clusterspiffeids";
    eventually("status", || {
        cluster
            .get(path, "", "default")
            .is_some_and(|o| o["status"]["observedGeneration"] == json!(3))
    })
    .await;
    let ok = cluster.get(path, "", "default").unwrap();
    assert_eq!(ok["status"]["conditions"][0]["type"], json!("Ready"));
    assert_eq!(ok["status"]["conditions"][0]["status"], json!("True"));
    assert_eq!(ok["status"]["stats"]["podsSelected"], json!(3));
    eventually("failure status", || {
        cluster
            .get(path, "", "broken")
            .is_some_and(|o| o["status"]["conditions"][0]["reason"] == json!("RenderFailures"))
    })
    .await;
    let broken = cluster.get(path, "", "broken").unwrap();
    assert_eq!(broken["status"]["conditions"][0]["status"], json!("False"));
    assert_eq!(
        broken["status"]["stats"]["podEntryRenderFailures"],
        json!(3)
    );
    let requests = cluster.requests();
    assert!(
        requests
            .iter()
            .any(|r| r == "PATCH /apis/signet.dev/v1alpha1/clusterspiffeids/default/status")
    );
    // Render failures are reported as an Event too.
    assert!(
        requests.iter().any(|r| r.contains("events")),
        "{requests:?}"
    );
    // Unchanged status is not rewritten.
    let writes = |r: &Vec<String>| r.iter().filter(|r| r.ends_with("/default/status")).count();
    let before = writes(&cluster.requests());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(writes(&cluster.requests()), before);
}

/// Policy name → its targets, as last handed to the sink.
type Bindings = Vec<(String, Vec<String>)>;

#[derive(Default)]
struct PolicyRecorder {
    entries: Recorder,
    bindings: Mutex<Option<Bindings>>,
}

impl EntrySink for PolicyRecorder {
    fn apply(&self, changes: Vec<EntryChange>) {
        self.entries.apply(changes);
    }
    fn synced(&self) {
        self.entries.synced();
    }
    fn policies(&self, bindings: Vec<signet_core::policy::PolicyBinding>) {
        *self.bindings.lock().unwrap() = Some(
            bindings
                .into_iter()
                .map(|b| {
                    (
                        b.policy.id.to_string(),
                        b.targets.iter().map(ToString::to_string).collect(),
                    )
                })
                .collect(),
        );
    }
}

impl PolicyRecorder {
    fn targets_of(&self, policy: &str) -> Option<Vec<String>> {
        self.bindings
            .lock()
            .unwrap()
            .as_ref()?
            .iter()
            .find(|(name, _)| name == policy)
            .map(|(_, targets)| targets.clone())
    }
}

fn authorization_policy(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "signet.dev/v1alpha1", "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": "demo", "generation": 2}, "spec": spec})
}

fn labelled_pod(name: &str, app: &str) -> Value {
    let mut pod = pod(name, "n1");
    pod["metadata"]["labels"] = json!({"app": app});
    pod
}

#[tokio::test(start_paused = true)]
async fn authorization_policies_resolve_to_identities_and_get_status() {
    let cluster = cluster(2);
    cluster.apply(labelled_pod("api", "api"));
    cluster.apply(authorization_policy(
        "api-readers",
        json!({"selector": {"matchLabels": {"app": "api"}}, "action": "ALLOW",
            "rules": [{"from": [{"spiffeIDs": ["spiffe://example.org/sa/p0"]}]}]}),
    ));
    cluster.apply(authorization_policy(
        "typo",
        json!({"targetSPIFFEIDs": ["spiffe://example.org/sa/*"], "action": "DENY",
            "rules": [{"from": [{"trustDomains": ["exmaple.org"]}]}]}),
    ));
    cluster.apply(authorization_policy(
        "broken",
        json!({"selector": {}, "action": "ALLOW", "rules": [{"to": [{"paths": ["relative"]}]}]}),
    ));
    cluster.apply(authorization_policy(
        "broken-deny",
        json!({"targetSPIFFEIDs": ["spiffe://example.org/sa/p1"], "action": "DENY",
            "rules": [{"to": [{"paths": ["relative"]}]}]}),
    ));
    let sink = Arc::new(PolicyRecorder::default());
    let (leader_tx, leader) = watch::channel(false);
    tokio::spawn(run(
        cluster.client(),
        Index::new(ControllerConfig::new(
            TrustDomain::new("example.org").unwrap(),
            "c",
        )),
        sink.clone(),
        leader,
        RuntimeConfig {
            status_interval: Duration::from_millis(50),
            ..RuntimeConfig::default()
        },
    ));
    // The selector resolves to the identity of the selected pod; patterns stay patterns; an
    // invalid policy binds nothing.
    eventually("bindings", || {
        sink.targets_of("demo/api-readers") == Some(vec!["spiffe://example.org/sa/api".into()])
    })
    .await;
    assert_eq!(
        sink.targets_of("demo/typo"),
        Some(vec!["spiffe://example.org/sa/*".to_owned()])
    );
    // An invalid ALLOW still takes its targets (every pod of demo) out of the default policy.
    assert_eq!(
        sink.targets_of("demo/broken").map(|t| t.len()),
        Some(3),
        "an invalid ALLOW binds its targets as an ALLOW of nothing"
    );
    // An invalid DENY fails closed: it still binds its targets (as a DENY of everything).
    assert_eq!(
        sink.targets_of("demo/broken-deny"),
        Some(vec!["spiffe://example.org/sa/p1".to_owned()])
    );

    // Relabelling the pod away leaves the policy with no target.
    cluster.apply(labelled_pod("api", "web"));
    eventually("the relabelled pod to drop out", || {
        sink.targets_of("demo/api-readers") == Some(vec![])
    })
    .await;
    cluster.apply(labelled_pod("api", "api"));

    leader_tx.send_replace(true);
    let path = "signet.dev/v1alpha1/authorizationpolicies";
    let condition = |name: &str, kind: &str| {
        cluster.get(path, "demo", name).and_then(|o| {
            o["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == json!(kind))
                .cloned()
        })
    };
    eventually("policy status", || {
        cluster
            .get(path, "demo", "api-readers")
            .is_some_and(|o| o["status"]["targets"]["pods"] == json!(1))
    })
    .await;
    let ok = cluster.get(path, "demo", "api-readers").unwrap();
    assert_eq!(ok["status"]["observedGeneration"], json!(2));
    assert_eq!(ok["status"]["targets"]["spiffeIDs"], json!(1));
    assert_eq!(
        condition("api-readers", "Accepted").unwrap()["status"],
        json!("True")
    );
    eventually("the invalid policy's status", || {
        condition("broken", "Accepted").is_some()
    })
    .await;
    let broken = condition("broken", "Accepted").unwrap();
    assert_eq!(
        (broken["status"].clone(), broken["reason"].clone()),
        (json!("False"), json!("Invalid"))
    );
    assert!(
        broken["message"]
            .as_str()
            .unwrap()
            .contains("rules[0].to[0].paths[0]")
    );
    eventually("the invalid DENY's status", || {
        condition("broken-deny", "Accepted").is_some()
    })
    .await;
    let broken_deny = condition("broken-deny", "Accepted").unwrap();
    assert_eq!(broken_deny["status"], json!("False"));
    assert!(
        broken_deny["message"]
            .as_str()
            .unwrap()
            .starts_with("failing closed"),
        "{broken_deny}"
    );
    eventually("the typo's status", || {
        condition("typo", "ResolvedRefs").is_some()
    })
    .await;
    let typo = condition("typo", "ResolvedRefs").unwrap();
    assert_eq!(typo["reason"], json!("UnknownTrustDomain"));
    assert!(typo["message"].as_str().unwrap().contains("exmaple.org"));
    // Three pods carry IDs matching `spiffe://example.org/sa/*`.
    assert_eq!(
        cluster.get(path, "demo", "typo").unwrap()["status"]["targets"]["pods"],
        json!(3)
    );
    assert!(cluster.requests().iter().any(|r| r
        == "PATCH /apis/signet.dev/v1alpha1/namespaces/demo/authorizationpolicies/api-readers/status"));

    // Deleting a policy removes its binding.
    cluster.delete(path, "demo", "typo");
    eventually("the deleted policy to go", || {
        sink.targets_of("demo/typo").is_none()
    })
    .await;
}

/// autoPopulateDNSNames: EndpointSlices are watched only once a ClusterSPIFFEID asks, and the
/// names follow the Services as they change.
#[tokio::test(start_paused = true)]
async fn service_dns_names_follow_endpoint_slices_when_asked_for() {
    let cluster = cluster(1);
    let (_leader_tx, leader) = watch::channel(false);
    let sink = start(&cluster, leader);
    eventually("sync", || sink.synced.lock().unwrap().is_some()).await;
    let watched_slices = || {
        cluster
            .requests()
            .iter()
            .any(|r| r.contains("endpointslices"))
    };
    assert!(
        !watched_slices(),
        "no ClusterSPIFFEID asked for Service names yet"
    );
    let slice = |pods: &[&str]| {
        serde_json::to_value(signet_test_support::k8s::endpoint_slice(
            "demo", "web-abc", "web", pods,
        ))
        .unwrap()
    };
    cluster.apply(slice(&["p0"]));
    cluster.apply(json!({"apiVersion": "signet.dev/v1alpha1", "kind": "ClusterSPIFFEID",
        "metadata": {"name": "default", "generation": 4},
        "spec": {"spiffeIDTemplate": "spiffe://{{ .TrustDomain }}/sa/{{ .PodSpec.ServiceAccountName }}",
                 "autoPopulateDNSNames": true}}));
    let names = || -> Vec<String> {
        sink.dns_names
            .lock()
            .unwrap()
            .values()
            .next()
            .cloned()
            .unwrap_or_default()
    };
    eventually("the Service's names", || {
        names()
            == [
                "web.demo.svc.cluster.local",
                "web.demo.svc",
                "web.demo",
                "web",
            ]
    })
    .await;
    assert!(watched_slices());
    cluster.apply(slice(&["p9"]));
    eventually("the names to go with the endpoint", || names().is_empty()).await;
    cluster.apply(slice(&["p0"]));
    eventually("the names back", || names().len() == 4).await;
    cluster.delete("discovery.k8s.io/v1/endpointslices", "demo", "web-abc");
    eventually("the names to go with the slice", || names().is_empty()).await;
}
