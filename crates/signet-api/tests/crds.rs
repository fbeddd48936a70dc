//! The committed CRDs match the types, are structural, and their CEL rules compile, stay within
//! the API server's cost budget (estimated as kube-apiserver estimates it, see `cel_cost`) and
//! accept/refuse what they should (evaluated with kube-cel, the Kubernetes CEL library, against
//! the generated schema itself).

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

mod cel_cost;

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

/// The schema of `crds/authorizationpolicies.yaml` as it was when a real v1.36 API server refused
/// it, and the API server's answer, word for word.
const REFUSED_SCHEMA: &str = include_str!("fixtures/authorizationpolicies-refused-by-v1.36.yaml");
const REFUSED_ANSWER: &str = include_str!("fixtures/authorizationpolicies-refused-by-v1.36.txt");

fn schema_of_yaml(yaml: &str) -> Value {
    let crd: Value = serde_yaml::from_str(yaml).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn the_cost_model_refuses_what_a_real_api_server_refused_with_its_words() {
    let expected: std::collections::BTreeSet<String> = REFUSED_ANSWER
        .lines()
        .filter_map(|line| line.strip_prefix("* "))
        .map(str::to_owned)
        .collect();
    assert_eq!(expected.len(), 11, "the fixture holds eleven refusals");
    let refusals: std::collections::BTreeSet<String> =
        cel_cost::refusals(&schema_of_yaml(REFUSED_SCHEMA))
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(refusals, expected);
}

#[test]
fn every_crd_fits_the_api_servers_cost_budget() {
    for (file, _) in signet_api::crds() {
        let schema = schema_of(file);
        let refusals = cel_cost::refusals(&schema).unwrap();
        assert!(
            refusals.is_empty(),
            "{file} would be refused by the API server:\n{}",
            refusals.join("\n")
        );
        let costs = cel_cost::schema_costs(&schema).unwrap();
        let total: u64 = costs.iter().map(|r| r.cost).sum();
        for rule in &costs {
            println!("{file}: {} {} ({})", rule.cost, rule.path, rule.rule);
        }
        println!(
            "{file}: total {total} of {} ({:.2} %)",
            cel_cost::SCHEMA_LIMIT,
            total as f64 * 100.0 / cel_cost::SCHEMA_LIMIT as f64
        );
    }
}

#[test]
fn the_cost_model_prices_what_the_api_server_prices() {
    // One string of maxLength 63 (252 bytes) against a 31-character regex: ⌈25.3⌉ × ⌈7.75⌉ + 1.
    let string = json!({"type": "string", "maxLength": 63});
    assert_eq!(
        cel_cost::rule_cost("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')", &string),
        Ok(26 * 8 + 1)
    );
    // all() over 64 such strings: 2 (range and result) + 64 × (2 (condition) + 1 + the step).
    let list = json!({"type": "array", "maxItems": 64, "items": string});
    assert_eq!(
        cel_cost::rule_cost(
            "self.all(n, n.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))",
            &list
        ),
        Ok(2 + 64 * (2 + 1 + 26 * 8 + 1))
    );
    // An unbounded string is as long as a 3 MiB request allows (minus its quotes).
    let open = json!({"type": "string"});
    assert_eq!(
        cel_cost::rule_cost("self.matches('^a+$')", &open),
        Ok(314_573 + 1)
    );
    // Durations compare at once; strings are traversed.
    assert_eq!(
        cel_cost::rule_cost("duration(self) <= duration('8760h')", &string),
        Ok(1 + 2 + 1)
    );
    assert_eq!(cel_cost::rule_cost("self == 'abc'", &string), Ok(1 + 1));
    // A function it does not know is an error, never a guess.
    assert!(cel_cost::rule_cost("self.lowerAscii() == 'a'", &string).is_err());
}

#[test]
fn every_rule_compiles() {
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
        // kube-cel's own analysis of each rule on its node (the API server's budget is checked
        // by every_crd_fits_the_api_servers_cost_budget).
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

/// Every refused TTL gets the rule's own message, unparsable ones too (a bare `duration()` fails
/// to evaluate on them and the API server answers "type conversion error" instead).
#[test]
fn ttls_are_refused_with_the_rules_message() {
    let spec = |ttl: &str| json!({"spiffeIDTemplate": "spiffe://td/x", "ttl": ttl});
    for ok in [
        "0", "0s", "1h", "1h30m", "90m", "1.5h", "8760h", "500ms", "99999s", "10us",
    ] {
        assert_eq!(validate(CSID, spec(ok)), Ok(()), "{ok}");
    }
    for bad in [
        "soon",
        "-5m",
        "9000h",
        "8760h1s",
        "1y",
        "1h-5m",
        "",
        "h",
        "1.h",
        "+1h",
        "1H",
        "100000h",
        "99999h99999h99999h99999h99999h",
    ] {
        let error = validate(CSID, spec(bad)).expect_err(bad);
        assert!(
            error.contains(signet_api::cel::TTL_MESSAGE) && !error.contains("conversion"),
            "{bad}: {error}"
        );
    }
    // No value the rule matches can make duration() fail: the largest 32-character value is
    // far below the overflow of Go durations (2,562,047 h).
    let largest = "99999h".repeat(5);
    assert!(largest.len() <= 32 && 5 * 99_999 < 2_562_047);
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
    assert!(
        validate(
            AUTHZ,
            json!({"selector": {}, "targetSPIFFEIDs": ["spiffe://td/x"]})
        )
        .is_err(),
        "both targets"
    );
    // Value syntax is OpenAPI `pattern` (no CEL cost): the API server matches it with Go's RE2,
    // which the regex crate's syntax agrees with for these expressions.
    let schema = schema_of(AUTHZ);
    let spec = &schema["properties"]["spec"]["properties"];
    let from = &spec["rules"]["items"]["properties"]["from"]["items"]["properties"];
    let to = &spec["rules"]["items"]["properties"]["to"]["items"]["properties"];
    let accepts = |field: &Value, value: &str| {
        let items = &field["items"];
        let pattern = regex::Regex::new(items["pattern"].as_str().unwrap()).unwrap();
        let length = value.chars().count() as u64;
        pattern.is_match(value)
            && items["minLength"].as_u64().is_none_or(|min| length >= min)
            && items["maxLength"].as_u64().is_none_or(|max| length <= max)
    };
    for (field, value) in [
        (&spec["targetSPIFFEIDs"], "spiffe://td/ns/a/sa/b"),
        (&from["spiffeIDs"], "spiffe://td/ns/frontend/sa/*"),
        (&from["spiffeIDs"], "spiffe://td/ns/jobs/**"),
        (&from["spiffeIDs"], "spiffe://td/*/x/**"),
        (&from["spiffeIDs"], "spiffe://td/.well-known/x"),
        (&from["spiffeIDs"], "spiffe://td/.../x"),
        (&from["notSpiffeIDs"], "spiffe://td/ns/frontend/sa/debug"),
        (&from["trustDomains"], "partner.example"),
        (&from["namespaces"], "front-end"),
        (&to["methods"], "GET"),
        (&to["paths"], "/inventory/*"),
        (&to["paths"], "*.json"),
        (&to["paths"], "/healthz"),
        (&to["paths"], "*"),
        (&to["notPaths"], "/inventory/admin/*"),
    ] {
        assert!(accepts(field, value), "{value} was refused");
    }
    for (name, field, value) in [
        (
            "partial wildcard",
            &from["spiffeIDs"],
            "spiffe://td/ns/front*",
        ),
        ("** not last", &from["spiffeIDs"], "spiffe://td/**/sa/x"),
        ("***", &from["spiffeIDs"], "spiffe://td/ns/***"),
        ("not a SPIFFE ID", &from["spiffeIDs"], "td/ns/a/sa/bcd"),
        ("dot segment", &from["notSpiffeIDs"], "spiffe://td/ns/../x"),
        ("single dot", &from["notSpiffeIDs"], "spiffe://td/ns/./x"),
        ("trailing dots", &from["spiffeIDs"], "spiffe://td/ns/.."),
        ("empty segment", &from["spiffeIDs"], "spiffe://td/ns//x"),
        ("trailing slash", &from["spiffeIDs"], "spiffe://td/ns/"),
        (
            "upper-case trust domain",
            &from["spiffeIDs"],
            "spiffe://TD/ns/x",
        ),
        ("query", &from["spiffeIDs"], "spiffe://td/ns/x?y"),
        ("bad target", &spec["targetSPIFFEIDs"], "spiffe://td/a*"),
        ("upper-case trust domain", &from["trustDomains"], "TD"),
        ("space in trust domain", &from["trustDomains"], "a b"),
        ("bad namespace", &from["namespaces"], "Front_End"),
        ("namespace ending in -", &from["namespaces"], "front-"),
        ("long namespace", &from["namespaces"], &"a".repeat(64)),
        ("lower-case method", &to["methods"], "get"),
        ("relative path", &to["paths"], "inventory"),
        ("inner star", &to["paths"], "/a/*/b"),
        ("two stars", &to["notPaths"], "*a*"),
        ("empty path", &to["paths"], ""),
    ] {
        assert!(!accepts(field, value), "{name}: {value} was accepted");
    }
    // Enums and ranges are OpenAPI validation (the API server's, not CEL): check the schema.
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
