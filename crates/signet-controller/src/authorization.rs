//! AuthorizationPolicy resources compiled into the evaluator's model (`signet_core::policy`).
//! Pure: every pattern is parsed once here, so a bad one is reported in the resource's status
//! instead of failing requests later.

use signet_api::{
    AuthorizationPolicySpec, PolicyAction, PolicyEnforcement, PolicyOperation, PolicyRule,
    PolicySource,
};
use signet_core::policy::{
    Action, Enforcement, IdPattern, Operation, PathPattern, Policy, PolicyRef, Rule, Source,
};
use std::collections::BTreeMap;

use signet_spiffe::{SpiffeId, TrustDomain};

use crate::label_selector::Selector;

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
pub fn fail_closed(
    namespace: &str,
    name: &str,
    spec: &AuthorizationPolicySpec,
) -> Option<CompiledPolicy> {
    if spec.enforcement != PolicyEnforcement::Enforce {
        return None;
    }
    let rules = match spec.action {
        PolicyAction::Deny => vec![PolicyRule::default()],
        PolicyAction::Allow => Vec::new(),
        PolicyAction::Audit => return None,
    };
    let skeleton = AuthorizationPolicySpec {
        rules,
        ..spec.clone()
    };
    compile(namespace, name, &skeleton).ok()
}

/// Compiles one resource; all errors are collected, not just the first.
pub fn compile(
    namespace: &str,
    name: &str,
    spec: &AuthorizationPolicySpec,
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
            action: match spec.action {
                PolicyAction::Allow => Action::Allow,
                PolicyAction::Deny => Action::Deny,
                PolicyAction::Audit => Action::Audit,
            },
            enforcement: match spec.enforcement {
                PolicyEnforcement::Enforce => Enforcement::Enforce,
                PolicyEnforcement::DryRun => Enforcement::DryRun,
            },
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
    rule: &PolicyRule,
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
    source: &PolicySource,
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

fn compile_operation(
    op: &PolicyOperation,
    field: &str,
    errors: &mut Vec<PolicyError>,
) -> Operation {
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

/// The status of an AuthorizationPolicy: `Accepted` (compiled; reason `Accepted` or `Invalid`
/// with every error and its field), `ResolvedRefs` (reason `UnknownTrustDomain` naming them) and
/// the target counts. Transition times are kept while a condition does not change.
pub fn policy_status(
    compiled: &Result<CompiledPolicy, Vec<PolicyError>>,
    known_trust_domains: &[TrustDomain],
    targets: signet_api::PolicyTargets,
    generation: Option<i64>,
    previous: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    now: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> signet_api::AuthorizationPolicyStatus {
    use signet_api::status::{ACCEPTED, RESOLVED_REFS, condition};
    let (accepted, resolved) = match compiled {
        Err(errors) => {
            let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
            (
                (
                    false,
                    "Invalid",
                    format!("not enforced: {}", list.join("; ")),
                ),
                (
                    true,
                    "Resolved",
                    "no references checked: the policy is invalid".to_owned(),
                ),
            )
        }
        Ok(policy) => {
            let unknown: Vec<&str> = unknown_trust_domains(policy, known_trust_domains)
                .into_iter()
                .map(TrustDomain::as_str)
                .collect();
            let resolved = if unknown.is_empty() {
                (
                    true,
                    "Resolved",
                    "every trust domain named is known".to_owned(),
                )
            } else {
                (
                    false,
                    "UnknownTrustDomain",
                    format!(
                        "neither the local nor a federated trust domain: {} (rules naming them can never match a verified peer)",
                        unknown.join(", ")
                    ),
                )
            };
            (
                (true, "Accepted", "compiled and delivered".to_owned()),
                resolved,
            )
        }
    };
    let build = |type_: &str, (status, reason, message): (bool, &str, String)| {
        condition(
            previous,
            type_,
            status,
            reason,
            message,
            generation,
            now.clone(),
        )
    };
    signet_api::AuthorizationPolicyStatus {
        observed_generation: generation,
        conditions: vec![build(ACCEPTED, accepted), build(RESOLVED_REFS, resolved)],
        targets: Some(targets),
    }
}

#[cfg(test)]
mod tests {
    use signet_api::{PolicyOperation, PolicyRule, PolicySource};

    use super::*;

    fn spec_with(rule: PolicyRule) -> AuthorizationPolicySpec {
        AuthorizationPolicySpec {
            rules: vec![rule],
            ..AuthorizationPolicySpec::default()
        }
    }

    #[test]
    fn compiles_the_design_example() {
        let spec = spec_with(PolicyRule {
            from: vec![PolicySource {
                spiffe_ids: vec!["spiffe://td/ns/frontend/sa/*".into()],
                trust_domains: vec!["td".into(), "partner.example".into()],
                namespaces: vec!["frontend".into()],
                ..PolicySource::default()
            }],
            to: vec![PolicyOperation {
                ports: vec![8443],
                methods: vec!["GET".into(), "POST".into()],
                paths: vec!["/inventory/*".into()],
                ..PolicyOperation::default()
            }],
        });
        let compiled =
            compile("shop", "inventory", &spec).unwrap_or_else(|e| unreachable!("{e:?}"));
        assert_eq!(compiled.policy.id.to_string(), "shop/inventory");
        assert_eq!(compiled.policy.action, Action::Allow);
        assert_eq!(compiled.target, PolicyTarget::Pods(Selector::everything()));
        assert_eq!(compiled.policy.rules[0].to[0].ports, vec![8443]);
        assert!(compiled.policy.uses_http());
        let names: Vec<&str> = compiled
            .trust_domains
            .iter()
            .map(TrustDomain::as_str)
            .collect();
        assert_eq!(names, vec!["partner.example", "td"]);
        let known = [TrustDomain::new("td").unwrap_or_else(|e| unreachable!("{e}"))];
        let unknown: Vec<&str> = unknown_trust_domains(&compiled, &known)
            .into_iter()
            .map(TrustDomain::as_str)
            .collect();
        assert_eq!(unknown, vec!["partner.example"]);
    }

    #[test]
    fn a_typo_in_a_negative_pattern_or_a_target_is_an_unknown_trust_domain() {
        let spec = AuthorizationPolicySpec {
            target_spiffe_ids: vec!["spiffe://tdd/ns/shop/sa/api".into()],
            rules: vec![PolicyRule {
                from: vec![PolicySource {
                    not_spiffe_ids: vec!["spiffe://t.d/ns/debug/**".into()],
                    ..PolicySource::default()
                }],
                to: vec![],
            }],
            ..AuthorizationPolicySpec::default()
        };
        let compiled = compile("shop", "typo", &spec).unwrap_or_else(|e| unreachable!("{e:?}"));
        let known = [TrustDomain::new("td").unwrap_or_else(|e| unreachable!("{e}"))];
        let unknown: Vec<&str> = unknown_trust_domains(&compiled, &known)
            .into_iter()
            .map(TrustDomain::as_str)
            .collect();
        assert_eq!(unknown, vec!["t.d", "tdd"]);
    }

    #[test]
    fn every_error_is_reported_with_its_field() {
        let spec = AuthorizationPolicySpec {
            selector: Some(Default::default()),
            target_spiffe_ids: vec!["spiffe://td/a*".into()],
            rules: vec![PolicyRule {
                from: vec![PolicySource {
                    spiffe_ids: vec!["spiffe://td/ok".into(), "td/x".into()],
                    trust_domains: vec!["Bad TD".into()],
                    ..PolicySource::default()
                }],
                to: vec![PolicyOperation {
                    ports: vec![0, 70000],
                    methods: vec!["get".into()],
                    paths: vec!["/a/*/b".into()],
                    ..PolicyOperation::default()
                }],
            }],
            ..AuthorizationPolicySpec::default()
        };
        let errors = compile("shop", "bad", &spec).err().unwrap_or_default();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "selector",
                "targetSPIFFEIDs[0]",
                "rules[0].from[0].spiffeIDs[1]",
                "rules[0].from[0].trustDomains[0]",
                "rules[0].to[0].ports[0]",
                "rules[0].to[0].ports[1]",
                "rules[0].to[0].methods[0]",
                "rules[0].to[0].paths[0]",
            ]
        );
    }

    #[test]
    fn status_reports_invalid_policies_and_unknown_trust_domains() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        use k8s_openapi::jiff::Timestamp;
        let now = Time(Timestamp::UNIX_EPOCH);
        let known = [TrustDomain::new("td").unwrap_or_else(|e| unreachable!("{e}"))];
        let targets = signet_api::PolicyTargets {
            pods: 3,
            spiffe_ids: 1,
        };
        let bad = AuthorizationPolicySpec {
            rules: vec![PolicyRule {
                from: vec![],
                to: vec![PolicyOperation {
                    methods: vec!["get".into()],
                    ..PolicyOperation::default()
                }],
            }],
            ..AuthorizationPolicySpec::default()
        };
        let status = policy_status(
            &compile("shop", "bad", &bad),
            &known,
            targets.clone(),
            Some(2),
            &[],
            now.clone(),
        );
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!(status.conditions[0].type_, "Accepted");
        assert_eq!(status.conditions[0].status, "False");
        assert_eq!(status.conditions[0].reason, "Invalid");
        assert!(
            status.conditions[0]
                .message
                .contains("rules[0].to[0].methods[0]")
        );

        let partner = spec_with(PolicyRule {
            from: vec![PolicySource {
                trust_domains: vec!["partner.example".into()],
                ..PolicySource::default()
            }],
            to: vec![],
        });
        let status = policy_status(
            &compile("shop", "p", &partner),
            &known,
            targets.clone(),
            Some(1),
            &[],
            now.clone(),
        );
        assert_eq!(status.conditions[0].status, "True");
        assert_eq!(status.conditions[1].type_, "ResolvedRefs");
        assert_eq!(status.conditions[1].status, "False");
        assert_eq!(status.conditions[1].reason, "UnknownTrustDomain");
        assert!(status.conditions[1].message.contains("partner.example"));
        assert_eq!(status.targets, Some(targets.clone()));

        // Federating with the partner resolves it; the Accepted transition time is kept.
        let later = Time(Timestamp::UNIX_EPOCH + std::time::Duration::from_secs(60));
        let federated = [
            known[0].clone(),
            TrustDomain::new("partner.example").unwrap_or_else(|e| unreachable!("{e}")),
        ];
        let again = policy_status(
            &compile("shop", "p", &partner),
            &federated,
            targets,
            Some(1),
            &status.conditions,
            later,
        );
        assert_eq!(again.conditions[1].status, "True");
        assert_eq!(
            again.conditions[0].last_transition_time,
            status.conditions[0].last_transition_time
        );
        assert_ne!(
            again.conditions[1].last_transition_time,
            status.conditions[1].last_transition_time
        );
    }

    #[test]
    fn targets_by_selector_stay_in_their_namespace_and_by_id_go_anywhere() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
        let by_label = AuthorizationPolicySpec {
            selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("app".to_owned(), "inventory".to_owned())])),
                ..LabelSelector::default()
            }),
            ..AuthorizationPolicySpec::default()
        };
        let by_id = AuthorizationPolicySpec {
            target_spiffe_ids: vec!["spiffe://td/ns/*/sa/inventory".into()],
            ..AuthorizationPolicySpec::default()
        };
        let compiled = [
            compile("shop", "z-by-label", &by_label).unwrap_or_else(|e| unreachable!("{e:?}")),
            compile("other", "a-by-id", &by_id).unwrap_or_else(|e| unreachable!("{e:?}")),
        ];
        let id = SpiffeId::new("spiffe://td/ns/shop/sa/inventory")
            .unwrap_or_else(|e| unreachable!("{e}"));
        let labels = BTreeMap::from([("app".to_owned(), "inventory".to_owned())]);
        let in_shop = Workload {
            spiffe_id: &id,
            pod: Some(("shop", Some(&labels))),
        };
        let names: Vec<String> = policies_for(&in_shop, &compiled)
            .iter()
            .map(|p| p.id.to_string())
            .collect();
        assert_eq!(names, vec!["other/a-by-id", "shop/z-by-label"]);
        let elsewhere = Workload {
            spiffe_id: &id,
            pod: Some(("billing", Some(&labels))),
        };
        assert_eq!(
            policies_for(&elsewhere, &compiled).len(),
            1,
            "selectors are namespaced"
        );
        let outside = Workload {
            spiffe_id: &id,
            pod: None,
        };
        assert_eq!(
            policies_for(&outside, &compiled).len(),
            1,
            "a VM is targeted by ID only"
        );
        let bad = AuthorizationPolicySpec {
            selector: Some(LabelSelector {
                match_expressions: Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                        key: "app".into(),
                        operator: "Matches".into(),
                        values: None,
                    },
                ]),
                ..LabelSelector::default()
            }),
            ..AuthorizationPolicySpec::default()
        };
        let errors = compile("shop", "bad", &bad).err().unwrap_or_default();
        assert_eq!(errors.first().map(|e| e.field.as_str()), Some("selector"));
    }
}
