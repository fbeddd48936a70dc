//! Kubernetes label selectors: the API type converted into `signet_core`'s matcher, which the
//! controller (ClusterSPIFFEID) and policy compilation share.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as ApiLabelSelector;
pub use signet_core::label_selector::{LabelSelector as Selector, LabelSelectorError};

/// Parses an optional `metav1.LabelSelector`; `None` matches everything.
pub fn parse(selector: Option<&ApiLabelSelector>) -> Result<Selector, LabelSelectorError> {
    Selector::parse(
        selector
            .map(signet_api::conversions::label_selector_spec)
            .as_ref(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    #[test]
    fn the_api_type_converts_with_every_field() {
        let selector = parse(Some(&ApiLabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["dev".into()]),
            }]),
        }))
        .unwrap();
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert!(selector.matches(Some(&labels(&[("app", "web"), ("tier", "prod")]))));
        assert!(!selector.matches(Some(&labels(&[("app", "web"), ("tier", "dev")]))));
        assert!(!selector.matches(Some(&labels(&[("app", "db")]))));
        let refused = parse(Some(&ApiLabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: "Exists".into(),
                values: Some(vec!["x".into()]),
            }]),
            ..ApiLabelSelector::default()
        }));
        assert!(refused.is_err());
    }
}
