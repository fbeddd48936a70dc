//! The evaluator: one decision, and every policy that contributed to it.

use serde::Serialize;

use super::{
    Action, DefaultPolicy, Enforcement, HttpRequest, Operation, Policy, PolicyRef, Request, Rule,
    Source, TrustContext,
};

/// Why the decision is what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reason<'a> {
    /// An enforced DENY policy matched (the first one, in policy order).
    DeniedByPolicy { policy: &'a PolicyRef, rule: usize },
    /// An enforced ALLOW policy matched.
    AllowedByPolicy { policy: &'a PolicyRef, rule: usize },
    /// ALLOW policies target the workload and none matched.
    NoAllowPolicyMatched,
    /// No enforced ALLOW policy targets the workload: the default policy decided.
    Default { policy: DefaultPolicy },
}

impl std::fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DeniedByPolicy { policy, rule } => {
                write!(f, "denied by policy {policy} (rule {rule})")
            }
            Self::AllowedByPolicy { policy, rule } => {
                write!(f, "allowed by policy {policy} (rule {rule})")
            }
            Self::NoAllowPolicyMatched => {
                f.write_str("ALLOW policies target the workload and none matched")
            }
            Self::Default { policy } => write!(f, "default policy {}", policy.as_str()),
        }
    }
}

/// What one policy said about the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// A rule matched (its index).
    Matched {
        rule: usize,
    },
    NotMatched,
}

/// One policy's part in a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Contribution<'a> {
    pub policy: &'a PolicyRef,
    pub action: Action,
    pub enforcement: Enforcement,
    pub outcome: Outcome,
}

/// The decision with its explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision<'a> {
    pub allowed: bool,
    pub reason: Reason<'a>,
    /// What the decision would be if DryRun policies were enforced (reported when it differs).
    pub dry_run_allowed: bool,
    /// Every policy targeting the workload, in evaluation order.
    pub contributions: Vec<Contribution<'a>>,
}

/// Decides `request` against the policies that target the workload.
pub fn evaluate<'a>(
    policies: &[&'a Policy],
    default: DefaultPolicy,
    trust: &TrustContext,
    request: &Request<'_>,
) -> Decision<'a> {
    let contributions: Vec<Contribution<'a>> = policies
        .iter()
        .map(|policy| Contribution {
            policy: &policy.id,
            action: policy.action,
            enforcement: policy.enforcement,
            outcome: match first_matching_rule(policy, trust, request) {
                Some(rule) => Outcome::Matched { rule },
                None => Outcome::NotMatched,
            },
        })
        .collect();
    let (allowed, reason) = decide(&contributions, false, default, trust, request);
    let (dry_run_allowed, _) = decide(&contributions, true, default, trust, request);
    Decision {
        allowed,
        reason,
        dry_run_allowed,
        contributions,
    }
}

fn decide<'a>(
    contributions: &[Contribution<'a>],
    include_dry_run: bool,
    default: DefaultPolicy,
    trust: &TrustContext,
    request: &Request<'_>,
) -> (bool, Reason<'a>) {
    let counted = |c: &&Contribution| include_dry_run || c.enforcement == Enforcement::Enforce;
    let matched = |c: &Contribution| match c.outcome {
        Outcome::Matched { rule } => Some(rule),
        Outcome::NotMatched => None,
    };
    if let Some((c, rule)) = contributions
        .iter()
        .filter(counted)
        .filter(|c| c.action == Action::Deny)
        .find_map(|c| matched(c).map(|rule| (c, rule)))
    {
        return (
            false,
            Reason::DeniedByPolicy {
                policy: c.policy,
                rule,
            },
        );
    }
    let mut allows = contributions
        .iter()
        .filter(counted)
        .filter(|c| c.action == Action::Allow)
        .peekable();
    if allows.peek().is_some() {
        return match allows.find_map(|c| matched(c).map(|rule| (c, rule))) {
            Some((c, rule)) => (
                true,
                Reason::AllowedByPolicy {
                    policy: c.policy,
                    rule,
                },
            ),
            None => (false, Reason::NoAllowPolicyMatched),
        };
    }
    let allowed = match default {
        DefaultPolicy::Deny => false,
        DefaultPolicy::AllowAuthenticated => request.peer.is_some(),
        DefaultPolicy::AllowTrustDomain => request
            .peer
            .is_some_and(|peer| trust.trusts(peer.trust_domain_name())),
    };
    (allowed, Reason::Default { policy: default })
}

fn first_matching_rule(
    policy: &Policy,
    trust: &TrustContext,
    request: &Request<'_>,
) -> Option<usize> {
    // A DENY is never skipped for lack of attributes: an HTTP condition on a TCP request, or a
    // negative identity condition (`notSpiffeIDs`) for a peer without an SVID, counts as met.
    // For ALLOW and AUDIT such a condition is not met.
    let fail_closed = policy.action == Action::Deny;
    policy
        .rules
        .iter()
        .position(|rule| rule_matches(rule, trust, request, fail_closed))
}

fn rule_matches(
    rule: &Rule,
    trust: &TrustContext,
    request: &Request<'_>,
    fail_closed: bool,
) -> bool {
    let from = rule.from.is_empty()
        || rule
            .from
            .iter()
            .any(|s| source_matches(s, trust, request, fail_closed));
    let to = rule.to.is_empty()
        || rule
            .to
            .iter()
            .any(|op| operation_matches(op, request, fail_closed));
    from && to
}

fn source_matches(
    source: &Source,
    trust: &TrustContext,
    request: &Request<'_>,
    fail_closed: bool,
) -> bool {
    if source.is_unconstrained() {
        return true;
    }
    let Some(peer) = request.peer else {
        // No identity: positive identity conditions cannot hold; negative ones only count
        // (as met) for a DENY.
        let positive = !source.spiffe_ids.is_empty()
            || !source.trust_domains.is_empty()
            || !source.namespaces.is_empty();
        return !positive && fail_closed;
    };
    (source.spiffe_ids.is_empty() || source.spiffe_ids.iter().any(|p| p.matches(peer)))
        && !source.not_spiffe_ids.iter().any(|p| p.matches(peer))
        && (source.trust_domains.is_empty()
            || source
                .trust_domains
                .iter()
                .any(|td| td.as_str() == peer.trust_domain_name()))
        && (source.namespaces.is_empty()
            || (peer.trust_domain_name() == trust.local.as_str()
                && kubernetes_namespace(peer.path())
                    .is_some_and(|ns| source.namespaces.iter().any(|n| n == ns))))
}

/// The namespace of an ID shaped `/ns/<namespace>/…` (the convention of the default identity).
/// Only IDs of the local trust domain are read this way: a federated domain's `/ns/…` says
/// nothing about this cluster's namespaces.
fn kubernetes_namespace(path: &str) -> Option<&str> {
    let mut segments = path.trim_start_matches('/').split('/');
    match (segments.next(), segments.next()) {
        (Some("ns"), Some(namespace)) if !namespace.is_empty() => Some(namespace),
        _ => None,
    }
}

fn operation_matches(op: &Operation, request: &Request<'_>, fail_closed: bool) -> bool {
    if !op.ports.is_empty() && !op.ports.contains(&request.port) {
        return false;
    }
    if !op.uses_http() {
        return true;
    }
    let Some(HttpRequest { method, path }) = request.http else {
        return fail_closed;
    };
    (op.methods.is_empty() || op.methods.iter().any(|m| m == method))
        && (op.paths.is_empty() || op.paths.iter().any(|p| p.matches(path)))
        && !op.not_paths.iter().any(|p| p.matches(path))
}
