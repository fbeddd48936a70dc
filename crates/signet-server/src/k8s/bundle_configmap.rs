//! Publishes the trust bundle to a ConfigMap (`bundle.pem` and `bundle.spiffe`) that agents and
//! workloads mount. Only the leader writes; it rewrites on every bundle change and when it
//! becomes leader, with server-side apply under the `signet` field manager.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::authority::AuthorityService;

/// The PEM key of the ConfigMap.
pub const PEM_KEY: &str = "bundle.pem";
/// The SPIFFE bundle JSON key of the ConfigMap.
pub const SPIFFE_KEY: &str = "bundle.spiffe";

/// Writes the current bundle once.
pub async fn publish(
    api: &Api<ConfigMap>,
    name: &str,
    authority: &AuthorityService,
) -> Result<(), kube::Error> {
    let bundle = authority.bundle();
    let patch = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "signet"},
            "annotations": {"signet.dev/bundle-sequence": bundle.sequence().unwrap_or(0).to_string()},
        },
        "data": {PEM_KEY: bundle.to_pem(), SPIFFE_KEY: bundle.to_spiffe_json()},
    });
    api.patch(
        name,
        &PatchParams::apply("signet").force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
}

/// Keeps the ConfigMap current while this replica leads.
pub fn spawn(
    api: Api<ConfigMap>,
    name: String,
    authority: Arc<AuthorityService>,
    mut leader: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    signet_unix::spawn_named("bundle-configmap", async move {
        let mut bundles = authority.subscribe_bundle();
        let mut pending = true;
        loop {
            if pending && *leader.borrow_and_update() {
                match publish(&api, &name, &authority).await {
                    Ok(()) => {
                        pending = false;
                        info!(configmap = %name, "trust bundle published");
                    }
                    Err(error) => warn!(%error, "publishing the bundle ConfigMap failed; retrying"),
                }
            }
            tokio::select! {
                changed = bundles.changed() => { if changed.is_err() { break } pending = true; }
                changed = leader.changed() => { if changed.is_err() { break } pending = true; }
                () = tokio::time::sleep(Duration::from_secs(if pending { 2 } else { 300 })) => {}
            }
        }
    })
}
