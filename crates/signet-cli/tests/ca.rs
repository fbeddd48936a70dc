//! `signet ca` against real processes: the authorities listed, the refusals that keep trust
//! intact, a forced rotation, and a taint that makes the agent re-sign its workloads' SVIDs with
//! the new authority before the tainted one is revoked.

mod common;

use std::time::Duration;

use common::{Deployment, TD, my_uid, wait_for};

fn authorities(d: &Deployment) -> Vec<serde_json::Value> {
    let out = d.admin(&["ca", "show", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    shown["authorities"].as_array().cloned().unwrap_or_default()
}

/// The live SVIDs the agents report for an authority.
fn svids_of(d: &Deployment, id: &str) -> Option<u64> {
    authorities(d)
        .into_iter()
        .find(|a| a["id"] == id)
        .and_then(|a| a["svids"].as_u64())
}

/// A deployment whose agent re-signs tainted SVIDs within 2 s (the default window is 30 s).
fn deployment() -> Deployment {
    Deployment::start_with_agent_env(vec![("SIGNET_TAINT_RESIGN_WINDOW", "2s".into())])
}

fn x509_with(d: &Deployment, status: &str) -> Option<String> {
    authorities(d)
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
    let kinds: Vec<(String, String)> = authorities(&d)
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
        svids_of(&d, &original) == Some(2)
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
        || svids_of(&d, &original) == Some(0),
    );
    assert_eq!(svids_of(&d, &prepared), Some(2));
    // Then it leaves the bundle.
    let out = d.admin(&["ca", "revoke", "--kind", "x509", "--id", &original]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(x509_with(&d, "old").is_none());
    assert!(serial(&d).is_some(), "the workload keeps a valid SVID");
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
