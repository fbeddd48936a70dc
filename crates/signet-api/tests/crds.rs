//! The committed CRDs match the types, are structural, and their CEL rules compile, stay within
//! the API server's cost budget and accept/refuse what they should (evaluated with kube-cel, the
//! Kubernetes CEL library, against the generated schema itself).

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::path::Path;

use kube::core::cel::{ScopeContext, Validator, WarningKind, analyze_rule, compile_schema};
use serde_json::{Value, json};

fn schema_of(file: &str) -> Value {
    let (_, crd) = signet_api::crds()
        .into_iter()
        .find(|(name, _)| *name == file)
        .unwrap();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .unwrap();
    serde_json::to_value(schema).unwrap()
}

/// Both copies: `crds/` for `kubectl apply` and the Helm chart's, which its CRD template renders.
#[test]
fn committed_crds_match_the_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for dir in ["crds", "charts/signet/files/crds"] {
        for (file, crd) in signet_api::crds() {
            let committed = std::fs::read_to_string(root.join(dir).join(file)).unwrap_or_default();
            assert!(
                committed == signet_api::crd_yaml(&crd).unwrap(),
                "{dir}/{file} is stale: run `cargo run -p xtask -- crds`"
            );
        }
        let yaml_files = std::fs::read_dir(root.join(dir))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "yaml"))
            })
            .count();
        assert_eq!(
            yaml_files,
            signet_api::crds().len(),
            "{dir} has YAML files that are not generated CRDs"
        );
    }
}

fn assert_structural(node: &Value, path: &str) {
    let Some(object) = node.as_object() else {
        return;
    };
    let open = object.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true))
        || object.get("x-kubernetes-int-or-string") == Some(&json!(true));
    assert!(
        open || object.contains_key("type"),
        "{path} has no type: {node}"
    );
    for forbidden in ["$ref", "definitions", "$defs", "oneOf", "anyOf"] {
        assert!(!object.contains_key(forbidden), "{path} uses {forbidden}");
    }
    if let Some(properties) = object.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            assert_structural(child, &format!("{path}.{name}"));
        }
    }
    if let Some(items) = object.get("items") {
        assert_structural(items, &format!("{path}[]"));
    }
    if let Some(Value::Object(_)) = object.get("additionalProperties") {
        assert_structural(&object["additionalProperties"], &format!("{path}{{}}"));
    }
}

/// Kubernetes knows int32 and int64 integer formats; uint formats are not part of its schema
/// dialect (integers are signed 64-bit in the API), so the types must not produce them.
fn assert_known_formats(node: &Value, path: &str) {
    match node {
        Value::Object(map) => {
            if let Some(format) = map.get("format").and_then(Value::as_str) {
                assert!(
                    ["int32", "int64", "date-time", "byte", "double"].contains(&format),
                    "{path} has format {format}"
                );
            }
            for (key, child) in map {
                assert_known_formats(child, &format!("{path}.{key}"));
            }
        }
        Value::Array(list) => list.iter().for_each(|v| assert_known_formats(v, path)),
        _ => {}
    }
}

#[test]
fn schemas_use_only_formats_kubernetes_knows() {
    for (file, _) in signet_api::crds() {
        assert_known_formats(&schema_of(file), file);
    }
}

#[test]
fn schemas_are_structural_with_status_subresource() {
    for (file, crd) in signet_api::crds() {
        let version = &crd.spec.versions[0];
        assert!(version.served && version.storage, "{file}");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{file} lacks the status subresource"
        );
        let scope = if file == AUTHZ {
            "Namespaced"
        } else {
            "Cluster"
        };
        assert_eq!(crd.spec.scope, scope, "{file}");
        assert!(
            crd.spec
                .names
                .short_names
                .as_ref()
                .is_some_and(|s| !s.is_empty())
        );
        assert_structural(&schema_of(file), file);
    }
}

fn rules(node: &Value, found: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            if let Some(Value::Array(list)) = map.get("x-kubernetes-validations") {
                found.extend(
                    list.iter()
                        .filter_map(|r| r["rule"].as_str().map(str::to_owned)),
                );
            }
            map.values().for_each(|v| rules(v, found));
        }
        Value::Array(list) => list.iter().for_each(|v| rules(v, found)),
        _ => {}
    }
}

#[test]
fn every_rule_compiles_and_fits_the_cost_budget() {
    for (file, _) in signet_api::crds() {
        let schema = schema_of(file);
        let compiled = compile_schema(&schema);
        assert!(
            !compiled.has_errors(),
            "{file}: {:?}",
            compiled.compilation_errors()
        );
        let mut all = Vec::new();
        rules(&schema, &mut all);
        assert!(!all.is_empty(), "{file} has no CEL rules");
        // Cost is estimated against the node each rule sits on.
        fn walk(node: &Value, file: &str) {
            let Some(map) = node.as_object() else { return };
            if let Some(Value::Array(list)) = map.get("x-kubernetes-validations") {
                let compiled = compile_schema(node);
                for rule in list.iter().filter_map(|r| r["rule"].as_str()) {
                    let warnings: Vec<_> =
                        analyze_rule(rule, &compiled, ScopeContext::CrdValidation)
                            .into_iter()
                            // kube-cel's scope check does not know comprehension variables.
                            .filter(|w| {
                                !(w.kind == WarningKind::WrongScope && rule.contains(".all("))
                            })
                            .collect();
                    assert!(warnings.is_empty(), "{file}: {rule}: {warnings:?}");
                }
            }
            for key in ["properties"] {
                if let Some(Value::Object(children)) = map.get(key) {
                    children.values().for_each(|c| walk(c, file));
                }
            }
            if let Some(items) = map.get("items") {
                walk(items, file);
            }
        }
        walk(&schema, file);
    }
}

fn validate(file: &str, spec: Value) -> Result<(), String> {
    let object = json!({
        "apiVersion": "signet.dev/v1alpha1",
        "kind": "X",
        "metadata": {"name": "x"},
        "spec": spec,
    });
    Validator::new()
        .validate(&schema_of(file), &object, None)
        .map_err(|e| format!("{e:?}"))
}

const CSID: &str = "clusterspiffeids.yaml";
const CSE: &str = "clusterstaticentries.yaml";
const CFTD: &str = "clusterfederatedtrustdomains.yaml";
const AUTHZ: &str = "authorizationpolicies.yaml";

#[test]
fn cluster_spiffe_id_rules() {
    let good = json!({
        "spiffeIDTemplate": "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}",
        "workloadSelectorTemplates": ["k8s:ns:{{ .PodMeta.Namespace }}"],
        "ttl": "1h30m",
        "jwtTtl": "5m",
        "federatesWith": ["partner.example"],
    });
    assert_eq!(validate(CSID, good.clone()), Ok(()));
    for (field, value) in [
        ("spiffeIDTemplate", json!("https://x/{{ .PodMeta.Name }}")),
        ("ttl", json!("-1h")),
        ("ttl", json!("9000h")),
        ("ttl", json!("soon")),
        ("jwtTtl", json!("-5m")),
        ("federatesWith", json!(["Partner.Example"])),
        ("federatesWith", json!(["a b"])),
        ("workloadSelectorTemplates", json!(["no-colon"])),
    ] {
        let mut bad = good.clone();
        bad[field] = value.clone();
        assert!(validate(CSID, bad).is_err(), "{field}={value} was accepted");
    }
}

#[test]
fn cluster_static_entry_rules() {
    let good = json!({
        "spiffeID": "spiffe://example.org/vm/db-1",
        "parentID": "spiffe://example.org/signet/agent/k8s/prod/f2ababaf-ec73-4e18-8b0f-e9ffeb713507",
        "selectors": ["unix:uid:1000"],
        "x509SVIDTTL": "1h",
    });
    assert_eq!(validate(CSE, good.clone()), Ok(()));
    for (field, value) in [
        ("spiffeID", json!("spiffe://Example.org/x")),
        ("spiffeID", json!("spiffe://example.org/a/../b")),
        ("spiffeID", json!("spiffe://example.org/a/./b")),
        ("spiffeID", json!("spiffe://example.org/a/")),
        ("spiffeID", json!("spiffe://example.org/a//b")),
        ("spiffeID", json!("spiffe://example.org/a?b=c")),
        ("spiffeID", json!("spiffe://user@example.org/a")),
        ("spiffeID", json!("spiffe://example.org:443/a")),
        ("parentID", json!("http://example.org/agent")),
        ("selectors", json!(["k8s"])),
        ("selectors", json!(["K8S:ns:x"])),
        ("x509SVIDTTL", json!("-1s")),
    ] {
        let mut bad = good.clone();
        bad[field] = value.clone();
        assert!(validate(CSE, bad).is_err(), "{field}={value} was accepted");
    }
}

#[test]
fn cluster_federated_trust_domain_rules() {
    let web = json!({
        "trustDomain": "partner.example",
        "bundleEndpointURL": "https://bundle.partner.example/bundle",
        "bundleEndpointProfile": {"type": "https_web"},
    });
    let spiffe = json!({
        "trustDomain": "partner.example",
        "bundleEndpointURL": "https://10.0.0.1:8443",
        "bundleEndpointProfile": {"type": "https_spiffe", "endpointSPIFFEID": "spiffe://partner.example/signet/server"},
    });
    assert_eq!(validate(CFTD, web.clone()), Ok(()));
    assert_eq!(validate(CFTD, spiffe.clone()), Ok(()));

    let mut bad = web.clone();
    bad["bundleEndpointProfile"]["endpointSPIFFEID"] = json!("spiffe://partner.example/x");
    assert!(
        validate(CFTD, bad).is_err(),
        "https_web with endpointSPIFFEID"
    );
    let mut bad = spiffe.clone();
    bad["bundleEndpointProfile"]
        .as_object_mut()
        .unwrap()
        .remove("endpointSPIFFEID");
    assert!(
        validate(CFTD, bad).is_err(),
        "https_spiffe without endpointSPIFFEID"
    );
    for url in [
        "http://bundle.partner.example",
        "https://user:pw@bundle.partner.example/b",
        "ftp://x",
    ] {
        let mut bad = web.clone();
        bad["bundleEndpointURL"] = json!(url);
        assert!(validate(CFTD, bad).is_err(), "{url} was accepted");
    }
    let mut bad = web;
    bad["trustDomain"] = json!("Partner.Example");
    assert!(validate(CFTD, bad).is_err());
}

/// A manifest written for spire-controller-manager deserialises unchanged once its apiVersion
/// says signet.dev.
#[test]
fn spire_controller_manager_manifest_migrates_by_api_version() {
    let manifest = r#"
apiVersion: signet.dev/v1alpha1
kind: ClusterSPIFFEID
metadata:
  name: backend
spec:
  className: signet
  spiffeIDTemplate: "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}"
  podSelector:
    matchLabels:
      app: backend
  namespaceSelector:
    matchExpressions:
    - {key: kubernetes.io/metadata.name, operator: In, values: [prod, staging]}
  workloadSelectorTemplates:
  - "k8s:ns:{{ .PodMeta.Namespace }}"
  dnsNameTemplates:
  - "{{ .PodMeta.Name }}.{{ .PodMeta.Namespace }}.svc"
  autoPopulateDNSNames: true
  ttl: 1h
  jwtTtl: 5m
  federatesWith: [partner.example]
  admin: false
  downstream: false
  hint: backend
  fallback: false
"#;
    let csid: signet_api::ClusterSPIFFEID = serde_yaml::from_str(manifest).unwrap();
    assert_eq!(csid.spec.ttl.as_deref(), Some("1h"));
    assert_eq!(csid.spec.jwt_ttl.as_deref(), Some("5m"));
    assert!(csid.spec.auto_populate_dns_names);
    assert_eq!(csid.spec.hint.as_deref(), Some("backend"));
    assert_eq!(csid.spec.class_name.as_deref(), Some("signet"));
    let object = serde_json::to_value(&csid).unwrap();
    assert_eq!(
        Validator::new()
            .validate(&schema_of(CSID), &object, None)
            .map_err(|e| format!("{e:?}")),
        Ok(())
    );
}

#[test]
fn authorization_policy_rules() {
    let good = json!({
        "selector": {"matchLabels": {"app": "inventory"}},
        "action": "ALLOW",
        "enforcement": "DryRun",
        "rules": [{
            "from": [{
                "spiffeIDs": ["spiffe://td/ns/frontend/sa/*", "spiffe://td/ns/jobs/**"],
                "notSpiffeIDs": ["spiffe://td/ns/frontend/sa/debug"],
                "trustDomains": ["td", "partner.example"],
                "namespaces": ["frontend"],
            }],
            "to": [{"ports": [8443], "methods": ["GET", "POST"], "paths": ["/inventory/*", "*.json", "/healthz", "*"], "notPaths": ["/inventory/admin/*"]}],
        }],
    });
    assert_eq!(validate(AUTHZ, good.clone()), Ok(()));
    assert_eq!(
        validate(AUTHZ, json!({})),
        Ok(()),
        "all pods of the namespace, no rules"
    );
    assert_eq!(
        validate(
            AUTHZ,
            json!({"targetSPIFFEIDs": ["spiffe://td/ns/a/sa/b"], "action": "DENY", "rules": [{}]})
        ),
        Ok(())
    );
    let from = |value: Value| {
        let mut spec = good.clone();
        spec["rules"][0]["from"][0] = value;
        spec
    };
    let to = |value: Value| {
        let mut spec = good.clone();
        spec["rules"][0]["to"][0] = value;
        spec
    };
    for (name, bad) in [
        (
            "both targets",
            json!({"selector": {}, "targetSPIFFEIDs": ["spiffe://td/x"]}),
        ),
        (
            "partial wildcard",
            from(json!({"spiffeIDs": ["spiffe://td/ns/front*"]})),
        ),
        (
            "** not last",
            from(json!({"spiffeIDs": ["spiffe://td/**/sa/x"]})),
        ),
        ("not a SPIFFE ID", from(json!({"spiffeIDs": ["td/ns/a"]}))),
        (
            "dot segment",
            from(json!({"notSpiffeIDs": ["spiffe://td/ns/../x"]})),
        ),
        (
            "upper-case trust domain",
            from(json!({"trustDomains": ["TD"]})),
        ),
        ("bad namespace", from(json!({"namespaces": ["Front_End"]}))),
        ("lower-case method", to(json!({"methods": ["get"]}))),
        ("relative path", to(json!({"paths": ["inventory"]}))),
        ("inner star", to(json!({"paths": ["/a/*/b"]}))),
        ("two stars", to(json!({"notPaths": ["*a*"]}))),
        ("bad target", json!({"targetSPIFFEIDs": ["spiffe://td/a*"]})),
    ] {
        assert!(
            validate(AUTHZ, bad.clone()).is_err(),
            "{name}: {bad} was accepted"
        );
    }
    // Enums and ranges are OpenAPI validation (the API server's, not CEL): check the schema.
    let schema = schema_of(AUTHZ);
    let spec = &schema["properties"]["spec"]["properties"];
    assert_eq!(spec["action"]["enum"], json!(["ALLOW", "DENY", "AUDIT"]));
    assert_eq!(spec["enforcement"]["enum"], json!(["Enforce", "DryRun"]));
    let port = &spec["rules"]["items"]["properties"]["to"]["items"]["properties"]["ports"]["items"];
    assert_eq!(
        (port["minimum"].as_f64(), port["maximum"].as_f64()),
        (Some(1.0), Some(65535.0))
    );
    assert_eq!(
        port["format"],
        json!("int32"),
        "a format the API server knows"
    );
}
