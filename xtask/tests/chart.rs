//! The Helm chart's values are all described by `values.schema.json`, so `helm install --set`
//! with a typo fails instead of being ignored, and every option is documented. (Lint and
//! rendering with Helm's own engine: `hack/helm-check.py`, run by `.ci/run`.)

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};

use serde_json::Value;

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/signet")
}

fn values() -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap()).unwrap()
}

fn schema() -> Value {
    serde_json::from_str(&std::fs::read_to_string(chart().join("values.schema.json")).unwrap())
        .unwrap()
}

/// Walks every key of `values` and requires a described schema property for it. Objects whose
/// schema takes arbitrary keys (labels, resources, selectors) are not descended into.
fn check(values: &serde_yaml::Value, schema: &Value, path: &str, missing: &mut Vec<String>) {
    let serde_yaml::Value::Mapping(map) = values else {
        return;
    };
    for (key, value) in map {
        let key = key.as_str().unwrap_or_default();
        let here = if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        };
        let Some(property) = schema.pointer(&format!("/properties/{key}")) else {
            if !schema["additionalProperties"].is_object() {
                missing.push(format!("{here}: not in values.schema.json"));
            }
            continue;
        };
        if property["description"]
            .as_str()
            .is_none_or(|d| d.trim().is_empty())
        {
            missing.push(format!("{here}: no description"));
        }
        check(value, property, &here, missing);
    }
}

#[test]
fn every_values_key_is_described_by_the_schema() {
    let mut missing = Vec::new();
    check(&values(), &schema(), "", &mut missing);
    assert!(
        missing.is_empty(),
        "values.schema.json gaps:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_schema_refuses_unknown_top_level_keys() {
    assert_eq!(schema()["additionalProperties"], Value::Bool(false));
}

#[test]
fn the_walk_reports_an_undocumented_key() {
    let values: serde_yaml::Value =
        serde_yaml::from_str("server:\n  replicas: 2\n  typo: 1\n").unwrap();
    let schema = serde_json::json!({
        "properties": {"server": {"description": "s", "properties": {"replicas": {"description": "r"}}}}
    });
    let mut missing = Vec::new();
    check(&values, &schema, "", &mut missing);
    assert_eq!(
        missing,
        vec!["server.typo: not in values.schema.json".to_owned()]
    );
}
