//! The authorizer every enforcement point shares: the workload's effective AuthorizationPolicy,
//! one decision per connection (TCP) or request (HTTP), a counter and an audit line for every
//! denial. Decisions come from `signet_core::policy::evaluate`, so they match what the agent's
//! `Check` and `signet authz check` say.

use std::sync::Arc;

use parking_lot::RwLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use signet_core::policy::{
    self, Action, DefaultPolicy, HttpRequest, Outcome, Policy, PolicySet, Reason, Request,
    TrustContext, normalize_path,
};
use signet_spiffe::SpiffeId;
use tracing::{info, warn};

/// Denial lines per second (per process); every denial is still counted.
static DENIAL_LINES: crate::log_budget::LogBudget = crate::log_budget::LogBudget::new(50);

/// The policy of one workload: its identities, the policies targeting them, the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectivePolicy {
    pub spiffe_ids: Vec<SpiffeId>,
    pub policies: Vec<Policy>,
    pub default_policy: DefaultPolicy,
    pub trust: TrustContext,
}

impl EffectivePolicy {
    /// The part of `set` that applies to a workload holding `spiffe_ids`.
    pub fn from_set(set: &PolicySet, spiffe_ids: Vec<SpiffeId>, trust: TrustContext) -> Self {
        let policies = set.effective(&spiffe_ids).into_iter().cloned().collect();
        Self {
            spiffe_ids,
            policies,
            default_policy: set.default_policy,
            trust,
        }
    }

    /// Nothing is allowed: the state before the first policy arrives.
    pub fn deny_all(trust: TrustContext) -> Self {
        Self {
            spiffe_ids: Vec::new(),
            policies: Vec::new(),
            default_policy: DefaultPolicy::Deny,
            trust,
        }
    }
}

/// Labels of `signet_authz_denied_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DeniedLabels {
    /// `namespace/name` of the deciding DENY policy, or empty when no policy decided.
    pub policy: String,
    /// What denied: `DENY` (a DENY policy matched), `ALLOW` (ALLOW policies target the workload
    /// and none matched) or `DEFAULT` (the default policy).
    pub action: String,
    /// `Enforce` for real denials, `DryRun` for requests a DryRun policy would have denied.
    pub enforcement: String,
}

/// Authorization counters.
#[derive(Debug, Clone, Default)]
pub struct AuthzMetrics {
    pub denied: Family<DeniedLabels, Counter>,
    pub allowed: Counter,
}

impl AuthzMetrics {
    /// Adds the counters to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "signet_authz_denied",
            "Requests and connections denied by AuthorizationPolicy (DryRun: would have been)",
            self.denied.clone(),
        );
        registry.register(
            "signet_authz_allowed",
            "Requests and connections allowed by AuthorizationPolicy",
            self.allowed.clone(),
        );
    }
}

/// What one request asks for.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    /// The verified peer; `None` for a plaintext peer.
    pub peer: Option<&'a SpiffeId>,
    /// The destination port the policies see.
    pub port: u16,
    /// HTTP method and raw (not yet normalized) path, without the query.
    pub http: Option<(&'a str, &'a str)>,
}

/// What decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedBy {
    /// An enforced policy matched (`deciding_policy` names it).
    Policy,
    /// ALLOW policies target the workload and none matched.
    NoAllowMatched,
    /// The default policy.
    Default,
    /// The request itself was refused (a path or method that cannot be matched safely).
    Refused,
}

/// One decision, owned (for logs, responses and the agent's `Check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub decided_by: DecidedBy,
    pub reason: String,
    /// The decision with DryRun policies enforced (a difference is reported, never applied).
    pub dry_run_allowed: bool,
    /// The enforced policy that decided, if any.
    pub deciding_policy: Option<String>,
    /// Every policy that matched: (`namespace/name`, action, enforcement).
    pub matched: Vec<(String, Action, policy::Enforcement)>,
}

/// Decides requests for one workload and records every denial.
#[derive(Debug)]
pub struct Authorizer {
    policy: RwLock<Arc<EffectivePolicy>>,
    metrics: AuthzMetrics,
    /// Whether a policy was set after the starting one (the starting one is usually deny-all).
    updated: std::sync::atomic::AtomicBool,
}

impl Authorizer {
    /// An authorizer with a starting policy.
    pub fn new(policy: EffectivePolicy, metrics: AuthzMetrics) -> Self {
        Self {
            policy: RwLock::new(Arc::new(policy)),
            metrics,
            updated: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Replaces the policy; the next decision uses it.
    pub fn set_policy(&self, policy: EffectivePolicy) {
        self.updated
            .store(true, std::sync::atomic::Ordering::Release);
        *self.policy.write() = Arc::new(policy);
    }

    /// Whether a policy replaced the starting one (readiness of an enforcement point).
    pub fn has_received_policy(&self) -> bool {
        self.updated.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The policy decisions use right now.
    pub fn policy(&self) -> Arc<EffectivePolicy> {
        self.policy.read().clone()
    }

    /// Whether `access` is allowed: the enforcement points' per-request path. The verdict's
    /// explanation (reason, matched policies: several formatted strings) is only built when
    /// something must be counted or logged beyond a plain allow.
    pub fn allows(&self, access: &Access<'_>) -> bool {
        let policy = self.policy();
        if plainly_allowed(&policy, access) {
            self.metrics.allowed.inc();
            return true;
        }
        self.check_with(&policy, access).allowed
    }

    /// Decides `access` for the workload, counting and logging denials.
    pub fn check(&self, access: &Access<'_>) -> Verdict {
        self.check_with(&self.policy(), access)
    }

    /// Decides `access` under `policy` (the agent decides for many workloads with one set of
    /// counters), counting and logging denials.
    pub fn check_with(&self, policy: &EffectivePolicy, access: &Access<'_>) -> Verdict {
        let verdict = decide(policy, access);
        self.record(policy, access, &verdict);
        verdict
    }

    fn record(&self, policy: &EffectivePolicy, access: &Access<'_>, verdict: &Verdict) {
        let target = policy
            .spiffe_ids
            .first()
            .map(signet_spiffe::SpiffeId::as_str)
            .unwrap_or_default();
        let peer = access
            .peer
            .map(signet_spiffe::SpiffeId::as_str)
            .unwrap_or_default();
        let (method, path) = access.http.unwrap_or_default();
        for (name, action, enforcement) in &verdict.matched {
            if *action == Action::Audit || *enforcement == policy::Enforcement::DryRun {
                info!(
                    target: "signet::audit", policy = %name, action = ?action,
                    enforcement = ?enforcement, peer = %peer, target_id = %target,
                    port = access.port, method, path, allowed = verdict.allowed,
                    "authorization policy matched (reported only)"
                );
            }
        }
        if verdict.allowed {
            self.metrics.allowed.inc();
            if !verdict.dry_run_allowed {
                self.metrics
                    .denied
                    .get_or_create(&DeniedLabels {
                        policy: String::new(),
                        action: "DENY".to_owned(),
                        enforcement: "DryRun".to_owned(),
                    })
                    .inc();
                info!(
                    target: "signet::audit", decision = "allow", peer = %peer, target_id = %target,
                    port = access.port, method, path,
                    "a DryRun policy would have denied this request"
                );
            }
            return;
        }
        let (label_policy, label_action) = denial_labels(verdict);
        self.metrics
            .denied
            .get_or_create(&DeniedLabels {
                policy: label_policy,
                action: label_action.to_owned(),
                enforcement: "Enforce".to_owned(),
            })
            .inc();
        if let Some(suppressed) = DENIAL_LINES.take() {
            warn!(
                target: "signet::audit", decision = "deny", peer = %peer, target_id = %target,
                port = access.port, method, path,
                policy = verdict.deciding_policy.as_deref().unwrap_or(""),
                reason = %verdict.reason, suppressed_since_last = suppressed,
                "request denied by authorization policy"
            );
        }
    }

    /// The counters (to register them).
    pub fn metrics(&self) -> &AuthzMetrics {
        &self.metrics
    }
}

fn denial_labels(verdict: &Verdict) -> (String, &'static str) {
    match verdict.decided_by {
        DecidedBy::Policy => (verdict.deciding_policy.clone().unwrap_or_default(), "DENY"),
        DecidedBy::NoAllowMatched => (String::new(), "ALLOW"),
        DecidedBy::Default => (String::new(), "DEFAULT"),
        DecidedBy::Refused => (String::new(), "REFUSED"),
    }
}

/// Evaluates `access` under `policy` and hands the decision to `f`, or why the request was
/// refused before evaluation (a method not in upper case, a path that does not normalize).
fn with_decision<T>(
    policy: &EffectivePolicy,
    access: &Access<'_>,
    f: impl FnOnce(Result<&policy::Decision<'_>, String>) -> T,
) -> T {
    // Policies name methods in upper case; servers that match methods case-insensitively would
    // otherwise run `delete` past a DENY of `DELETE`.
    if let Some((method, _)) = access.http
        && (method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return f(Err(format!(
            "request method {method:?} refused: methods are upper-case letters"
        )));
    }
    let normalized = match access.http {
        Some((_, raw)) => match normalize_path(raw) {
            Ok(path) => Some(path),
            Err(e) => return f(Err(format!("request path refused: {e}"))),
        },
        None => None,
    };
    let policies: Vec<&Policy> = policy.policies.iter().collect();
    let request = Request {
        peer: access.peer,
        port: access.port,
        http: access
            .http
            .zip(normalized.as_deref())
            .map(|((method, _), path)| HttpRequest { method, path }),
    };
    let decision = policy::evaluate(&policies, policy.default_policy, &policy.trust, &request);
    f(Ok(&decision))
}

/// Whether `access` is allowed with nothing to report: no DryRun difference and no Audit or
/// DryRun policy matched (those are logged). `false` means "take the full path", not "denied".
fn plainly_allowed(policy: &EffectivePolicy, access: &Access<'_>) -> bool {
    with_decision(policy, access, |decision| {
        decision.is_ok_and(|decision| {
            decision.allowed
                && decision.dry_run_allowed
                && !decision.contributions.iter().any(|c| {
                    matches!(c.outcome, Outcome::Matched { .. })
                        && (c.action == Action::Audit
                            || c.enforcement == policy::Enforcement::DryRun)
                })
        })
    })
}

/// The decision for `access` under `policy`, without side effects.
pub fn decide(policy: &EffectivePolicy, access: &Access<'_>) -> Verdict {
    with_decision(policy, access, |decision| {
        let decision = match decision {
            Ok(decision) => decision,
            Err(reason) => {
                return Verdict {
                    allowed: false,
                    reason,
                    decided_by: DecidedBy::Refused,
                    dry_run_allowed: false,
                    deciding_policy: None,
                    matched: Vec::new(),
                };
            }
        };
        let (deciding_policy, decided_by) = match &decision.reason {
            Reason::DeniedByPolicy { policy, .. } | Reason::AllowedByPolicy { policy, .. } => {
                (Some(policy.to_string()), DecidedBy::Policy)
            }
            Reason::NoAllowPolicyMatched => (None, DecidedBy::NoAllowMatched),
            Reason::Default { .. } => (None, DecidedBy::Default),
        };
        Verdict {
            allowed: decision.allowed,
            decided_by,
            reason: decision.reason.to_string(),
            dry_run_allowed: decision.dry_run_allowed,
            deciding_policy,
            matched: decision
                .contributions
                .iter()
                .filter(|c| matches!(c.outcome, Outcome::Matched { .. }))
                .map(|c| (c.policy.to_string(), c.action, c.enforcement))
                .collect(),
        }
    })
}
