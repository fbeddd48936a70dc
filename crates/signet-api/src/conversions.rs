//! The resources' specs converted into `signet_core`'s kube-free forms, so that policy
//! compilation and label selection need no Kubernetes types.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use signet_core::label_selector::{LabelRequirementSpec, LabelSelectorSpec};
use signet_core::policy::{Action, Enforcement, OperationSpec, PolicySpec, RuleSpec, SourceSpec};

use crate::authorization_policy::{
    AuthorizationPolicySpec, PolicyAction, PolicyEnforcement, PolicyOperation, PolicyRule,
    PolicySource,
};

/// A `metav1.LabelSelector` as `signet_core` reads it.
pub fn label_selector_spec(selector: &LabelSelector) -> LabelSelectorSpec {
    LabelSelectorSpec {
        match_labels: selector.match_labels.clone().unwrap_or_default(),
        match_expressions: selector
            .match_expressions
            .iter()
            .flatten()
            .map(|e| LabelRequirementSpec {
                key: e.key.clone(),
                operator: e.operator.clone(),
                values: e.values.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

impl From<&AuthorizationPolicySpec> for PolicySpec {
    fn from(spec: &AuthorizationPolicySpec) -> Self {
        Self {
            selector: spec.selector.as_ref().map(label_selector_spec),
            target_spiffe_ids: spec.target_spiffe_ids.clone(),
            action: match spec.action {
                PolicyAction::Allow => Action::Allow,
                PolicyAction::Deny => Action::Deny,
                PolicyAction::Audit => Action::Audit,
            },
            enforcement: match spec.enforcement {
                PolicyEnforcement::Enforce => Enforcement::Enforce,
                PolicyEnforcement::DryRun => Enforcement::DryRun,
            },
            rules: spec.rules.iter().map(RuleSpec::from).collect(),
        }
    }
}

impl From<&PolicyRule> for RuleSpec {
    fn from(rule: &PolicyRule) -> Self {
        Self {
            from: rule.from.iter().map(SourceSpec::from).collect(),
            to: rule.to.iter().map(OperationSpec::from).collect(),
        }
    }
}

impl From<&PolicySource> for SourceSpec {
    fn from(source: &PolicySource) -> Self {
        Self {
            spiffe_ids: source.spiffe_ids.clone(),
            not_spiffe_ids: source.not_spiffe_ids.clone(),
            trust_domains: source.trust_domains.clone(),
            namespaces: source.namespaces.clone(),
        }
    }
}

impl From<&PolicyOperation> for OperationSpec {
    fn from(op: &PolicyOperation) -> Self {
        Self {
            ports: op.ports.clone(),
            methods: op.methods.clone(),
            paths: op.paths.clone(),
            not_paths: op.not_paths.clone(),
        }
    }
}
