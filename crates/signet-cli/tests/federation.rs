//! Federation with real processes: two standalone deployments of different trust domains, the
//! relationship created, shown and deleted with `signet federation`, and the third-party `spiffe`
//! crate as the workload that receives (and then loses) the federated bundle.

mod common;

use std::time::Duration;

use common::{Deployment, TD, free_port, my_uid, wait_for};
use spiffe::bundle::BundleSource;

fn federation_json(d: &Deployment, trust_domain: &str) -> serde_json::Value {
    let out = d.admin(&["federation", "show", trust_domain, "-o", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workload_receives_the_bundle_of_a_federated_trust_domain_until_the_relationship_ends() {
    let endpoint_port = free_port();
    let a = Deployment::start_with_env(
        vec![
            (
                "SIGNET_BUNDLE_ENDPOINT_ADDRESS",
                format!("127.0.0.1:{endpoint_port}"),
            ),
            ("SIGNET_BUNDLE_ENDPOINT_REFRESH_HINT", "1s".to_owned()),
        ],
        Vec::new(),
    );
    let b = Deployment::start_in("b.example", Vec::new(), Vec::new());

    let bundle_pem = a.server_dir().join("bundle.pem");
    let out = b.admin(&[
        "federation",
        "create",
        "--trust-domain",
        TD,
        "--bundle-endpoint-url",
        &format!("https://127.0.0.1:{endpoint_port}"),
        "--profile",
        "https_spiffe",
        "--endpoint-spiffe-id",
        &format!("spiffe://{TD}/signet/server"),
        "--trust-domain-bundle",
        bundle_pem.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the first fetch", Duration::from_secs(15), || {
        federation_json(&b, TD)["state"] == "ready"
    });
    let shown = federation_json(&b, TD);
    assert_eq!(shown["profile"], "https_spiffe");
    assert!(
        shown["bundle"]["keys"]
            .as_array()
            .is_some_and(|k| !k.is_empty())
    );
    let listed = b.admin(&["federation", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&format!("{TD}  https_spiffe")));
    // A second create is refused; update is the way to change it.
    let again = b.admin(&[
        "federation",
        "create",
        "--trust-domain",
        TD,
        "--bundle-endpoint-url",
        "https://127.0.0.1:1",
        "--profile",
        "https_web",
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("federation update"));

    // A workload of B whose entry federates with A gets A's bundle.
    let out = b.admin(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://b.example/client",
        "--parent-id",
        &b.agent_id,
        "--selector",
        &format!("unix:uid:{}", my_uid()),
        "--federates-with",
        TD,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let source = spiffe::X509Source::builder()
        .endpoint(b.endpoint())
        .build()
        .await
        .unwrap();
    let a_td = spiffe::TrustDomain::new(TD).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let federated = loop {
        if let Some(bundle) = source.bundle_for_trust_domain(&a_td).unwrap() {
            break bundle;
        }
        assert!(std::time::Instant::now() < deadline, "no federated bundle");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let a_roots = signet_spiffe::Bundle::from_pem(
        signet_spiffe::TrustDomain::new(TD).unwrap(),
        &std::fs::read(&bundle_pem).unwrap(),
    )
    .unwrap();
    assert_eq!(
        federated.authorities().len(),
        a_roots.x509_authorities().len()
    );

    // The relationship ends: the workload loses A's bundle.
    let out = b.admin(&["federation", "delete", TD]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while source.bundle_for_trust_domain(&a_td).unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "the bundle stayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!b.admin(&["federation", "show", TD]).status.success());
}

#[test]
fn jwt_validate_checks_a_jwt_svid_against_the_issuers_oidc_discovery() {
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let d = Deployment::start_with_env(
        vec![
            ("SIGNET_JWT_ISSUER", issuer.clone()),
            ("SIGNET_OIDC_ADDRESS", format!("127.0.0.1:{port}")),
            ("SIGNET_OIDC_INSECURE_HTTP", "true".to_owned()),
        ],
        Vec::new(),
    );
    d.create_entry(
        &format!("spiffe://{TD}/api"),
        &format!("unix:uid:{}", my_uid()),
        &[],
    );
    let mut token = String::new();
    wait_for("a JWT-SVID", Duration::from_secs(15), || {
        let out = d.workload(&["jwt", "fetch", "--audience", "vault", "-o", "json"]);
        let fetched: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        token = fetched[0]["token"].as_str().unwrap_or_default().to_owned();
        !token.is_empty()
    });
    let validate = |audience: &str, issuer: &str| {
        std::process::Command::new(common::signet_bin())
            .args([
                "jwt",
                "validate",
                "--audience",
                audience,
                "--oidc-issuer",
                issuer,
                &token,
            ])
            .output()
            .unwrap()
    };
    let ok = validate("vault", &issuer);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        String::from_utf8_lossy(&ok.stdout)
            .contains(&format!("Valid JWT-SVID for spiffe://{TD}/api")),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let wrong_audience = validate("sts", &issuer);
    assert!(!wrong_audience.status.success());
    // Another issuer URL for the same endpoint: discovery announces a different issuer.
    let other = validate("vault", &format!("http://localhost:{port}"));
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains("announces issuer"));
}
