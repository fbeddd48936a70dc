//! `ClusterFederatedTrustDomain`: a foreign trust domain and where its bundle is published.
//! Fetching the bundle is the federation work of a later issue; the type, its validation and its
//! status are defined now so manifests can be written against them.

#![expect(
    clippy::duplicated_attributes,
    reason = "each kube printcolumn(...) repeats keys such as type_, which clippy reads as duplicates"
)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cel::{SPIFFE_ID_MESSAGE, SPIFFE_ID_RULE, TRUST_DOMAIN_MESSAGE, TRUST_DOMAIN_RULE};

/// A federated trust domain.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "signet.dev",
    version = "v1alpha1",
    kind = "ClusterFederatedTrustDomain",
    plural = "clusterfederatedtrustdomains",
    singular = "clusterfederatedtrustdomain",
    shortname = "cftd",
    category = "signet",
    status = "ClusterFederatedTrustDomainStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A foreign trust domain whose bundle Signet fetches and serves to federating workloads.",
    printcolumn(
        name = "Trust Domain",
        type_ = "string",
        json_path = ".spec.trustDomain"
    ),
    printcolumn(
        name = "Endpoint URL",
        type_ = "string",
        json_path = ".spec.bundleEndpointURL"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterFederatedTrustDomainSpec {
    /// The foreign trust domain's name.
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = kube::core::Rule::new(TRUST_DOMAIN_RULE).message(TRUST_DOMAIN_MESSAGE))]
    pub trust_domain: String,

    /// Where the foreign bundle is published (HTTPS, no user info).
    #[serde(rename = "bundleEndpointURL")]
    #[schemars(length(min = 9, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^https://[^/@?#]+(/[^@]*)?$')").message("must be an https:// URL without user info"))]
    pub bundle_endpoint_url: String,

    /// How the endpoint is authenticated.
    pub bundle_endpoint_profile: BundleEndpointProfile,

    /// The foreign bundle to start from (SPIFFE bundle JSON), needed for `https_spiffe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1_048_576))]
    pub trust_domain_bundle: Option<String>,

    /// Only the controller configured with this class reconciles the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub class_name: Option<String>,
}

/// The bundle endpoint profile of the SPIFFE Federation spec.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.type == 'https_spiffe' ? has(self.endpointSPIFFEID) : !has(self.endpointSPIFFEID)").message("endpointSPIFFEID is required for https_spiffe and not allowed for https_web"))]
pub struct BundleEndpointProfile {
    /// `https_web` (Web PKI) or `https_spiffe` (the peer's own bundle).
    #[serde(rename = "type")]
    pub type_: BundleEndpointProfileType,
    /// The SPIFFE ID of the bundle endpoint server (`https_spiffe` only).
    #[serde(
        rename = "endpointSPIFFEID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(min = 10, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new(SPIFFE_ID_RULE).message(SPIFFE_ID_MESSAGE))]
    pub endpoint_spiffe_id: Option<String>,
}

/// Bundle endpoint profiles.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BundleEndpointProfileType {
    /// Authenticated with Web PKI.
    #[default]
    #[serde(rename = "https_web")]
    HttpsWeb,
    /// Authenticated with the peer trust domain's SPIFFE bundle.
    #[serde(rename = "https_spiffe")]
    HttpsSpiffe,
}

/// What the controller observed for a federated trust domain.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterFederatedTrustDomainStatus {
    /// The generation these conditions are for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the foreign bundle is known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When the bundle was last fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh: Option<Time>,
    /// `spiffe_sequence` of the bundle held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<i64>,
}
