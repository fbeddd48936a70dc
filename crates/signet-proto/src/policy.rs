//! Conversions between `signet.authz.v1` messages and the policy model of `signet-core`. A
//! received policy is parsed again in full: a pattern that does not parse rejects the message.

use signet_core::policy::{
    Action, DefaultPolicy, Enforcement, IdPattern, Operation, PathPattern, Policy, PolicyBinding,
    PolicyRef, PolicySet, Rule, Source,
};
use signet_spiffe::TrustDomain;

use crate::authz as pb;
use crate::convert::InvalidMessage;

fn invalid(field: &'static str, reason: impl ToString) -> InvalidMessage {
    InvalidMessage {
        field,
        reason: reason.to_string(),
    }
}

impl From<DefaultPolicy> for pb::DefaultPolicy {
    fn from(policy: DefaultPolicy) -> Self {
        match policy {
            DefaultPolicy::AllowTrustDomain => Self::AllowTrustDomain,
            DefaultPolicy::AllowAuthenticated => Self::AllowAuthenticated,
            DefaultPolicy::Deny => Self::Deny,
        }
    }
}

/// The default policy a message names; unspecified or unknown values mean `deny`, the choice
/// that cannot admit anyone by mistake.
pub fn default_policy_from(value: i32) -> DefaultPolicy {
    match pb::DefaultPolicy::try_from(value) {
        Ok(pb::DefaultPolicy::AllowTrustDomain) => DefaultPolicy::AllowTrustDomain,
        Ok(pb::DefaultPolicy::AllowAuthenticated) => DefaultPolicy::AllowAuthenticated,
        _ => DefaultPolicy::Deny,
    }
}

impl From<Action> for pb::Action {
    fn from(action: Action) -> Self {
        match action {
            Action::Allow => Self::Allow,
            Action::Deny => Self::Deny,
            Action::Audit => Self::Audit,
        }
    }
}

impl From<Enforcement> for pb::Enforcement {
    fn from(enforcement: Enforcement) -> Self {
        match enforcement {
            Enforcement::Enforce => Self::Enforce,
            Enforcement::DryRun => Self::DryRun,
        }
    }
}

fn strings<T: ToString>(values: &[T]) -> Vec<String> {
    values.iter().map(ToString::to_string).collect()
}

impl From<&Policy> for pb::Policy {
    fn from(policy: &Policy) -> Self {
        Self {
            namespace: policy.id.namespace.clone(),
            name: policy.id.name.clone(),
            action: pb::Action::from(policy.action).into(),
            enforcement: pb::Enforcement::from(policy.enforcement).into(),
            rules: policy
                .rules
                .iter()
                .map(|rule| pb::Rule {
                    from: rule
                        .from
                        .iter()
                        .map(|source| pb::Source {
                            spiffe_ids: strings(&source.spiffe_ids),
                            not_spiffe_ids: strings(&source.not_spiffe_ids),
                            trust_domains: strings(&source.trust_domains),
                            namespaces: source.namespaces.clone(),
                        })
                        .collect(),
                    to: rule
                        .to
                        .iter()
                        .map(|op| pb::Operation {
                            ports: op.ports.iter().map(|&p| u32::from(p)).collect(),
                            methods: op.methods.clone(),
                            paths: strings(&op.paths),
                            not_paths: strings(&op.not_paths),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

fn id_patterns(field: &'static str, values: &[String]) -> Result<Vec<IdPattern>, InvalidMessage> {
    values
        .iter()
        .map(|v| IdPattern::parse(v).map_err(|e| invalid(field, format!("{v:?}: {e}"))))
        .collect()
}

fn path_patterns(
    field: &'static str,
    values: &[String],
) -> Result<Vec<PathPattern>, InvalidMessage> {
    values
        .iter()
        .map(|v| PathPattern::parse(v).map_err(|e| invalid(field, format!("{v:?}: {e}"))))
        .collect()
}

impl TryFrom<&pb::Policy> for Policy {
    type Error = InvalidMessage;

    fn try_from(policy: &pb::Policy) -> Result<Self, Self::Error> {
        if policy.name.is_empty() || policy.namespace.is_empty() {
            return Err(invalid("policy", "namespace and name are required"));
        }
        let action = match pb::Action::try_from(policy.action) {
            Ok(pb::Action::Allow) => Action::Allow,
            Ok(pb::Action::Deny) => Action::Deny,
            Ok(pb::Action::Audit) => Action::Audit,
            _ => {
                return Err(invalid(
                    "action",
                    format!("unknown value {}", policy.action),
                ));
            }
        };
        let enforcement = match pb::Enforcement::try_from(policy.enforcement) {
            Ok(pb::Enforcement::Enforce) => Enforcement::Enforce,
            Ok(pb::Enforcement::DryRun) => Enforcement::DryRun,
            _ => {
                return Err(invalid(
                    "enforcement",
                    format!("unknown value {}", policy.enforcement),
                ));
            }
        };
        let rules = policy
            .rules
            .iter()
            .map(|rule| {
                Ok(Rule {
                    from: rule
                        .from
                        .iter()
                        .map(|s| {
                            Ok(Source {
                                spiffe_ids: id_patterns("spiffe_ids", &s.spiffe_ids)?,
                                not_spiffe_ids: id_patterns("not_spiffe_ids", &s.not_spiffe_ids)?,
                                trust_domains: s
                                    .trust_domains
                                    .iter()
                                    .map(|td| {
                                        TrustDomain::new(td).map_err(|e| {
                                            invalid("trust_domains", format!("{td:?}: {e}"))
                                        })
                                    })
                                    .collect::<Result<_, _>>()?,
                                namespaces: s.namespaces.clone(),
                            })
                        })
                        .collect::<Result<_, InvalidMessage>>()?,
                    to: rule
                        .to
                        .iter()
                        .map(|op| {
                            Ok(Operation {
                                ports: op
                                    .ports
                                    .iter()
                                    .map(|&p| {
                                        u16::try_from(p)
                                            .ok()
                                            .filter(|&p| p != 0)
                                            .ok_or_else(|| invalid("ports", format!("{p}")))
                                    })
                                    .collect::<Result<_, _>>()?,
                                methods: op.methods.clone(),
                                paths: path_patterns("paths", &op.paths)?,
                                not_paths: path_patterns("not_paths", &op.not_paths)?,
                            })
                        })
                        .collect::<Result<_, InvalidMessage>>()?,
                })
            })
            .collect::<Result<_, InvalidMessage>>()?;
        Ok(Policy {
            id: PolicyRef {
                namespace: policy.namespace.clone(),
                name: policy.name.clone(),
            },
            action,
            enforcement,
            rules,
        })
    }
}

impl From<&PolicySet> for pb::PolicySet {
    fn from(set: &PolicySet) -> Self {
        Self {
            default_policy: pb::DefaultPolicy::from(set.default_policy).into(),
            bindings: set
                .bindings
                .iter()
                .map(|binding| pb::PolicyBinding {
                    policy: Some(pb::Policy::from(&binding.policy)),
                    targets: strings(&binding.targets),
                })
                .collect(),
        }
    }
}

/// A received policy set, and the bindings that could not be read (each with why). Whatever is
/// unreadable fails closed when its targets are readable: an enforced DENY becomes a DENY of
/// everything for its targets, an enforced ALLOW an ALLOW of nothing (which still takes its
/// targets out of the default policy). AUDIT and DryRun policies are dropped; they never decide.
pub fn policy_set_from(set: &pb::PolicySet) -> (PolicySet, Vec<InvalidMessage>) {
    let mut refused = Vec::new();
    let mut bindings = Vec::new();
    for binding in &set.bindings {
        let targets = id_patterns("targets", &binding.targets);
        let policy = binding
            .policy
            .as_ref()
            .ok_or_else(|| invalid("policy", "missing"))
            .and_then(Policy::try_from);
        match (policy, targets) {
            (Ok(policy), Ok(targets)) => bindings.push(PolicyBinding { policy, targets }),
            (Err(e), Ok(targets)) => {
                let fallback = binding.policy.as_ref().and_then(|raw| {
                    let rules = match pb::Action::try_from(raw.action) {
                        Ok(pb::Action::Deny) => vec![Rule::default()],
                        Ok(pb::Action::Allow) => Vec::new(),
                        _ => return None,
                    };
                    if raw.enforcement == pb::Enforcement::DryRun as i32 {
                        return None;
                    }
                    Some(Policy {
                        id: PolicyRef {
                            namespace: raw.namespace.clone(),
                            name: raw.name.clone(),
                        },
                        action: if rules.is_empty() {
                            Action::Allow
                        } else {
                            Action::Deny
                        },
                        enforcement: Enforcement::Enforce,
                        rules,
                    })
                });
                if let Some(policy) = fallback {
                    bindings.push(PolicyBinding { policy, targets });
                }
                refused.push(e);
            }
            (_, Err(e)) => refused.push(e),
        }
    }
    let mut set = PolicySet {
        default_policy: default_policy_from(set.default_policy),
        bindings,
    };
    set.normalize();
    (set, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deny_binding(path: &str) -> pb::PolicyBinding {
        pb::PolicyBinding {
            policy: Some(pb::Policy {
                namespace: "default".into(),
                name: "no-admin".into(),
                action: pb::Action::Deny.into(),
                enforcement: pb::Enforcement::Enforce.into(),
                rules: vec![pb::Rule {
                    from: vec![],
                    to: vec![pb::Operation {
                        paths: vec![path.into()],
                        ..Default::default()
                    }],
                }],
            }),
            targets: vec!["spiffe://example.org/api".into()],
        }
    }

    #[test]
    fn policies_round_trip_through_the_wire_form() {
        let wire = pb::PolicySet {
            default_policy: pb::DefaultPolicy::AllowAuthenticated.into(),
            bindings: vec![deny_binding("/admin/*")],
        };
        let (set, refused) = policy_set_from(&wire);
        assert!(refused.is_empty());
        assert_eq!(set.default_policy, DefaultPolicy::AllowAuthenticated);
        assert_eq!(pb::PolicySet::from(&set), wire);
    }

    #[test]
    fn an_unreadable_deny_denies_everything_for_its_targets() {
        let wire = pb::PolicySet {
            default_policy: pb::DefaultPolicy::AllowTrustDomain.into(),
            bindings: vec![deny_binding("relative/path")],
        };
        let (set, refused) = policy_set_from(&wire);
        assert_eq!(refused.len(), 1);
        assert_eq!(set.bindings.len(), 1);
        assert_eq!(set.bindings[0].policy.rules, vec![Rule::default()]);
        assert_eq!(set.bindings[0].policy.action, Action::Deny);
    }

    #[test]
    fn an_unreadable_allow_admits_nothing_and_an_unknown_default_denies() {
        let mut binding = deny_binding("relative/path");
        if let Some(policy) = binding.policy.as_mut() {
            policy.action = pb::Action::Allow.into();
        }
        let wire = pb::PolicySet {
            default_policy: 42,
            bindings: vec![binding],
        };
        let (set, refused) = policy_set_from(&wire);
        assert_eq!(refused.len(), 1);
        assert_eq!(set.bindings.len(), 1, "still targets the workload");
        assert_eq!(set.bindings[0].policy.action, Action::Allow);
        assert!(set.bindings[0].policy.rules.is_empty(), "matches nothing");
        assert_eq!(set.default_policy, DefaultPolicy::Deny);
    }
}
