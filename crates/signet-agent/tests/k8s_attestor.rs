//! The k8s workload attestor over a fake `/proc` root and the pod captured from a real cluster.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use signet_agent::attestor::k8s::pods::PodCache;
use signet_agent::attestor::k8s::selectors::image_digest;
use signet_agent::attestor::k8s::{K8sAttestError, K8sAttestor, K8sAttestorConfig};
use signet_test_support::k8s::{PodBuilder, fixture, fixture_pod};

const APP_CID: &str = "953a816f59f1ed5948728656092d95cace58208684b5357a27949e15c6456de7";
const SIDECAR_CID: &str = "b17bdc5863c3ce3015c1f87b7f2df0e6f38daf32b67970327854a461f52fd674";
const UID: &str = "66cf01ec-811b-46e1-9145-7357b92bad2a";

struct FakeProc {
    dir: tempfile::TempDir,
}

impl FakeProc {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn process(&self, pid: i32, cgroup: &str) {
        let dir = self.dir.path().join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup"), cgroup).unwrap();
    }

    fn attestor(&self, pods: Arc<PodCache>, wait: Duration) -> K8sAttestor {
        K8sAttestor::new(
            K8sAttestorConfig {
                proc_root: self.dir.path().to_path_buf(),
                container_wait: wait,
            },
            pods,
        )
    }
}

/// The captured `/proc/<pid>/cgroup` of a container process.
fn captured_cgroup(pid: &str) -> String {
    let captured = fixture("cgroups.txt");
    let block = captured
        .split("== pid ")
        .find(|b| b.starts_with(pid))
        .unwrap();
    block.split_once('\n').unwrap().1.to_owned()
}

fn strings(set: &signet_core::SelectorSet) -> Vec<String> {
    set.to_strings()
}

#[tokio::test]
async fn captured_pod_and_cgroup_give_the_full_selector_set() {
    let proc = FakeProc::new();
    proc.process(21265, &captured_cgroup("21265"));
    let pods = Arc::new(PodCache::new());
    pods.apply(fixture_pod());
    let selectors = strings(
        &proc
            .attestor(pods, Duration::from_secs(1))
            .attest(21265)
            .await
            .unwrap(),
    );
    let digest = "sha256:6d1bf2623761dfcaf71b9abb9a8ad747f8b9eb02084a9d198a750a409141f116";
    for expected in [
        "k8s:ns:demo".to_owned(),
        "k8s:sa:web".to_owned(),
        "k8s:node-name:vm".to_owned(),
        format!("k8s:pod-uid:{UID}"),
        "k8s:pod-name:web-0".to_owned(),
        "k8s:pod-label:app:web".to_owned(),
        "k8s:pod-label:tier:frontend".to_owned(),
        "k8s:container-name:app".to_owned(),
        // The spec's tag, the runtime's name for the image, and its ID: all three.
        "k8s:container-image:local/busybox:1".to_owned(),
        "k8s:container-image:docker.io/library/busybox:1.36".to_owned(),
        format!("k8s:container-image:{digest}"),
        format!("k8s:container-image-digest:{digest}"),
        "k8s:pod-image:busybox:1.36".to_owned(),
        format!("k8s:pod-image-digest:{digest}"),
    ] {
        assert!(
            selectors.contains(&expected),
            "missing {expected} in {selectors:?}"
        );
    }
    assert!(!selectors.iter().any(|s| s == "k8s:container-name:sidecar"));
}

#[tokio::test]
async fn each_container_of_a_pod_is_told_apart() {
    let proc = FakeProc::new();
    proc.process(21294, &captured_cgroup("21294"));
    let pods = Arc::new(PodCache::new());
    pods.apply(fixture_pod());
    let selectors = strings(
        &proc
            .attestor(pods, Duration::from_secs(1))
            .attest(21294)
            .await
            .unwrap(),
    );
    assert!(selectors.contains(&"k8s:container-name:sidecar".to_owned()));
    assert!(selectors.contains(&"k8s:container-image:busybox:1.36".to_owned()));
    assert!(!selectors.contains(&"k8s:container-name:app".to_owned()));
}

#[tokio::test]
async fn host_processes_get_no_k8s_selectors() {
    let proc = FakeProc::new();
    proc.process(1, "0::/init.scope\n");
    let attestor = proc.attestor(Arc::new(PodCache::new()), Duration::from_millis(50));
    assert!(attestor.attest(1).await.unwrap().is_empty());
    // A vanished process is an error, not an empty identity.
    assert!(matches!(
        attestor.attest(4242).await,
        Err(K8sAttestError::Read { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_container_not_in_status_yet_is_waited_for_on_the_watch() {
    let proc = FakeProc::new();
    proc.process(7, &format!("0::/kubepods/besteffort/pod{UID}/{APP_CID}\n"));
    let pods = Arc::new(PodCache::new());
    let mut starting: Pod = fixture_pod();
    if let Some(status) = starting.status.as_mut() {
        status.container_statuses = None;
        status.phase = Some("Pending".into());
    }
    pods.apply(starting);
    let attestor = proc.attestor(pods.clone(), Duration::from_secs(5));
    let waiting = tokio::spawn(async move { attestor.attest(7).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!waiting.is_finished(), "did not wait for the container");
    pods.apply(fixture_pod());
    let selectors = strings(&waiting.await.unwrap().unwrap());
    assert!(selectors.contains(&"k8s:container-name:app".to_owned()));
}

#[tokio::test]
async fn after_the_bound_only_pod_level_selectors_remain() {
    let proc = FakeProc::new();
    let unknown_cid = "c".repeat(64);
    proc.process(
        8,
        &format!("0::/kubepods/besteffort/pod{UID}/{unknown_cid}\n"),
    );
    let pods = Arc::new(PodCache::new());
    pods.apply(fixture_pod());
    let started = std::time::Instant::now();
    let selectors = strings(
        &proc
            .attestor(pods, Duration::from_millis(200))
            .attest(8)
            .await
            .unwrap(),
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(selectors.contains(&format!("k8s:pod-uid:{UID}")));
    assert!(!selectors.iter().any(|s| s.starts_with("k8s:container-")));
}

#[tokio::test]
async fn a_process_of_another_pod_cannot_borrow_its_containers() {
    let proc = FakeProc::new();
    let pods = Arc::new(PodCache::new());
    pods.apply(fixture_pod());
    let other_uid = "11111111-2222-3333-4444-555555555555";
    let other_cid = "d".repeat(64);
    pods.apply(
        PodBuilder::new("attacker", "evil")
            .uid(other_uid)
            .service_account("evil")
            .on_node("vm")
            .container("evil", "evil:1", "sha256:0", &other_cid)
            .build(),
    );
    // Its own cgroup, with the victim's container ID appended as a sub-cgroup.
    proc.process(
        9,
        &format!("0::/kubepods/besteffort/pod{other_uid}/{other_cid}/{APP_CID}\n"),
    );
    // Its own pod UID with the victim's container ID: the container is looked up in that pod only.
    proc.process(
        10,
        &format!("0::/kubepods/besteffort/pod{other_uid}/{SIDECAR_CID}\n"),
    );
    let attestor = proc.attestor(pods, Duration::from_millis(100));
    for pid in [9, 10] {
        let selectors = strings(&attestor.attest(pid).await.unwrap());
        assert!(
            selectors.contains(&"k8s:ns:attacker".to_owned()),
            "{pid}: {selectors:?}"
        );
        assert!(
            !selectors
                .iter()
                .any(|s| s.contains("demo") || s.contains(UID) || s.contains(":web")),
            "{pid}: {selectors:?}"
        );
    }
}

#[tokio::test]
async fn pods_not_on_this_node_or_finished_are_unknown() {
    let proc = FakeProc::new();
    proc.process(11, &captured_cgroup("21265"));
    let pods = Arc::new(PodCache::new());
    let attestor = proc.attestor(pods.clone(), Duration::from_millis(100));
    assert!(matches!(
        attestor.attest(11).await,
        Err(K8sAttestError::UnknownPod(_))
    ));
    let mut finished = fixture_pod();
    if let Some(status) = finished.status.as_mut() {
        status.phase = Some("Succeeded".into());
    }
    pods.apply(fixture_pod());
    assert_eq!(pods.len(), 1);
    pods.apply(finished);
    assert!(pods.is_empty(), "terminal pod kept");
    pods.apply(fixture_pod());
    pods.delete(UID);
    assert!(pods.is_empty());
}

#[test]
fn digests_in_every_runtime_form() {
    let hex = "6d1bf2623761dfcaf71b9abb9a8ad747f8b9eb02084a9d198a750a409141f116";
    for image_id in [
        format!("sha256:{hex}"),
        format!("docker.io/library/busybox@sha256:{hex}"),
        format!("docker-pullable://busybox@sha256:{hex}"),
        format!("docker://sha256:{hex}"),
    ] {
        assert_eq!(
            image_digest(&image_id),
            Some(format!("sha256:{hex}")),
            "{image_id}"
        );
    }
    for bad in [
        String::new(),
        "busybox:1.36".to_owned(),
        "sha256:abc".to_owned(),
        format!("xsha256:{hex}"),
        format!("sha256:{hex}00"),
    ] {
        assert_eq!(image_digest(&bad), None, "{bad}");
    }
}
