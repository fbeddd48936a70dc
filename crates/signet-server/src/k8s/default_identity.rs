//! The default identity: a `fallback: true` ClusterSPIFFEID the server keeps in place (the Helm
//! chart's `identities.default`). The leader applies it with server-side apply under its own
//! field manager whenever it becomes leader, so upgrades change it in place — never delete and
//! re-create, which would briefly take identities away — and it needs no Helm hook, so
//! `helm template` and GitOps tools get it too. Fields it does not set (selectors, TTLs) stay the
//! user's; the fields it sets come back at the next leader change if edited.

use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, warn};

/// Field manager of the default identity (distinct from the status writer's `signet`).
pub const FIELD_MANAGER: &str = "signet-default-identity";

/// What the default identity looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultIdentity {
    /// The ClusterSPIFFEID's name.
    pub name: String,
    /// Its `spiffeIDTemplate` (checked when the options are built).
    pub spiffe_id_template: String,
    /// Its `className`, so a class-restricted server still reconciles it.
    pub class_name: Option<String>,
}

impl DefaultIdentity {
    /// The object applied: only the fields the server owns.
    pub fn manifest(&self) -> serde_json::Value {
        let mut spec = json!({
            "spiffeIDTemplate": self.spiffe_id_template,
            "fallback": true,
            "hint": "default",
        });
        if let Some(class_name) = &self.class_name {
            spec["className"] = json!(class_name);
        }
        json!({
            "apiVersion": "signet.dev/v1alpha1",
            "kind": "ClusterSPIFFEID",
            "metadata": {
                "name": self.name,
                "labels": {"app.kubernetes.io/managed-by": "signet"},
            },
            "spec": spec,
        })
    }
}

fn api(client: kube::Client) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("signet.dev", "v1alpha1", "ClusterSPIFFEID"),
        "clusterspiffeids",
    );
    Api::all_with(client, &resource)
}

/// Applies the default identity once.
pub async fn apply(client: kube::Client, identity: &DefaultIdentity) -> Result<(), kube::Error> {
    api(client)
        .patch(
            &identity.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(identity.manifest()),
        )
        .await
        .map(|_| ())
}

/// How often the leader re-applies it (an unchanged apply is a no-op for the API server); this
/// brings back a deleted or edited default identity without waiting for a leader change.
const REAPPLY_EVERY: Duration = Duration::from_secs(60);

/// Applies the default identity when this replica becomes leader and every minute while it
/// leads, retrying failures every 5 s.
pub fn spawn(
    client: kube::Client,
    identity: DefaultIdentity,
    mut leader: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    signet_unix::spawn_named("default-identity", async move {
        let mut pending = true;
        loop {
            if pending && *leader.borrow_and_update() {
                match apply(client.clone(), &identity).await {
                    Ok(()) => {
                        pending = false;
                        debug!(name = %identity.name, "default ClusterSPIFFEID applied");
                    }
                    Err(error) => warn!(
                        %error,
                        name = %identity.name,
                        "applying the default ClusterSPIFFEID failed; retrying"
                    ),
                }
            }
            let wait = if pending {
                Duration::from_secs(5)
            } else {
                REAPPLY_EVERY
            };
            tokio::select! {
                changed = leader.changed() => {
                    if changed.is_err() { break }
                    pending = true;
                }
                () = tokio::time::sleep(wait) => pending = true,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_sets_only_the_owned_fields() {
        let identity = DefaultIdentity {
            name: "signet-default".into(),
            spiffe_id_template:
                "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}"
                    .into(),
            class_name: None,
        };
        let manifest = identity.manifest();
        assert_eq!(manifest["spec"]["fallback"], true);
        assert_eq!(manifest["spec"]["hint"], "default");
        assert!(manifest["spec"].get("className").is_none());
        assert!(manifest["spec"].get("podSelector").is_none());
        let classed = DefaultIdentity {
            class_name: Some("blue".into()),
            ..identity
        };
        assert_eq!(classed.manifest()["spec"]["className"], "blue");
    }
}
