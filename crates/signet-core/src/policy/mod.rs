//! AuthorizationPolicy, compiled (DESIGN §10): the model the controller and the admin API
//! produce, and the evaluator every enforcement point (signet-tls, `signet proxy`, the agent's
//! `Check`, `signet authz check`) uses, so a decision is the same wherever it is made.
//!
//! Order for a request to workload W: a matching enforced DENY denies; otherwise, if any enforced
//! ALLOW targets W, one must match; otherwise the default policy decides. AUDIT policies and
//! DryRun policies are evaluated and reported but never change the decision.

mod compile;
mod evaluate;
mod pattern;

pub use compile::{
    CompiledPolicy, OperationSpec, PolicyError, PolicySpec, PolicyTarget, RuleSpec, SourceSpec,
    Workload, compile, fail_closed, policies_for, unknown_trust_domains,
};
pub use evaluate::{Contribution, Decision, Outcome, Reason, evaluate};
pub use pattern::{IdPattern, PathError, PathPattern, PatternError, normalize_path};

use std::fmt;

use serde::{Deserialize, Serialize};
use signet_spiffe::TrustDomain;

/// What a matching policy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    Allow,
    Deny,
    /// Records matches; never changes a decision.
    Audit,
}

/// Whether a policy decides or only reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Enforcement {
    #[default]
    Enforce,
    /// Evaluated, logged and counted; the decision ignores it.
    DryRun,
}

/// What happens to a request no enforced ALLOW policy targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DefaultPolicy {
    /// Any peer with an SVID of the local trust domain or a federated one.
    #[default]
    AllowTrustDomain,
    /// Any peer with a verified SVID (the verifier already required a trusted bundle).
    AllowAuthenticated,
    /// Nothing: every workload needs an ALLOW policy.
    Deny,
}

impl DefaultPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllowTrustDomain => "allow-trust-domain",
            Self::AllowAuthenticated => "allow-authenticated",
            Self::Deny => "deny",
        }
    }
}

impl std::str::FromStr for DefaultPolicy {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        [Self::AllowTrustDomain, Self::AllowAuthenticated, Self::Deny]
            .into_iter()
            .find(|policy| policy.as_str() == value)
            .ok_or_else(|| {
                format!(
                    "unknown default policy {value:?}: use allow-trust-domain, allow-authenticated or deny"
                )
            })
    }
}

/// `namespace/name` of the AuthorizationPolicy (standalone policies use namespace `default`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A compiled policy: patterns parsed, values checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub id: PolicyRef,
    pub action: Action,
    pub enforcement: Enforcement,
    /// OR of rules. No rules matches nothing; one empty rule matches everything.
    pub rules: Vec<Rule>,
}

/// One rule: one of `from` and one of `to` must match; an empty list matches anything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    pub from: Vec<Source>,
    pub to: Vec<Operation>,
}

/// A source; its non-empty fields are AND-ed, the values inside one field OR-ed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Source {
    pub spiffe_ids: Vec<IdPattern>,
    pub not_spiffe_ids: Vec<IdPattern>,
    pub trust_domains: Vec<TrustDomain>,
    /// Kubernetes namespaces, read from IDs shaped `…/ns/<namespace>/…`.
    pub namespaces: Vec<String>,
}

impl Source {
    /// Whether the source constrains the peer at all (an unconstrained source also admits a
    /// peer without an SVID).
    fn is_unconstrained(&self) -> bool {
        self.spiffe_ids.is_empty()
            && self.not_spiffe_ids.is_empty()
            && self.trust_domains.is_empty()
            && self.namespaces.is_empty()
    }
}

/// An operation; non-empty fields AND-ed, values OR-ed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Operation {
    pub ports: Vec<u16>,
    pub methods: Vec<String>,
    pub paths: Vec<PathPattern>,
    pub not_paths: Vec<PathPattern>,
}

impl Operation {
    /// Whether the operation needs HTTP attributes (meaningless for a TCP-only target).
    pub fn uses_http(&self) -> bool {
        !self.methods.is_empty() || !self.paths.is_empty() || !self.not_paths.is_empty()
    }
}

impl Policy {
    /// Whether any rule needs HTTP attributes.
    pub fn uses_http(&self) -> bool {
        self.rules
            .iter()
            .any(|rule| rule.to.iter().any(Operation::uses_http))
    }
}

/// What is known about a request when it is authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The peer's verified SPIFFE ID; `None` for a plaintext peer (PERMISSIVE mode only).
    pub peer: Option<&'a signet_spiffe::SpiffeId>,
    /// The destination port of the target workload.
    pub port: u16,
    /// HTTP attributes; `None` for a TCP connection (decided before any byte is read).
    pub http: Option<HttpRequest<'a>>,
}

/// The HTTP part of a request; `path` must come from [`normalize_path`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
}

/// The trust domains the workload's agent trusts (its own, then federated ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustContext {
    pub local: TrustDomain,
    pub federated: Vec<TrustDomain>,
}

impl TrustContext {
    pub fn trusts(&self, trust_domain: &str) -> bool {
        self.local.as_str() == trust_domain
            || self.federated.iter().any(|td| td.as_str() == trust_domain)
    }
}

/// A policy and the workload identities it applies to. Pod selectors are resolved to the IDs of
/// the selected pods before a binding leaves the controller, so every enforcement point decides
/// by identity alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyBinding {
    pub policy: Policy,
    pub targets: Vec<IdPattern>,
}

impl PolicyBinding {
    /// Whether the policy applies to a workload holding `id`.
    pub fn targets(&self, id: &signet_spiffe::SpiffeId) -> bool {
        self.targets.iter().any(|pattern| pattern.matches(id))
    }
}

/// Every policy of a trust domain with the default for workloads no ALLOW targets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicySet {
    pub default_policy: DefaultPolicy,
    /// Ordered by policy namespace/name, one binding per policy.
    pub bindings: Vec<PolicyBinding>,
}

impl PolicySet {
    /// The policies that apply to a workload holding any of `ids`, in evaluation order.
    pub fn effective<'a>(&'a self, ids: &[signet_spiffe::SpiffeId]) -> Vec<&'a Policy> {
        self.bindings
            .iter()
            .filter(|binding| ids.iter().any(|id| binding.targets(id)))
            .map(|binding| &binding.policy)
            .collect()
    }

    /// Sorts the bindings into evaluation order (namespace/name) and drops duplicates of a
    /// name, keeping the last one given.
    pub fn normalize(&mut self) {
        let mut by_ref = std::collections::BTreeMap::new();
        for binding in self.bindings.drain(..) {
            by_ref.insert(binding.policy.id.clone(), binding);
        }
        self.bindings = by_ref.into_values().collect();
    }
}
