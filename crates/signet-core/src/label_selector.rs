//! Kubernetes label selectors without Kubernetes types: the spec (`matchLabels` and
//! `matchExpressions`, as `metav1.LabelSelector` has them) parsed once into a typed matcher
//! (every requirement ANDed). `signet-controller` converts the API type into [`LabelSelectorSpec`].

use std::collections::{BTreeMap, BTreeSet};

/// A label selector as written (`metav1.LabelSelector`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelectorSpec {
    /// `matchLabels`.
    pub match_labels: BTreeMap<String, String>,
    /// `matchExpressions`.
    pub match_expressions: Vec<LabelRequirementSpec>,
}

/// One `matchExpressions` item.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelRequirementSpec {
    /// The label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// The values (`In`, `NotIn`).
    pub values: Vec<String>,
}

/// Why a label selector is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LabelSelectorError {
    /// An operator other than In, NotIn, Exists, DoesNotExist.
    #[error("unknown label selector operator {0:?}")]
    UnknownOperator(String),
    /// In/NotIn without values, or Exists/DoesNotExist with values.
    #[error("operator {operator} on key {key:?} {problem}")]
    BadValues {
        /// The key.
        key: String,
        /// The operator.
        operator: String,
        /// What is wrong.
        problem: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed label selector; `LabelSelector::everything()` matches all objects.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Matches everything (an absent selector).
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parses an optional selector; `None` matches everything.
    pub fn parse(selector: Option<&LabelSelectorSpec>) -> Result<Self, LabelSelectorError> {
        let Some(selector) = selector else {
            return Ok(Self::everything());
        };
        let mut requirements = Vec::new();
        for (key, value) in &selector.match_labels {
            requirements.push(Requirement::In(
                key.clone(),
                BTreeSet::from([value.clone()]),
            ));
        }
        for expression in &selector.match_expressions {
            let key = expression.key.clone();
            let values: BTreeSet<String> = expression.values.iter().cloned().collect();
            let bad = |problem| LabelSelectorError::BadValues {
                key: key.clone(),
                operator: expression.operator.clone(),
                problem,
            };
            requirements.push(match expression.operator.as_str() {
                "In" if values.is_empty() => return Err(bad("needs values")),
                "NotIn" if values.is_empty() => return Err(bad("needs values")),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(bad("takes no values"));
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                other => return Err(LabelSelectorError::UnknownOperator(other.to_owned())),
            });
        }
        Ok(Self { requirements })
    }

    /// Whether labels satisfy every requirement.
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let get = |key: &str| labels.and_then(|l| l.get(key));
        self.requirements.iter().all(|r| match r {
            Requirement::In(key, values) => get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => get(key).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(key) => get(key).is_some(),
            Requirement::DoesNotExist(key) => get(key).is_none(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expression(key: &str, operator: &str, values: &[&str]) -> LabelRequirementSpec {
        LabelRequirementSpec {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let selector = LabelSelector::parse(Some(&LabelSelectorSpec {
            match_labels: labels(&[("app", "web")]),
            match_expressions: vec![
                expression("tier", "In", &["frontend", "edge"]),
                expression("canary", "DoesNotExist", &[]),
                expression("env", "NotIn", &["dev"]),
                expression("team", "Exists", &[]),
            ],
        }))
        .unwrap();
        let good = labels(&[("app", "web"), ("tier", "edge"), ("team", "a")]);
        assert!(selector.matches(Some(&good)));
        let mut bad = good.clone();
        bad.insert("canary".into(), "1".into());
        assert!(!selector.matches(Some(&bad)));
        let mut bad = good.clone();
        bad.insert("env".into(), "dev".into());
        assert!(!selector.matches(Some(&bad)));
        assert!(!selector.matches(None));
        assert!(LabelSelector::everything().matches(None));
        // An empty selector (not absent) also matches everything, as in Kubernetes.
        assert!(
            LabelSelector::parse(Some(&LabelSelectorSpec::default()))
                .unwrap()
                .matches(None)
        );
    }

    #[test]
    fn invalid_selectors_are_refused() {
        for bad in [
            expression("a", "In", &[]),
            expression("a", "NotIn", &[]),
            expression("a", "Exists", &["x"]),
            expression("a", "Gt", &["1"]),
        ] {
            let selector = LabelSelectorSpec {
                match_expressions: vec![bad.clone()],
                ..LabelSelectorSpec::default()
            };
            assert!(LabelSelector::parse(Some(&selector)).is_err(), "{bad:?}");
        }
    }
}
