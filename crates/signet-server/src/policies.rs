//! AuthorizationPolicies on the server: the live policy set every agent receives (fed by the
//! admin API from SQLite in standalone mode, by the controller in Kubernetes mode), and the
//! reading of applied YAML documents.

use std::sync::Arc;

use signet_api::AuthorizationPolicy;
use signet_core::policy::{CompiledPolicy, PolicyTarget, compile};
use signet_core::policy::{DefaultPolicy, PolicyBinding, PolicySet};
use tokio::sync::watch;

/// The live policy set; a change wakes every agent's sync stream. It is empty (`None`) until its
/// source loaded completely: agents keep their last set rather than receive a partial or
/// empty one while the server starts.
#[derive(Debug)]
pub struct PolicyStore {
    default_policy: DefaultPolicy,
    set: watch::Sender<Option<Arc<PolicySet>>>,
    /// Serialises admin writes (store, then reload) so concurrent ones cannot publish out of order.
    writes: tokio::sync::Mutex<()>,
}

impl PolicyStore {
    /// A store not loaded yet, with the cluster's default policy.
    pub fn new(default_policy: DefaultPolicy) -> Self {
        Self {
            default_policy,
            set: watch::channel(None).0,
            writes: tokio::sync::Mutex::new(()),
        }
    }

    /// Replaces every binding (the first call marks the store loaded); agents are woken only if
    /// something changed.
    pub fn replace(&self, bindings: Vec<PolicyBinding>) {
        let mut next = PolicySet {
            default_policy: self.default_policy,
            bindings,
        };
        next.normalize();
        self.set.send_if_modified(|current| {
            if current.as_deref() == Some(&next) {
                return false;
            }
            *current = Some(Arc::new(next));
            true
        });
    }

    /// The set right now; `None` until loaded.
    pub fn current(&self) -> Option<Arc<PolicySet>> {
        self.set.borrow().clone()
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<PolicySet>>> {
        self.set.subscribe()
    }

    /// Held by an admin write from its database change to its reload.
    pub async fn write_guard(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writes.lock().await
    }
}

/// One policy read from an applied document, compiled and ready to store.
#[derive(Debug, Clone)]
pub struct AppliedPolicy {
    pub namespace: String,
    pub name: String,
    /// The resource as JSON (what SQLite keeps).
    pub document: String,
    pub compiled: CompiledPolicy,
}

impl AppliedPolicy {
    /// The binding agents receive. Standalone policies only target SPIFFE IDs.
    pub fn binding(&self) -> Option<PolicyBinding> {
        match &self.compiled.target {
            PolicyTarget::SpiffeIds(targets) => Some(PolicyBinding {
                policy: self.compiled.policy.clone(),
                targets: targets.clone(),
            }),
            PolicyTarget::Pods(_) => None,
        }
    }
}

const API_VERSION: &str = "signet.dev/v1alpha1";
const KIND: &str = "AuthorizationPolicy";
/// The namespace of a standalone policy that names none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Upper bound on an applied document (many policies fit easily).
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Deepest nesting of `[`/`{` accepted in a document (a policy needs about six). The YAML parser's
/// cost grows with the square of the nesting: 200 KB of `[` took 28 CPU-seconds.
pub const MAX_NESTING: usize = 32;

/// The flow-collection depth of `text` if it exceeds `limit`. It errs towards counting too deep,
/// never too shallow: every `[`/`{` counts, a `]`/`}` only outside what looks like a quoted
/// string or a comment (so closers hidden in a string cannot mask real nesting, and an apostrophe
/// in a plain scalar at worst makes a harmless document look deeper).
fn flow_nesting_beyond(text: &str, limit: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut quote: Option<char> = None;
    let mut comment = false;
    // After a backslash in a double-quoted string: the next character is escaped (`\"` does
    // not end the string).
    let mut escaped = false;
    for c in text.chars() {
        if matches!(c, '[' | '{') {
            depth += 1;
            deepest = deepest.max(depth);
            escaped = false;
            continue;
        }
        match quote {
            _ if comment => comment = c != '\n',
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '#' => comment = true,
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
    }
    (deepest > limit).then_some(deepest)
}

/// Reads every AuthorizationPolicy of a YAML (or JSON) text of one or more documents, for
/// standalone mode. Every problem of every document is reported, each prefixed with the
/// document's position and name; nothing is returned unless all are valid.
pub fn read_documents(text: &str) -> Result<Vec<AppliedPolicy>, Vec<String>> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(vec![format!(
            "the document is {} bytes; at most {MAX_DOCUMENT_BYTES} are accepted",
            text.len()
        )]);
    }
    if let Some(depth) = flow_nesting_beyond(text, MAX_NESTING) {
        return Err(vec![format!(
            "the document nests {depth} levels of [ or {{; at most {MAX_NESTING} are accepted"
        )]);
    }
    let mut errors = Vec::new();
    let mut policies: Vec<AppliedPolicy> = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let position = format!("document {}", index + 1);
        let value = match serde_yaml::Value::deserialize_from(document) {
            Ok(serde_yaml::Value::Null) => continue,
            Ok(value) => value,
            Err(e) => {
                // The document iterator cannot resynchronise after a syntax error (it would
                // report the same error forever).
                errors.push(format!("{position}: not YAML: {e}"));
                break;
            }
        };
        match read_one(value) {
            Ok(policy) => {
                if policies
                    .iter()
                    .any(|p| p.namespace == policy.namespace && p.name == policy.name)
                {
                    errors.push(format!(
                        "{position}: {}/{} appears twice",
                        policy.namespace, policy.name
                    ));
                } else {
                    policies.push(policy);
                }
            }
            Err(problems) => errors.extend(
                problems
                    .into_iter()
                    .map(|problem| format!("{position}: {problem}")),
            ),
        }
    }
    if errors.is_empty() && policies.is_empty() {
        errors.push("the document holds no AuthorizationPolicy".to_owned());
    }
    if errors.is_empty() {
        Ok(policies)
    } else {
        Err(errors)
    }
}

trait DeserializeFrom: Sized {
    fn deserialize_from(document: serde_yaml::Deserializer<'_>) -> Result<Self, serde_yaml::Error>;
}

impl DeserializeFrom for serde_yaml::Value {
    fn deserialize_from(document: serde_yaml::Deserializer<'_>) -> Result<Self, serde_yaml::Error> {
        serde::Deserialize::deserialize(document)
    }
}

fn read_one(value: serde_yaml::Value) -> Result<AppliedPolicy, Vec<String>> {
    let field = |name: &str| value.get(name).and_then(serde_yaml::Value::as_str);
    if field("apiVersion") != Some(API_VERSION) || field("kind") != Some(KIND) {
        return Err(vec![format!(
            "expected apiVersion {API_VERSION} and kind {KIND}, found {} {}",
            field("apiVersion").unwrap_or("(none)"),
            field("kind").unwrap_or("(none)")
        )]);
    }
    let resource: AuthorizationPolicy = serde_yaml::from_value(value)
        .map_err(|e| vec![format!("not an AuthorizationPolicy: {e}")])?;
    let name = resource.metadata.name.clone().unwrap_or_default();
    let namespace = resource
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    let mut errors = Vec::new();
    for (what, value) in [("metadata.name", &name), ("metadata.namespace", &namespace)] {
        if let Err(reason) = check_object_name(value) {
            errors.push(format!("{what} {}: {reason}", quoted(value)));
        }
    }
    if !errors.is_empty() {
        // Later messages name the policy; an unusable name is not repeated in each.
        return Err(errors);
    }
    let compiled = compile(&namespace, &name, &(&resource.spec).into()).map_err(|problems| {
        problems
            .into_iter()
            .map(|p| format!("{namespace}/{name}: spec.{p}"))
            .collect::<Vec<_>>()
    });
    let compiled = match compiled {
        Ok(compiled) => Some(compiled),
        Err(problems) => {
            errors.extend(problems);
            None
        }
    };
    if let Some(CompiledPolicy {
        target: PolicyTarget::Pods(_),
        ..
    }) = &compiled
    {
        errors.push(format!(
            "{namespace}/{name}: spec.selector: pod selectors need Kubernetes mode; \
             target workloads with spec.targetSPIFFEIDs"
        ));
    }
    let document = serde_json::to_string(&AuthorizationPolicy {
        metadata: kube_metadata(&namespace, &name),
        spec: resource.spec,
        status: None,
    })
    .map_err(|e| vec![format!("cannot encode {namespace}/{name}: {e}")])?;
    match compiled {
        Some(compiled) if errors.is_empty() => Ok(AppliedPolicy {
            namespace,
            name,
            document,
            compiled,
        }),
        _ => Err(errors),
    }
}

fn kube_metadata(
    namespace: &str,
    name: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        ..Default::default()
    }
}

/// `value` quoted for an error message, cut to 64 characters: messages travel back in gRPC
/// headers, which clients limit to 16 KiB.
fn quoted(value: &str) -> String {
    const SHOWN: usize = 64;
    if value.chars().count() <= SHOWN {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(SHOWN).collect();
        format!("{head:?}… ({} bytes)", value.len())
    }
}

/// Kubernetes object name rules (RFC 1123 label: what both names must be to move the same
/// YAML to a cluster unchanged).
pub fn check_object_name(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("is required");
    }
    if value.len() > 63 {
        return Err("must be at most 63 characters");
    }
    let bytes = value.as_bytes();
    let edge_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes
        .iter()
        .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || !edge_ok(bytes[0])
        || !edge_ok(bytes[bytes.len() - 1])
    {
        return Err("must be lower-case letters, digits and '-', starting and ending alphanumeric");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW: &str = "
apiVersion: signet.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-readers}
spec:
  targetSPIFFEIDs: [spiffe://example.org/api]
  action: ALLOW
  rules:
  - from: [{spiffeIDs: [spiffe://example.org/web/*]}]
    to: [{ports: [8443], methods: [GET], paths: [/items/*]}]
";

    #[test]
    fn a_standalone_policy_compiles_into_a_binding_in_the_default_namespace() {
        let policies = read_documents(ALLOW).unwrap();
        assert_eq!(policies.len(), 1);
        assert_eq!(policies[0].namespace, "default");
        let binding = policies[0].binding().unwrap();
        assert_eq!(binding.targets[0].to_string(), "spiffe://example.org/api");
        assert!(policies[0].document.contains("\"namespace\":\"default\""));
    }

    #[test]
    fn every_problem_of_every_document_is_reported() {
        let text = format!(
            "{ALLOW}---\napiVersion: v1\nkind: ConfigMap\n---\n{}\n---\n{}",
            ALLOW.replace("api-readers", "Bad_Name"),
            ALLOW.replace("api-readers", "by-selector").replace(
                "targetSPIFFEIDs: [spiffe://example.org/api]",
                "selector: {}"
            )
        );
        let errors = read_documents(&text).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("document 2: expected apiVersion"))
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("document 3: metadata.name"))
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("pod selectors need Kubernetes mode"))
        );
    }

    #[test]
    fn hostile_documents_are_refused() {
        let cases = [
            ALLOW.replace("/items/*", "/items/../admin"),
            ALLOW.replace("spiffe://example.org/web/*", "spiffe://example.org/w*b"),
            ALLOW.replace("[8443]", "[70000]"),
            ALLOW.replace("action: ALLOW", "action: PERMIT"),
            format!("{ALLOW}---\n{ALLOW}"),
            "".to_owned(),
            "{not yaml".to_owned(),
            "x".repeat(MAX_DOCUMENT_BYTES + 1),
        ];
        for case in cases {
            assert!(read_documents(&case).is_err(), "accepted:\n{case}");
        }
    }

    #[test]
    fn the_store_wakes_subscribers_only_on_change() {
        let store = PolicyStore::new(DefaultPolicy::Deny);
        let mut rx = store.subscribe();
        assert!(store.current().is_none(), "not loaded yet");
        store.replace(vec![]);
        assert!(
            rx.has_changed().unwrap(),
            "loading, even empty, is a change"
        );
        rx.borrow_and_update();
        let binding = read_documents(ALLOW).unwrap()[0].binding().unwrap();
        store.replace(vec![binding.clone()]);
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        store.replace(vec![binding]);
        assert!(!rx.has_changed().unwrap());
        assert_eq!(store.current().unwrap().default_policy, DefaultPolicy::Deny);
    }
}

#[cfg(test)]
mod nesting_tests {
    use super::*;

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let bomb = "[".repeat(200_000);
        let start = std::time::Instant::now();
        let errors = read_documents(&bomb).unwrap_err();
        assert!(errors[0].contains("nests 200000 levels"), "{errors:?}");
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        // Closers hidden in strings do not mask real nesting.
        let masked = "[[[[ \"]]]]\" ".repeat(20);
        assert!(flow_nesting_beyond(&masked, MAX_NESTING).is_some());
        // Nor do closers after an escaped quote, which does not end the string.
        let escaped = "[[[[ \"\\\"]]]]\" ".repeat(20);
        assert_eq!(escaped.matches('[').count(), 80);
        assert!(
            flow_nesting_beyond(&escaped, MAX_NESTING).is_some(),
            "{escaped}"
        );
        // An escaped backslash does end before the quote.
        let ends = "[\"a\\\\\"]";
        assert_eq!(flow_nesting_beyond(ends, 0), Some(1));
        // An ordinary document passes.
        let normal = "spec: {rules: [{from: [{spiffeIDs: ['spiffe://td/a']}]}]}  # [x]\n";
        assert_eq!(flow_nesting_beyond(normal, MAX_NESTING), None);
    }
}
