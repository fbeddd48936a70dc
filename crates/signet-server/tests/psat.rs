//! `k8s_psat` node attestation against a fake API server answering with the TokenReview, pod and
//! node captured from a real cluster.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::collections::BTreeSet;

use serde_json::{Value, json};
use signet_server::psat::{PsatAttestor, PsatConfig, PsatError};
use signet_spiffe::TrustDomain;
use signet_test_support::fake_cluster::{FakeCluster, status_error};
use signet_test_support::k8s::fixture;

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";

fn config(allowed: &[&str]) -> PsatConfig {
    PsatConfig {
        trust_domain: TrustDomain::new("example.org").unwrap(),
        cluster_name: "prod".into(),
        audience: "signet-server".into(),
        allowed_service_accounts: allowed.iter().map(|s| (*s).to_owned()).collect(),
        node_label_keys: BTreeSet::from(["kubernetes.io/arch".to_owned()]),
    }
}

fn json_fixture(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

/// The API server that issued the captured token: its TokenReview answer, the pod (absent when
/// null) and the node.
fn cluster(review: Value, pod: Value, node: Value) -> FakeCluster {
    let cluster = FakeCluster::new();
    cluster.on_token_review(move |_| review.clone());
    if !pod.is_null() {
        cluster.apply(pod);
    }
    cluster.apply(node);
    cluster
}

fn accepted() -> Value {
    json_fixture("tokenreview-accepted.json")
}

async fn attest(
    allowed: &[&str],
    review: Value,
    pod: Value,
) -> (
    Result<signet_server::psat::PsatAgent, PsatError>,
    FakeCluster,
) {
    let server = cluster(review, pod, json_fixture("node.json"));
    let attestor = PsatAttestor::new(config(allowed), server.client());
    (attestor.attest(TOKEN).await, server)
}

#[tokio::test]
async fn the_captured_token_attests_the_agent_of_its_node() {
    let (result, server) =
        attest(&["demo:web"], accepted(), json_fixture("pod-running.json")).await;
    let agent = result.unwrap();
    assert_eq!(
        agent.agent_id.as_str(),
        "spiffe://example.org/signet/agent/k8s/prod/f2ababaf-ec73-4e18-8b0f-e9ffeb713507"
    );
    for selector in [
        "k8s_psat:cluster:prod",
        "k8s_psat:agent_ns:demo",
        "k8s_psat:agent_sa:web",
        "k8s_psat:agent_pod_name:web-0",
        "k8s_psat:agent_pod_uid:66cf01ec-811b-46e1-9145-7357b92bad2a",
        "k8s_psat:agent_node_name:vm",
        "k8s_psat:agent_node_uid:f2ababaf-ec73-4e18-8b0f-e9ffeb713507",
        "k8s_psat:agent_node_label:kubernetes.io/arch:amd64",
    ] {
        assert!(
            agent.selectors.contains(&selector.to_owned()),
            "{selector}: {:?}",
            agent.selectors
        );
    }
    // Only allow-listed node labels are reported.
    assert!(!agent.selectors.iter().any(|s| s.contains("hostname")));
    assert_eq!(
        server.requests(),
        vec![
            "POST /apis/authentication.k8s.io/v1/tokenreviews",
            "GET /api/v1/namespaces/demo/pods/web-0",
            "GET /api/v1/nodes/vm",
        ]
    );
    let review = &server.calls()[0].body;
    assert_eq!(review["spec"]["audiences"], json!(["signet-server"]));
    assert_eq!(review["spec"]["token"], json!(TOKEN));
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused_by_the_review() {
    let (result, server) = attest(
        &["demo:web"],
        json_fixture("tokenreview-wrong-audience.json"),
        json_fixture("pod-running.json"),
    )
    .await;
    let error = result.unwrap_err();
    assert!(matches!(error, PsatError::NotAuthenticated(_)), "{error}");
    assert!(error.is_refusal());
    assert_eq!(
        server.requests().len(),
        1,
        "looked up the pod of an unauthenticated token"
    );
    // The token never appears in the error.
    assert!(!error.to_string().contains(TOKEN));
}

#[tokio::test]
async fn an_authenticated_review_without_our_audience_is_refused() {
    let mut review = accepted();
    review["status"]["audiences"] = json!(["https://kubernetes.default.svc"]);
    let (result, _) = attest(&["demo:web"], review, json_fixture("pod-running.json")).await;
    assert!(matches!(result, Err(PsatError::WrongAudience(_))));
    let mut review = accepted();
    review["status"]["authenticated"] = json!(false);
    let (result, _) = attest(&["demo:web"], review, json_fixture("pod-running.json")).await;
    assert!(matches!(result, Err(PsatError::NotAuthenticated(_))));
}

#[tokio::test]
async fn service_accounts_outside_the_allow_list_are_refused() {
    let (result, server) = attest(
        &["signet:signet-agent"],
        accepted(),
        json_fixture("pod-running.json"),
    )
    .await;
    assert!(matches!(result, Err(PsatError::ServiceAccountNotAllowed(ref sa)) if sa == "demo:web"));
    assert_eq!(server.requests().len(), 1);
    let mut review = accepted();
    review["status"]["user"]["username"] = json!("system:node:vm");
    let (result, _) = attest(&["demo:web"], review, json_fixture("pod-running.json")).await;
    assert!(matches!(
        result,
        Err(PsatError::ServiceAccountNotAllowed(_))
    ));
}

#[tokio::test]
async fn the_pod_must_still_exist_with_the_tokens_uid() {
    let mut recreated = json_fixture("pod-running.json");
    recreated["metadata"]["uid"] = json!("11111111-2222-3333-4444-555555555555");
    let (result, _) = attest(&["demo:web"], accepted(), recreated).await;
    assert!(matches!(result, Err(PsatError::PodMismatch(_))));
    let (result, server) = attest(&["demo:web"], accepted(), Value::Null).await;
    assert!(matches!(result, Err(PsatError::PodMismatch(_))));
    assert_eq!(
        server.requests().len(),
        2,
        "asked for the node of a missing pod"
    );
}

#[tokio::test]
async fn legacy_unbound_tokens_are_refused() {
    let mut review = accepted();
    review["status"]["user"]["extra"] = json!({});
    let (result, _) = attest(&["demo:web"], review, json_fixture("pod-running.json")).await;
    assert!(matches!(result, Err(PsatError::NotBound)));
    let mut review = accepted();
    review["status"]["user"]["extra"]["authentication.kubernetes.io/pod-uid"] = json!(["a", "b"]);
    let (result, _) = attest(&["demo:web"], review, json_fixture("pod-running.json")).await;
    assert!(matches!(result, Err(PsatError::NotBound)));
}

#[tokio::test]
async fn node_claims_in_the_token_must_match_the_cluster() {
    let mut review = accepted();
    review["status"]["user"]["extra"]["authentication.kubernetes.io/node-uid"] =
        json!(["00000000-0000-0000-0000-000000000000"]);
    let (result, _) = attest(&["demo:web"], review, json_fixture("pod-running.json")).await;
    assert!(matches!(result, Err(PsatError::NodeUnknown(_))));
    let mut unscheduled = json_fixture("pod-running.json");
    unscheduled["spec"]["nodeName"] = Value::Null;
    let (result, _) = attest(&["demo:web"], accepted(), unscheduled).await;
    assert!(matches!(result, Err(PsatError::NodeUnknown(_))));
}

#[tokio::test]
async fn api_outages_are_not_refusals_and_malformed_tokens_never_reach_the_api() {
    let down = FakeCluster::new();
    down.intercept(|_| Some(status_error(503, "ServiceUnavailable", "etcd down")));
    let attestor = PsatAttestor::new(config(&["demo:web"]), down.client());
    let error = attestor.attest(TOKEN).await.unwrap_err();
    assert!(
        matches!(error, PsatError::Api(_)) && !error.is_refusal(),
        "{error}"
    );

    let server = FakeCluster::new();
    server.intercept(|_| Some(status_error(500, "x", "x")));
    let attestor = PsatAttestor::new(config(&["demo:web"]), server.client());
    for bad in ["", "a b", &"x".repeat(20_000)] {
        assert!(matches!(
            attestor.attest(bad).await,
            Err(PsatError::Malformed)
        ));
    }
    assert!(server.calls().is_empty());
}
