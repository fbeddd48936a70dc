//! `ClusterSPIFFEID`: which pods get which SPIFFE ID, as templates rendered per pod. Field names
//! and meanings follow spire-controller-manager's resource of the same name, so a manifest migrates
//! by changing its `apiVersion`.

#![expect(
    clippy::duplicated_attributes,
    reason = "each kube printcolumn(...) repeats keys such as type_, which clippy reads as duplicates"
)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cel::{TRUST_DOMAIN_LIST_RULE, TRUST_DOMAIN_MESSAGE, TTL_MESSAGE, TTL_RULE};

/// Desired identities for the pods a selector picks.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "signet.dev",
    version = "v1alpha1",
    kind = "ClusterSPIFFEID",
    plural = "clusterspiffeids",
    singular = "clusterspiffeid",
    shortname = "csid",
    category = "signet",
    status = "ClusterSPIFFEIDStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "Gives the pods it selects a SPIFFE ID rendered from templates.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Pods",
        type_ = "integer",
        json_path = ".status.stats.podsSelected"
    ),
    printcolumn(
        name = "Entries",
        type_ = "integer",
        json_path = ".status.stats.entriesToSet"
    ),
    printcolumn(
        name = "Failures",
        type_ = "integer",
        json_path = ".status.stats.podEntryRenderFailures"
    ),
    printcolumn(
        name = "Template",
        type_ = "string",
        json_path = ".spec.spiffeIDTemplate",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSPIFFEIDSpec {
    /// Template of the SPIFFE ID, e.g.
    /// `spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}`.
    #[serde(rename = "spiffeIDTemplate")]
    #[schemars(length(min = 10, max = 4096))]
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('spiffe://')").message("must start with spiffe://"))]
    pub spiffe_id_template: String,

    /// Pods to select; all pods when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,

    /// Namespaces to select; all namespaces when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Extra selector templates (`type:value`), added to the pod-UID selector of each entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 3, max = 1024)))]
    #[x_kube(validation = kube::core::Rule::new("self.all(t, t.contains(':'))").message("every selector template must have the form type:value"))]
    pub workload_selector_templates: Vec<String>,

    /// DNS SAN templates; the first rendered name is also the certificate's CN.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 1024)))]
    pub dns_name_templates: Vec<String>,

    /// Adds the DNS names of the Services whose endpoints include the pod
    /// (`<svc>.<ns>.svc.<cluster domain>`, `<svc>.<ns>.svc`, `<svc>.<ns>`, `<svc>`), after the
    /// names of dnsNameTemplates.
    #[serde(
        rename = "autoPopulateDNSNames",
        default,
        skip_serializing_if = "is_false"
    )]
    pub auto_populate_dns_names: bool,

    /// X509-SVID lifetime (Go duration); the server default when absent or 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = kube::core::Rule::new(TTL_RULE).message(TTL_MESSAGE))]
    pub ttl: Option<String>,

    /// JWT-SVID lifetime (Go duration); the server default when absent or 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = kube::core::Rule::new(TTL_RULE).message(TTL_MESSAGE))]
    pub jwt_ttl: Option<String>,

    /// Foreign trust domains whose bundles the workloads receive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 255)))]
    #[x_kube(validation = kube::core::Rule::new(TRUST_DOMAIN_LIST_RULE).message(TRUST_DOMAIN_MESSAGE))]
    pub federates_with: Vec<String>,

    /// The workloads may use the admin API.
    #[serde(default, skip_serializing_if = "is_false")]
    pub admin: bool,

    /// The workloads may mint SVIDs for others.
    #[serde(default, skip_serializing_if = "is_false")]
    pub downstream: bool,

    /// Hint passed to workloads holding several identities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub hint: Option<String>,

    /// Applies only to pods no other (non-fallback) ClusterSPIFFEID gives an identity.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fallback: bool,

    /// Only the controller configured with this class reconciles the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub class_name: Option<String>,
}

pub(crate) fn is_false(value: &bool) -> bool {
    !*value
}

/// What the controller observed for a ClusterSPIFFEID.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSPIFFEIDStatus {
    /// The generation these figures are for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: True when every selected pod got its entry; reasons `Reconciled`,
    /// `InvalidTemplate`, `InvalidSelector`, `RenderFailures`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Counters.
    #[serde(default)]
    pub stats: ClusterSPIFFEIDStats,
}

/// Counters, named as in spire-controller-manager.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSPIFFEIDStats {
    /// Namespaces the namespace selector matched.
    #[serde(default)]
    pub namespaces_selected: i64,
    /// Selected namespaces skipped because they are ignored.
    #[serde(default)]
    pub namespaces_ignored: i64,
    /// Pods selected.
    #[serde(default)]
    pub pods_selected: i64,
    /// Selected pods whose templates failed to render.
    #[serde(default)]
    pub pod_entry_render_failures: i64,
    /// Entries identical to one of an older resource.
    #[serde(default)]
    pub entries_masked: i64,
    /// Entries this resource provides.
    #[serde(default)]
    pub entries_to_set: i64,
    /// Entries that could not be set.
    #[serde(default)]
    pub entry_failures: i64,
}
