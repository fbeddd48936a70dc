//! `signet ca` against real processes: the authorities listed, the refusals that keep trust
//! intact, a forced rotation, and a taint that makes the agent re-sign its workloads' SVIDs with
//! the new authority before the tainted one is revoked.

mod common;

use std::time::Duration;

use common::{Deployment, TD, my_uid, wait_for};

/// A deployment whose agent re-signs tainted SVIDs within 2 s (the default window is 30 s).
fn deployment() -> Deployment {
    Deployment::start_with_agent_env(vec![("SIGNET_TAINT_RESIGN_WINDOW", "2s".into())])
}

fn x509_with(d: &Deployment, status: &str) -> Option<String> {
    d.authorities()
        .into_iter()
        .find(|a| a["kind"] == "x509" && a["status"] == status)
        .and_then(|a| a["id"].as_str().map(str::to_owned))
}

/// The serial of the workload's X509-SVID, as `signet svid fetch -o json` reports it.
fn serial(d: &Deployment) -> Option<String> {
    let out = d.workload(&["svid", "fetch", "-o", "json"]);
    let svids: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    svids[0]["serial"].as_str().map(str::to_owned)
}

#[test]
fn an_operator_rotates_taints_and_revokes_without_breaking_trust() {
    let d = deployment();
    d.create_entry(
        &format!("spiffe://{TD}/api"),
        &format!("unix:uid:{}", my_uid()),
        &[],
    );
    wait_for("the SVID", Duration::from_secs(15), || serial(&d).is_some());
    let first_serial = serial(&d).unwrap_or_default();
    let kinds: Vec<(String, String)> = d
        .authorities()
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap_or_default().to_owned(),
                a["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("x509".into(), "active".into()),
            ("jwt".into(), "active".into())
        ]
    );
    let original = x509_with(&d, "active").unwrap_or_default();
    // The agent reports its own SVID and the workload's, both signed by the one authority.
    wait_for("the agent's report", Duration::from_secs(15), || {
        d.svids_of(&original) == Some(2)
    });

    // What would break trust is refused with the step to take first.
    let refused = d.admin(&["ca", "taint", "--kind", "x509", "--id", &original]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("activate its successor first"));
    let refused = d.admin(&["ca", "revoke", "--kind", "x509", "--id", &original]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("taint it first"));

    // A forced rotation.
    assert!(
        d.admin(&["ca", "prepare", "--kind", "x509"])
            .status
            .success()
    );
    let prepared = x509_with(&d, "prepared").unwrap_or_default();
    assert!(
        d.admin(&["ca", "activate", "--kind", "x509"])
            .status
            .success()
    );
    assert_eq!(x509_with(&d, "active").as_deref(), Some(prepared.as_str()));
    assert_eq!(x509_with(&d, "old").as_deref(), Some(original.as_str()));
    // SVIDs of the old authority stay valid: a rotation alone re-signs nothing.
    assert_eq!(serial(&d).as_deref(), Some(first_serial.as_str()));

    // The old authority is tainted: the workload's SVID is re-signed at once, by the new one.
    let out = d.admin(&["ca", "taint", "--kind", "x509", "--id", &original]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the re-signed SVID", Duration::from_secs(15), || {
        serial(&d).is_some_and(|s| s != first_serial)
    });
    // The agent renewed its own SVID too, and says so: nothing depends on the old authority.
    wait_for(
        "no SVID of the tainted authority",
        Duration::from_secs(15),
        || d.svids_of(&original) == Some(0),
    );
    assert_eq!(d.svids_of(&prepared), Some(2));
    // Then it leaves the bundle.
    let out = d.admin(&["ca", "revoke", "--kind", "x509", "--id", &original]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(x509_with(&d, "old").is_none());
    assert!(serial(&d).is_some(), "the workload keeps a valid SVID");

    // What happened is on /metrics: expiry and SVIDs per authority, and the events.
    let (code, metrics) = common::http_request(d.health_port, "GET", "/metrics");
    assert_eq!(code, 200);
    for line in [
        format!(
            "signet_server_ca_authority_svids{{kind=\"x509\",id=\"{prepared}\",status=\"active\",tainted=\"false\"}} 2"
        ),
        "signet_server_ca_events_total{event=\"tainted\"} 1".to_owned(),
        "signet_server_ca_events_total{event=\"revoked\"} 1".to_owned(),
        "signet_server_ca_reporting_agents 1".to_owned(),
    ] {
        assert!(metrics.contains(&line), "{line} missing from\n{metrics}");
    }
    assert!(metrics.contains(&format!(
        "signet_server_ca_authority_expiry_timestamp_seconds{{kind=\"x509\",id=\"{prepared}\""
    )));
}

fn jwt(d: &Deployment) -> String {
    let out = d.workload(&["jwt", "fetch", "--audience", "db", "-o", "json"]);
    let fetched: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    fetched[0]["token"].as_str().unwrap_or_default().to_owned()
}

fn kid(token: &str) -> String {
    signet_spiffe::JwtSvid::parse_insecure(token)
        .map(|svid| svid.key_id().to_owned())
        .unwrap_or_default()
}

#[test]
fn a_tainted_jwt_key_is_not_served_from_the_agents_cache() {
    let d = deployment();
    d.create_entry(
        &format!("spiffe://{TD}/api"),
        &format!("unix:uid:{}", my_uid()),
        &[],
    );
    wait_for("a JWT-SVID", Duration::from_secs(15), || {
        !jwt(&d).is_empty()
    });
    let first = jwt(&d);
    assert_eq!(jwt(&d), first, "served from the agent's cache");
    let old_kid = kid(&first);
    assert!(
        d.admin(&["ca", "prepare", "--kind", "jwt"])
            .status
            .success()
    );
    assert!(
        d.admin(&["ca", "activate", "--kind", "jwt"])
            .status
            .success()
    );
    // Rotation alone keeps the cached token (its key is still in every bundle).
    assert_eq!(jwt(&d), first);
    let out = d.admin(&["ca", "taint", "--kind", "jwt", "--id", &old_kid]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("a token of the new key", Duration::from_secs(15), || {
        let token = jwt(&d);
        !token.is_empty() && kid(&token) != old_kid
    });
}

/// `signet server --pkcs11-*` against SoftHSM2: workloads get SVIDs signed in the token, an
/// operator rotation makes a new token key, the stored CA state holds no key, and the PIN
/// reaches no log.
#[test]
fn a_server_keeps_its_ca_keys_in_a_pkcs11_token() {
    use signet_test_support::softhsm::{MODULE, PIN, SoftHsm};
    let hsm = SoftHsm::with_tokens(&["signet-ca"]);
    let (conf_key, conf) = hsm.env();
    let pin_file = hsm.dir().join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    let d = Deployment::start_with_env(
        vec![
            (conf_key, conf.to_string_lossy().into_owned()),
            ("SIGNET_PKCS11_MODULE", MODULE.into()),
            ("SIGNET_PKCS11_TOKEN_LABEL", "signet-ca".into()),
            ("SIGNET_PKCS11_PIN_FILE", pin_file.display().to_string()),
            ("RUST_LOG", "debug".into()),
        ],
        Vec::new(),
    );
    d.create_entry(
        &format!("spiffe://{TD}/api"),
        &format!("unix:uid:{}", my_uid()),
        &[],
    );
    wait_for(
        "an SVID signed in the token",
        Duration::from_secs(15),
        || serial(&d).is_some(),
    );
    for kind in ["x509", "jwt"] {
        for step in ["prepare", "activate"] {
            let out = d.admin(&["ca", step, "--kind", kind]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert!(!jwt(&d).is_empty(), "a JWT-SVID signed in the token");
    let state = std::fs::read_to_string(d.server_dir().join("ca-keys.json")).unwrap();
    assert!(!state.contains("private_key"), "{state}");
    assert_eq!(state.matches("pkcs11").count(), 4, "{state}");
    assert!(!d.logs().contains(PIN), "the PIN reached a log");
}

#[test]
fn a_server_with_a_wrong_pkcs11_pin_refuses_to_start_and_says_why() {
    use signet_test_support::softhsm::{MODULE, SoftHsm};
    let hsm = SoftHsm::with_tokens(&["signet-ca"]);
    let (conf_key, conf) = hsm.env();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::signet_bin())
        .args([
            "server",
            "--trust-domain",
            TD,
            "--bind-address",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("server"))
        .args([
            "--pkcs11-module",
            MODULE,
            "--pkcs11-token-label",
            "signet-ca",
        ])
        .env(conf_key, conf)
        .env("SIGNET_PKCS11_PIN", "wrong-pin-1234")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("PIN of token \"signet-ca\" is incorrect"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-pin-1234"), "{stderr}");
}
