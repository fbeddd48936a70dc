//! `AuthorizationPolicy` (namespaced): who may call the workloads it targets, by SPIFFE ID,
//! trust domain or namespace, on which ports, methods and paths (DESIGN §10). Compiled by the
//! controller with the entries and enforced in the workload (signet-tls, `signet proxy`).

#![expect(
    clippy::duplicated_attributes,
    reason = "each kube printcolumn(...) repeats keys such as type_, which clippy reads as duplicates"
)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// The lists of a policy nest (rules × from/to × values), and the API server multiplies the cost of
// a CEL rule by the worst-case size of every list around it: value syntax is checked with
// `items.pattern` (an OpenAPI regex, which has no CEL cost). The controller re-checks every value
// with the real parsers and reports what it refuses in status.

/// A SPIFFE ID pattern: a trust domain, then segments that are names (never `.` or `..`), `*`
/// (exactly one segment), or a final `**` (one or more segments).
pub const ID_PATTERN: &str = "^spiffe://[a-z0-9._-]+(/([A-Za-z0-9_-][A-Za-z0-9._-]*|[.][A-Za-z0-9_-][A-Za-z0-9._-]*|[.][.][A-Za-z0-9._-]+|[*]))*(/[*][*])?$";
/// A trust domain name.
pub const TRUST_DOMAIN_PATTERN: &str = "^[a-z0-9._-]+$";
/// A namespace: a DNS label.
pub const NAMESPACE_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// An HTTP method: an upper-case token.
pub const METHOD_PATTERN: &str = "^[A-Z]+$";
/// An HTTP path pattern: `*` (any), `*suffix`, exact `/a/b`, or prefix `/a/*`.
pub const PATH_PATTERN: &str = "^([*]|[*][^*]+|/[^*]*[*]?)$";

/// Who may call the targeted workloads, and how.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "signet.dev",
    version = "v1alpha1",
    kind = "AuthorizationPolicy",
    plural = "authorizationpolicies",
    singular = "authorizationpolicy",
    shortname = "authz",
    category = "signet",
    namespaced,
    status = "AuthorizationPolicyStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "Identity-based authorization for the workloads it targets.",
    printcolumn(name = "Action", type_ = "string", json_path = ".spec.action"),
    printcolumn(
        name = "Enforcement",
        type_ = "string",
        json_path = ".spec.enforcement"
    ),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(name = "Pods", type_ = "integer", json_path = ".status.targets.pods"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = kube::core::Rule::new("!(has(self.selector) && has(self.targetSPIFFEIDs))").message("set selector or targetSPIFFEIDs, not both"))]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// Pods of this namespace the policy applies to (`{}` or absent with no targetSPIFFEIDs:
    /// every pod of the namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,

    /// Or: the workloads with these SPIFFE IDs, wherever they run. Patterns: a segment `*`
    /// matches exactly one segment, a final `**` one or more; no partial wildcards.
    #[serde(
        rename = "targetSPIFFEIDs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(
        length(max = 64),
        inner(length(min = 10, max = 2048), pattern(ID_PATTERN))
    )]
    pub target_spiffe_ids: Vec<String>,

    /// ALLOW (default), DENY, or AUDIT (report matches only).
    #[serde(default)]
    pub action: PolicyAction,

    /// Enforce (default) or DryRun (evaluated, logged and counted; never changes a decision).
    #[serde(default)]
    pub enforcement: PolicyEnforcement,

    /// OR of rules. No rules match nothing (an ALLOW policy without rules denies every call);
    /// one empty rule `{}` matches every call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub rules: Vec<PolicyRule>,
}

/// What a matching policy does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum PolicyAction {
    #[default]
    Allow,
    Deny,
    Audit,
}

/// Whether the policy decides or only reports.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PolicyEnforcement {
    #[default]
    Enforce,
    DryRun,
}

/// One rule: one `from` and one `to` must match; an absent list matches anything.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
pub struct PolicyRule {
    /// OR of sources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub from: Vec<PolicySource>,
    /// OR of operations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub to: Vec<PolicyOperation>,
}

/// A caller. Fields are AND-ed, values within a field OR-ed; absent fields match anything. A
/// caller without an SVID (PERMISSIVE mode) matches a source with no field set, and — in a DENY
/// policy only — a source whose only condition is `notSpiffeIDs` (it is not any of them).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicySource {
    /// The caller's SPIFFE ID matches one of these patterns (`*`: one segment, final `**`: the
    /// rest).
    #[serde(rename = "spiffeIDs", default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(min = 10, max = 2048), pattern(ID_PATTERN))
    )]
    pub spiffe_ids: Vec<String>,
    /// The caller's SPIFFE ID matches none of these patterns.
    #[serde(
        rename = "notSpiffeIDs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(
        length(max = 64),
        inner(length(min = 10, max = 2048), pattern(ID_PATTERN))
    )]
    pub not_spiffe_ids: Vec<String>,
    /// The caller's trust domain is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(min = 1, max = 255), pattern(TRUST_DOMAIN_PATTERN))
    )]
    pub trust_domains: Vec<String>,
    /// The caller's Kubernetes namespace, read from IDs of the local trust domain shaped
    /// `spiffe://<td>/ns/<namespace>/…` (IDs of other trust domains never match).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 63), pattern(NAMESPACE_PATTERN))
    )]
    pub namespaces: Vec<String>,
}

/// What is called. Fields are AND-ed, values within a field OR-ed; absent fields match anything.
/// Methods and paths need HTTP: on a TCP connection an ALLOW rule using them never matches and
/// a DENY rule using them always does.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyOperation {
    /// Destination ports of the target workload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(range(min = 1, max = 65535)))]
    pub ports: Vec<i32>,
    /// HTTP methods (upper case).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(length(min = 1, max = 16), pattern(METHOD_PATTERN))
    )]
    pub methods: Vec<String>,
    /// Request paths (normalized before matching): exact, `/prefix/*`, `*suffix`, `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 1024), pattern(PATH_PATTERN))
    )]
    pub paths: Vec<String>,
    /// Request paths that never match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 1024), pattern(PATH_PATTERN))
    )]
    pub not_paths: Vec<String>,
}

/// What the controller observed for an AuthorizationPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicyStatus {
    /// The generation these conditions are for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted` (the policy compiled and is delivered; reasons `Accepted`, `Invalid`,
    /// `UnsupportedFieldForTCP`) and `ResolvedRefs` (every trust domain it names is known;
    /// reason `UnknownTrustDomain`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// What the policy currently targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<PolicyTargets>,
}

/// Target counts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargets {
    /// Pods targeted.
    pub pods: i32,
    /// Distinct SPIFFE IDs of the targeted workloads.
    #[serde(rename = "spiffeIDs")]
    pub spiffe_ids: i32,
}
