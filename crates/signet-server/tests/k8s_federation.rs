//! `ClusterFederatedTrustDomain` in Kubernetes mode against the in-process API server: a resource
//! applied takes effect without a restart, the leader writes its status and keeps the bundles in
//! a ConfigMap, a replica started while the peer is down trusts the kept bundle, an invalid
//! resource says why, and deleting the resource ends the relationship.
#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::time::Duration;

use serde_json::{Value, json};
use signet_server::federation::RefreshBounds;
use signet_server::federation::endpoint::{BundleEndpointConfig, EndpointTls};
use signet_server::{RunningServer, ServerConfig};
use signet_spiffe::TrustDomain;
use signet_test_support::fake_cluster::FakeCluster;

const CFTDS: &str = "signet.dev/v1alpha1/clusterfederatedtrustdomains";
const WAIT: Duration = Duration::from_secs(20);

fn refresh() -> RefreshBounds {
    RefreshBounds {
        min: Duration::from_millis(200),
        max: Duration::from_secs(2),
        default: Duration::from_secs(1),
    }
}

async fn partner(dir: &std::path::Path) -> RunningServer {
    let mut config =
        ServerConfig::new(TrustDomain::new("partner.example").unwrap(), dir.to_owned());
    config.bind_address = "127.0.0.1:0".parse().unwrap();
    config.health_address = None;
    config.federation.bundle_endpoint = Some(BundleEndpointConfig {
        address: "127.0.0.1:0".parse().unwrap(),
        tls: EndpointTls::Spiffe,
        refresh_hint: Duration::from_secs(1),
    });
    signet_server::start(config).await.unwrap()
}

async fn replica(cluster: &FakeCluster, dir: &std::path::Path, name: &str) -> RunningServer {
    let mut config = ServerConfig::new(TrustDomain::new("example.org").unwrap(), dir.join(name));
    config.bind_address = "127.0.0.1:0".parse().unwrap();
    config.health_address = None;
    config.federation.refresh = refresh();
    config.kubernetes = Some(signet_server::k8s::KubernetesOptions::new(
        cluster.client(),
        "signet",
        name,
        "prod",
    ));
    signet_server::start(config).await.unwrap()
}

fn resource(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "signet.dev/v1alpha1", "kind": "ClusterFederatedTrustDomain",
        "metadata": {"name": name, "generation": 1}, "spec": spec})
}

async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ready(cluster: &FakeCluster, name: &str) -> Option<(String, String)> {
    let object = cluster.get(CFTDS, "", name)?;
    let condition = &object["status"]["conditions"][0];
    Some((
        condition["status"].as_str()?.to_owned(),
        condition["reason"].as_str()?.to_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_federated_trust_domains_take_effect_live_and_survive_a_restart() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let peer = partner(&dir.path().join("partner")).await;
    let cluster = FakeCluster::new();
    let server = replica(&cluster, dir.path(), "server-0").await;
    let partner_td = TrustDomain::new("partner.example").unwrap();
    let peer_bundle = std::fs::read(dir.path().join("partner").join("bundle.json")).unwrap();

    cluster.apply(resource(
        "partner",
        json!({
            "trustDomain": "partner.example",
            "bundleEndpointURL": format!("https://127.0.0.1:{}/", peer.bundle_endpoint_address.unwrap().port()),
            "bundleEndpointProfile": {"type": "https_spiffe", "endpointSPIFFEID": "spiffe://partner.example/signet/server"},
            "trustDomainBundle": String::from_utf8(peer_bundle).unwrap(),
        }),
    ));
    until("the partner's bundle", || {
        server
            .federation
            .get(&partner_td)
            .is_some_and(|v| v.status.last_success.is_some())
    })
    .await;
    until("Ready status", || {
        ready(&cluster, "partner") == Some(("True".into(), "BundleFetched".into()))
    })
    .await;
    let status = cluster.get(CFTDS, "", "partner").unwrap()["status"].clone();
    assert_eq!(status["observedGeneration"], 1);
    assert!(status["lastRefresh"].is_string());
    assert_eq!(
        status["sequence"].as_u64(),
        peer.authority.bundle().sequence()
    );
    // The transition is an Event on the resource.
    until("the BundleFetched event", || {
        cluster.requests().iter().any(|r| r.contains("/events"))
    })
    .await;
    until("the kept bundle", || {
        cluster
            .get("v1/configmaps", "signet", "signet-federated-bundles")
            .is_some_and(|cm| cm["data"]["partner.example"].is_string())
    })
    .await;

    // An invalid resource is reported, not followed.
    cluster.apply(resource(
        "broken",
        json!({
            "trustDomain": "other.example",
            "bundleEndpointURL": "https://127.0.0.1:1/",
            "bundleEndpointProfile": {"type": "https_web", "endpointSPIFFEID": "spiffe://other.example/x"},
        }),
    ));
    until("InvalidSpec status", || {
        ready(&cluster, "broken")
            .is_some_and(|(status, reason)| status == "False" && reason == "InvalidSpec")
    })
    .await;
    assert!(
        server
            .federation
            .get(&TrustDomain::new("other.example").unwrap())
            .is_none()
    );

    // The partner goes down; a replica started now trusts the kept bundle at once, and the
    // status says why refreshing fails.
    peer.shutdown();
    let second = replica(&cluster, dir.path(), "server-1").await;
    assert!(second.federation.bundles().get(&partner_td).is_some());
    until("EndpointUnreachable status", || {
        ready(&cluster, "partner").is_some_and(|(_, reason)| reason == "EndpointUnreachable")
    })
    .await;
    assert!(
        server.federation.bundles().get(&partner_td).is_some(),
        "last good bundle kept"
    );

    // Deleting the resource ends the relationship on every replica.
    cluster.delete(CFTDS, "", "partner");
    until("the relationship to end", || {
        server.federation.bundles().get(&partner_td).is_none()
            && second.federation.bundles().get(&partner_td).is_none()
    })
    .await;
    server.shutdown();
    second.shutdown();
}
