//! `ClusterStaticEntry`: one registration entry written out in full, for workloads the pod
//! templates cannot describe (nodes, VMs, downstream servers).

#![expect(
    clippy::duplicated_attributes,
    reason = "each kube printcolumn(...) repeats keys such as type_, which clippy reads as duplicates"
)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cel::{
    SELECTORS_MESSAGE, SELECTORS_RULE, SPIFFE_ID_MESSAGE, SPIFFE_ID_RULE, TRUST_DOMAIN_LIST_RULE,
    TRUST_DOMAIN_MESSAGE, TTL_MESSAGE, TTL_RULE,
};
use crate::cluster_spiffe_id::is_false;

/// One registration entry.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "signet.dev",
    version = "v1alpha1",
    kind = "ClusterStaticEntry",
    plural = "clusterstaticentries",
    singular = "clusterstaticentry",
    shortname = "cse",
    category = "signet",
    status = "ClusterStaticEntryStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A registration entry written out in full.",
    printcolumn(name = "SPIFFE ID", type_ = "string", json_path = ".spec.spiffeID"),
    printcolumn(
        name = "Parent",
        type_ = "string",
        json_path = ".spec.parentID",
        priority = "1"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Masked",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Masked\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStaticEntrySpec {
    /// The identity granted.
    #[serde(rename = "spiffeID")]
    #[schemars(length(min = 10, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new(SPIFFE_ID_RULE).message(SPIFFE_ID_MESSAGE))]
    pub spiffe_id: String,

    /// The agent (or downstream workload) that may serve it.
    #[serde(rename = "parentID")]
    #[schemars(length(min = 10, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new(SPIFFE_ID_RULE).message(SPIFFE_ID_MESSAGE))]
    pub parent_id: String,

    /// Selectors the workload must all have (`type:value`).
    #[schemars(length(min = 1, max = 64), inner(length(min = 3, max = 1024)))]
    #[x_kube(validation = kube::core::Rule::new(SELECTORS_RULE).message(SELECTORS_MESSAGE))]
    pub selectors: Vec<String>,

    /// Foreign trust domains whose bundles the workload receives.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 255)))]
    #[x_kube(validation = kube::core::Rule::new(TRUST_DOMAIN_LIST_RULE).message(TRUST_DOMAIN_MESSAGE))]
    pub federates_with: Vec<String>,

    /// X509-SVID lifetime (Go duration); the server default when absent or 0.
    #[serde(
        rename = "x509SVIDTTL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(max = 32))]
    #[x_kube(validation = kube::core::Rule::new(TTL_RULE).message(TTL_MESSAGE))]
    pub x509_svid_ttl: Option<String>,

    /// JWT-SVID lifetime (Go duration); the server default when absent or 0.
    #[serde(
        rename = "jwtSVIDTTL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(max = 32))]
    #[x_kube(validation = kube::core::Rule::new(TTL_RULE).message(TTL_MESSAGE))]
    pub jwt_svid_ttl: Option<String>,

    /// DNS SANs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 253)))]
    pub dns_names: Vec<String>,

    /// Hint passed to workloads holding several identities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub hint: Option<String>,

    /// The workload may use the admin API.
    #[serde(default, skip_serializing_if = "is_false")]
    pub admin: bool,

    /// The workload may mint SVIDs for others.
    #[serde(default, skip_serializing_if = "is_false")]
    pub downstream: bool,

    /// Only the controller configured with this class reconciles the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub class_name: Option<String>,
}

/// What the controller observed for a ClusterStaticEntry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStaticEntryStatus {
    /// The generation these conditions are for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (the entry is served; reasons `Reconciled`, `Invalid`, `Masked`) and `Masked` (an
    /// older resource declares the same entry).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
