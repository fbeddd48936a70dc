//! Lease leader election against a fake API server keeping the Lease with resourceVersion
//! semantics.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::json;
use signet_server::k8s::leader::{LeaderConfig, LeaderElector};
use signet_test_support::fake_cluster::{FakeCluster, status_error};

const LEASES: &str = "coordination.k8s.io/v1/leases";

fn elector(client: kube::Client, identity: &str) -> LeaderElector {
    LeaderElector::new(
        client,
        LeaderConfig {
            namespace: "signet".into(),
            lease_name: "signet-server".into(),
            replica_name: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        },
    )
}

fn cluster() -> (kube::Client, FakeCluster) {
    let cluster = FakeCluster::new();
    (cluster.client(), cluster)
}

#[tokio::test]
async fn one_replica_leads_renews_and_is_replaced_only_after_expiry() {
    let (client, store) = cluster();
    let a = elector(client.clone(), "server-a");
    let b = elector(client, "server-b");
    let t0 = Timestamp::from_second(1_795_000_000).unwrap();

    assert!(a.step(t0).await.unwrap(), "first replica did not acquire");
    assert!(
        !b.step(t0).await.unwrap(),
        "second replica acquired a held lease"
    );
    let later = t0 + SignedDuration::from_secs(10);
    assert!(a.step(later).await.unwrap(), "holder could not renew");
    // 14 s after the renewal the lease still holds; at 15 s it is expired and b takes over.
    assert!(!b.step(later + SignedDuration::from_secs(14)).await.unwrap());
    assert!(b.step(later + SignedDuration::from_secs(15)).await.unwrap());
    let lease = store.get(LEASES, "signet", "signet-server").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], json!("server-b"));
    assert_eq!(lease["spec"]["leaseTransitions"], json!(1));
    // The old leader sees it lost.
    assert!(!a.step(later + SignedDuration::from_secs(16)).await.unwrap());
}

#[tokio::test]
async fn a_stale_write_loses_the_race() {
    let (client, store) = cluster();
    let a = elector(client.clone(), "server-a");
    let t0 = Timestamp::from_second(1_795_000_000).unwrap();
    assert!(a.step(t0).await.unwrap());
    // Someone else took the lease between our read and write: simulated by an expired lease
    // that two candidates try to take; the store accepts only the first replace.
    let mut lease = store.get(LEASES, "signet", "signet-server").unwrap();
    lease["spec"]["holderIdentity"] = json!("server-c");
    store.apply(lease);
    let later = t0 + SignedDuration::from_secs(30);
    let b = elector(client.clone(), "server-b");
    let c = elector(client, "server-c");
    assert!(c.step(later).await.unwrap(), "holder c renews");
    assert!(!b.step(later + SignedDuration::from_secs(1)).await.unwrap());
}

#[tokio::test]
async fn api_errors_surface() {
    let (client, cluster) = cluster();
    cluster.intercept(|_| Some(status_error(500, "InternalError", "etcd")));
    let a = elector(client, "server-a");
    assert!(
        a.step(Timestamp::from_second(1_795_000_000).unwrap())
            .await
            .is_err()
    );
}
