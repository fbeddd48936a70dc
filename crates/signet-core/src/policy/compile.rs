//! AuthorizationPolicy specs compiled into the evaluator's model. Pure and kube-free: the spec
//! here mirrors the resource's (`signet-api` converts into it), every pattern is parsed once, and
//! all errors are collected with their field (`rules[0].from[1].spiffeIDs[2]`) so the resource's
//! status or the admin API can name each.

use std::collections::BTreeMap;

use signet_spiffe::{SpiffeId, TrustDomain};

use super::{
    Action, Enforcement, IdPattern, Operation, PathPattern, Policy, PolicyRef, Rule, Source,
};
use crate::label_selector::{LabelSelector as Selector, LabelSelectorSpec};

/// An AuthorizationPolicy's spec, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    /// Pods of the policy's namespace (Kubernetes mode); exclusive with `target_spiffe_ids`.
    pub selector: Option<LabelSelectorSpec>,
    /// SPIFFE ID patterns of the workloads the policy applies to.
    pub target_spiffe_ids: Vec<String>,
    /// What a match does.
    pub action: Action,
    /// Whether the policy decides or only reports.
    pub enforcement: Enforcement,
    /// The rules; a DENY with none matches everything, an ALLOW with none matches nothing.
    pub rules: Vec<RuleSpec>,
}

/// One rule: a request matches if some source and some operation match (absent = any).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleSpec {
    /// Who.
    pub from: Vec<SourceSpec>,
    /// What.
    pub to: Vec<OperationSpec>,
}

/// Peers a rule matches.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceSpec {
    /// SPIFFE ID patterns.
    pub spiffe_ids: Vec<String>,
    /// SPIFFE ID patterns excluded.
    pub not_spiffe_ids: Vec<String>,
    /// Trust domains.
    pub trust_domains: Vec<String>,
    /// Kubernetes namespaces of the peer.
    pub namespaces: Vec<String>,
}

/// Requests a rule matches.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OperationSpec {
    /// Destination ports (1–65535).
    pub ports: Vec<i32>,
    /// Upper-case HTTP methods.
    pub methods: Vec<String>,
    /// Path patterns.
    pub paths: Vec<String>,
    /// Path patterns excluded.
    pub not_paths: Vec<String>,
}

/// Why a policy was not accepted; each names the field (`rules[0].from[1].spiffeIDs[2]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PolicyError {
    pub field: String,
    pub reason: String,
}

/// How a policy picks the workloads it applies to.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyTarget {
    /// Pods of the policy's namespace matching the selector (absent: every pod).
    Pods(Selector),
    /// Workloads whose SPIFFE ID matches one of these patterns, in any namespace.
    SpiffeIds(Vec<IdPattern>),
}

/// A workload a policy may target: a pod (namespace and labels) serving an identity, or a
/// workload outside Kubernetes (identity only).
#[derive(Debug, Clone, Copy)]
pub struct Workload<'a> {
    pub spiffe_id: &'a SpiffeId,
    pub pod: Option<(&'a str, Option<&'a BTreeMap<String, String>>)>,
}

impl CompiledPolicy {
    /// Whether the policy applies to `workload`.
    pub fn targets(&self, workload: &Workload<'_>) -> bool {
        match &self.target {
            PolicyTarget::SpiffeIds(patterns) => {
                patterns.iter().any(|p| p.matches(workload.spiffe_id))
            }
            PolicyTarget::Pods(selector) => workload.pod.is_some_and(|(namespace, labels)| {
                namespace == self.policy.id.namespace && selector.matches(labels)
            }),
        }
    }
}

/// The policies that apply to `workload`, in a stable order (namespace, then name), which is
/// the order the evaluator reports them in.
pub fn policies_for<'a>(
    workload: &Workload<'_>,
    policies: impl IntoIterator<Item = &'a CompiledPolicy>,
) -> Vec<&'a Policy> {
    let mut selected: Vec<&Policy> = policies
        .into_iter()
        .filter(|p| p.targets(workload))
        .map(|p| &p.policy)
        .collect();
    selected.sort_by(|a, b| a.id.cmp(&b.id));
    selected
}

/// A compiled AuthorizationPolicy: its targets and the evaluator's policy.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledPolicy {
    pub target: PolicyTarget,
    pub policy: Policy,
    /// Trust domains the policy names anywhere (for the `ResolvedRefs` condition): a typo in a
    /// `notSpiffeIDs` pattern would otherwise silently exclude no one.
    pub trust_domains: Vec<TrustDomain>,
}

/// What an invalid enforced policy binds while it is invalid, if its targets are valid: a DENY
/// denies everything for its targets, an ALLOW admits nothing but still takes its targets out of
/// the default policy. Dropping either (a typo in one rule, a document an older or newer version
/// wrote) would open what the policy closed. AUDIT and DryRun policies bind nothing.
pub fn fail_closed(namespace: &str, name: &str, spec: &PolicySpec) -> Option<CompiledPolicy> {
    if spec.enforcement != Enforcement::Enforce {
        return None;
    }
    let rules = match spec.action {
        Action::Deny => vec![RuleSpec::default()],
        Action::Allow => Vec::new(),
        Action::Audit => return None,
    };
    let skeleton = PolicySpec {
        rules,
        ..spec.clone()
    };
    compile(namespace, name, &skeleton).ok()
}

/// Compiles one resource; all errors are collected, not just the first.
pub fn compile(
    namespace: &str,
    name: &str,
    spec: &PolicySpec,
) -> Result<CompiledPolicy, Vec<PolicyError>> {
    let mut errors = Vec::new();
    let mut trust_domains = Vec::new();
    let target = if spec.target_spiffe_ids.is_empty() {
        PolicyTarget::Pods(Selector::parse(spec.selector.as_ref()).unwrap_or_else(|e| {
            errors.push(error("selector", e.to_string()));
            Selector::everything()
        }))
    } else {
        if spec.selector.is_some() {
            errors.push(error(
                "selector",
                "set selector or targetSPIFFEIDs, not both",
            ));
        }
        let targets = patterns(&spec.target_spiffe_ids, "targetSPIFFEIDs", &mut errors);
        trust_domains.extend(targets.iter().map(|p| p.trust_domain().clone()));
        PolicyTarget::SpiffeIds(targets)
    };
    let rules = spec
        .rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            compile_rule(
                rule,
                &format!("rules[{i}]"),
                &mut trust_domains,
                &mut errors,
            )
        })
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    trust_domains.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    trust_domains.dedup();
    Ok(CompiledPolicy {
        target,
        policy: Policy {
            id: PolicyRef {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            },
            action: spec.action,
            enforcement: spec.enforcement,
            rules,
        },
        trust_domains,
    })
}

fn error(field: &str, reason: impl Into<String>) -> PolicyError {
    PolicyError {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn patterns(values: &[String], field: &str, errors: &mut Vec<PolicyError>) -> Vec<IdPattern> {
    values
        .iter()
        .enumerate()
        .filter_map(|(i, value)| {
            IdPattern::parse(value)
                .map_err(|e| errors.push(error(&format!("{field}[{i}]"), e.to_string())))
                .ok()
        })
        .collect()
}

fn compile_rule(
    rule: &RuleSpec,
    field: &str,
    trust_domains: &mut Vec<TrustDomain>,
    errors: &mut Vec<PolicyError>,
) -> Rule {
    Rule {
        from: rule
            .from
            .iter()
            .enumerate()
            .map(|(i, s)| compile_source(s, &format!("{field}.from[{i}]"), trust_domains, errors))
            .collect(),
        to: rule
            .to
            .iter()
            .enumerate()
            .map(|(i, op)| compile_operation(op, &format!("{field}.to[{i}]"), errors))
            .collect(),
    }
}

fn compile_source(
    source: &SourceSpec,
    field: &str,
    trust_domains: &mut Vec<TrustDomain>,
    errors: &mut Vec<PolicyError>,
) -> Source {
    let spiffe_ids = patterns(&source.spiffe_ids, &format!("{field}.spiffeIDs"), errors);
    let not_spiffe_ids = patterns(
        &source.not_spiffe_ids,
        &format!("{field}.notSpiffeIDs"),
        errors,
    );
    let domains: Vec<TrustDomain> = source
        .trust_domains
        .iter()
        .enumerate()
        .filter_map(|(i, td)| {
            TrustDomain::new(td)
                .map_err(|e| {
                    errors.push(error(&format!("{field}.trustDomains[{i}]"), e.to_string()))
                })
                .ok()
        })
        .collect();
    trust_domains.extend(domains.iter().cloned());
    trust_domains.extend(
        spiffe_ids
            .iter()
            .chain(&not_spiffe_ids)
            .map(|p| p.trust_domain().clone()),
    );
    Source {
        spiffe_ids,
        not_spiffe_ids,
        trust_domains: domains,
        namespaces: source.namespaces.clone(),
    }
}

fn compile_operation(op: &OperationSpec, field: &str, errors: &mut Vec<PolicyError>) -> Operation {
    let ports = op
        .ports
        .iter()
        .enumerate()
        .filter_map(|(i, port)| {
            u16::try_from(*port).ok().filter(|p| *p != 0).or_else(|| {
                errors.push(error(&format!("{field}.ports[{i}]"), "must be 1-65535"));
                None
            })
        })
        .collect();
    for (i, method) in op.methods.iter().enumerate() {
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            errors.push(error(
                &format!("{field}.methods[{i}]"),
                "must be an upper-case HTTP method such as GET",
            ));
        }
    }
    let paths = |values: &[String],
                 name: &str,
                 errors: &mut Vec<PolicyError>|
     -> Vec<PathPattern> {
        values
            .iter()
            .enumerate()
            .filter_map(|(i, value)| {
                PathPattern::parse(value)
                    .map_err(|e| errors.push(error(&format!("{field}.{name}[{i}]"), e.to_string())))
                    .ok()
            })
            .collect()
    };
    Operation {
        ports,
        methods: op.methods.clone(),
        paths: paths(&op.paths, "paths", errors),
        not_paths: paths(&op.not_paths, "notPaths", errors),
    }
}

/// The trust domains a policy names (in targets, `spiffeIDs`, `notSpiffeIDs` and
/// `trustDomains`) that the server does not know (neither its own nor a
/// federated one): the `ResolvedRefs=False, UnknownTrustDomain` condition. Such a rule can never
/// match a verified peer, which is almost always a typo.
pub fn unknown_trust_domains<'a>(
    compiled: &'a CompiledPolicy,
    known: &[TrustDomain],
) -> Vec<&'a TrustDomain> {
    compiled
        .trust_domains
        .iter()
        .filter(|td| !known.contains(td))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(action: Action, rules: Vec<RuleSpec>) -> PolicySpec {
        PolicySpec {
            selector: None,
            target_spiffe_ids: vec!["spiffe://example.org/backend".into()],
            action,
            enforcement: Enforcement::Enforce,
            rules,
        }
    }

    fn rule(from: &str, path: &str) -> RuleSpec {
        RuleSpec {
            from: vec![SourceSpec {
                spiffe_ids: vec![from.into()],
                ..SourceSpec::default()
            }],
            to: vec![OperationSpec {
                paths: vec![path.into()],
                ..OperationSpec::default()
            }],
        }
    }

    #[test]
    fn compiles_without_kubernetes_types() {
        let compiled = compile(
            "default",
            "deny-admin",
            &spec(
                Action::Deny,
                vec![rule("spiffe://example.org/frontend", "/admin/*")],
            ),
        )
        .unwrap();
        assert_eq!(compiled.policy.action, Action::Deny);
        assert!(matches!(compiled.target, PolicyTarget::SpiffeIds(ref t) if t.len() == 1));
        let backend = SpiffeId::new("spiffe://example.org/backend").unwrap();
        let workload = Workload {
            spiffe_id: &backend,
            pod: None,
        };
        assert!(compiled.targets(&workload));
    }

    #[test]
    fn every_error_names_its_field() {
        let mut bad = spec(
            Action::Allow,
            vec![rule("spiffe://example.org/front*", "admin")],
        );
        bad.selector = Some(LabelSelectorSpec::default());
        bad.rules[0].to[0].ports = vec![0, 70_000];
        bad.rules[0].to[0].methods = vec!["get".into()];
        let errors = compile("default", "p", &bad).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "selector",
                "rules[0].from[0].spiffeIDs[0]",
                "rules[0].to[0].ports[0]",
                "rules[0].to[0].ports[1]",
                "rules[0].to[0].methods[0]",
                "rules[0].to[0].paths[0]",
            ]
        );
    }

    #[test]
    fn an_invalid_enforced_policy_fails_closed() {
        let broken = |action| {
            spec(
                action,
                vec![rule("spiffe://example.org/front*", "/admin/*")],
            )
        };
        let deny = fail_closed("default", "d", &broken(Action::Deny)).unwrap();
        assert_eq!(
            deny.policy.rules.len(),
            1,
            "one rule that matches everything"
        );
        let allow = fail_closed("default", "a", &broken(Action::Allow)).unwrap();
        assert!(allow.policy.rules.is_empty(), "admits nothing");
        assert!(fail_closed("default", "x", &broken(Action::Audit)).is_none());
        let mut dry = broken(Action::Deny);
        dry.enforcement = Enforcement::DryRun;
        assert!(fail_closed("default", "y", &dry).is_none());
    }
}
