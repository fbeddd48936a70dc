//! AuthorizationPolicy resources: compiled by `signet_core::policy` (over the kube-free spec
//! `signet-api` converts into) and given their status conditions here.

use signet_api::AuthorizationPolicySpec;
pub use signet_core::policy::{CompiledPolicy, PolicyError, PolicyTarget, unknown_trust_domains};
use signet_spiffe::TrustDomain;

/// Compiles one resource; all errors are collected, not just the first.
pub fn compile(
    namespace: &str,
    name: &str,
    spec: &AuthorizationPolicySpec,
) -> Result<CompiledPolicy, Vec<PolicyError>> {
    signet_core::policy::compile(namespace, name, &spec.into())
}

/// What an invalid enforced policy binds while it is invalid (see
/// `signet_core::policy::fail_closed`).
pub fn fail_closed(
    namespace: &str,
    name: &str,
    spec: &AuthorizationPolicySpec,
) -> Option<CompiledPolicy> {
    signet_core::policy::fail_closed(namespace, name, &spec.into())
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
    use std::collections::BTreeMap;

    use signet_api::{PolicyOperation, PolicyRule, PolicySource};
    use signet_core::policy::{Action, Workload, policies_for};
    use signet_spiffe::SpiffeId;

    use super::*;
    use crate::label_selector::Selector;

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
