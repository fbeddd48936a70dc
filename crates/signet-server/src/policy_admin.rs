//! The admin API's policy calls: apply, list and delete standalone AuthorizationPolicies, and
//! explain a decision from the live policy set.

use signet_core::policy::PolicyTarget;
use signet_core::policy::{
    self, HttpRequest, Outcome, PolicyBinding, PolicySet, Request, TrustContext, normalize_path,
};
use signet_proto::admin as pb;
use signet_proto::authz;
use signet_spiffe::{SpiffeId, TrustDomain};
use tonic::Status;
use tracing::{error, info};

use crate::datastore::{Datastore, PolicyWrite};
use crate::error::ServerError;
use crate::policies::{AppliedPolicy, PolicyStore, read_documents};

fn refuse_in_kubernetes(kubernetes: bool) -> Result<(), Status> {
    if kubernetes {
        return Err(Status::failed_precondition(
            "in Kubernetes mode AuthorizationPolicies are resources: use kubectl apply/delete",
        ));
    }
    Ok(())
}

/// Reloads the live set from SQLite (start-up and after every change).
///
/// Stored documents passed the same checks when applied. One that no longer compiles (written
/// by another version, or edited in the database) fails closed exactly as an invalid resource
/// does in Kubernetes: an enforced DENY denies everything to its targets, an enforced ALLOW admits
/// nothing to them. One whose targets cannot even be read leaves the whole set unpublished (agents
/// keep what they had; a proxy that never had a set stays not ready) until it is fixed or deleted:
/// serving the others would fall back to the default policy for its targets.
pub async fn load_standalone(
    datastore: &Datastore,
    store: &PolicyStore,
) -> Result<Loaded, ServerError> {
    let stored = datastore.list_policies().await?;
    let mut bindings = Vec::with_capacity(stored.len());
    let mut unreadable = Vec::new();
    for row in &stored {
        let policy = format!("{}/{}", row.namespace, row.name);
        match read_documents(&row.document) {
            Ok(mut policies) if policies.len() == 1 => {
                if let Some(binding) = policies.remove(0).binding() {
                    bindings.push(binding);
                }
            }
            outcome => {
                let errors = outcome
                    .err()
                    .unwrap_or_else(|| vec!["several documents".into()]);
                match stored_fail_closed(row) {
                    Some(binding) => {
                        error!(%policy, ?errors, "stored policy no longer compiles: it fails closed for its targets (an enforced DENY denies everything, an ALLOW admits nothing) until it is applied again or deleted");
                        bindings.extend(binding);
                    }
                    None => {
                        error!(%policy, ?errors, "stored policy cannot be read, so its targets are unknown: no policy set is published until it is applied again or deleted (signet policy delete)");
                        unreadable.push(policy);
                    }
                }
            }
        }
    }
    if !unreadable.is_empty() {
        return Ok(Loaded::Withheld(unreadable));
    }
    let count = bindings.len();
    store.replace(bindings);
    Ok(Loaded::Published(count))
}

/// Longest status message sent back: it travels in a gRPC header, and clients refuse header
/// blocks over 16 KiB with a bare protocol error instead of showing it.
const MAX_MESSAGE_BYTES: usize = 8 * 1024;

/// `message`, cut at [`MAX_MESSAGE_BYTES`] (on a character boundary) with a note of the rest.
fn bounded_message(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.to_owned();
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} more bytes of errors not shown)",
        &message[..end],
        message.len() - end
    )
}

/// What loading the stored policies did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// A policy set of this many bindings is live.
    Published(usize),
    /// Nothing new was published: these stored policies (`namespace/name`) cannot be read, so
    /// their targets are unknown.
    Withheld(Vec<String>),
}

impl Loaded {
    /// After a change the operator asked for: success only when the set is live.
    fn into_status(self, change: &str) -> Result<(), Status> {
        match self {
            Loaded::Published(_) => Ok(()),
            Loaded::Withheld(unreadable) => Err(Status::failed_precondition(format!(
                "{change}, but the policy set is not published: stored polic{} {} cannot be read. \
                 Apply {} again or delete {} (signet policy delete)",
                if unreadable.len() == 1 { "y" } else { "ies" },
                unreadable.join(", "),
                if unreadable.len() == 1 { "it" } else { "them" },
                if unreadable.len() == 1 { "it" } else { "them" },
            ))),
        }
    }
}

/// The fail-closed binding of a stored policy that no longer compiles: `Some(None)` when it binds
/// nothing (AUDIT, DryRun), `None` when not even its action and targets can be read.
fn stored_fail_closed(row: &crate::datastore::StoredPolicy) -> Option<Option<PolicyBinding>> {
    let resource: signet_api::AuthorizationPolicy = serde_json::from_str(&row.document).ok()?;
    if resource.spec.enforcement != signet_api::PolicyEnforcement::Enforce
        || resource.spec.action == signet_api::PolicyAction::Audit
    {
        return Some(None);
    }
    let compiled =
        signet_core::policy::fail_closed(&row.namespace, &row.name, &(&resource.spec).into())?;
    match compiled.target {
        PolicyTarget::SpiffeIds(targets) => Some(Some(PolicyBinding {
            policy: compiled.policy,
            targets,
        })),
        PolicyTarget::Pods(_) => None,
    }
}

fn warnings(policy: &AppliedPolicy, local: &TrustDomain) -> Vec<String> {
    signet_core::policy::unknown_trust_domains(
        &policy.compiled,
        std::slice::from_ref(local),
    )
    .into_iter()
    .map(|td| {
        format!(
            "trust domain {td} is neither this server's nor federated: rules naming it never match"
        )
    })
    .collect()
}

pub async fn apply(
    kubernetes: bool,
    datastore: Option<&Datastore>,
    store: &PolicyStore,
    local: &TrustDomain,
    request: pb::ApplyPoliciesRequest,
) -> Result<pb::ApplyPoliciesResponse, Status> {
    refuse_in_kubernetes(kubernetes)?;
    let datastore = datastore.ok_or_else(|| Status::internal("no datastore"))?;
    let _serialised = store.write_guard().await;
    // Parsing is CPU work bounded by size and nesting; it stays off the async runtime.
    let document = request.document.clone();
    let policies = tokio::task::spawn_blocking(move || read_documents(&document))
        .await
        .map_err(|_| Status::internal("reading the policy document failed"))?
        .map_err(|errors| Status::invalid_argument(bounded_message(&errors.join("\n"))))?;
    let outcomes: Vec<&str> = if request.dry_run {
        vec!["valid"; policies.len()]
    } else {
        let rows = policies
            .iter()
            .map(|p| (p.namespace.clone(), p.name.clone(), p.document.clone()))
            .collect();
        let writes = datastore
            .put_policies(rows)
            .await
            .map_err(ServerError::from)?;
        load_standalone(datastore, store)
            .await?
            .into_status("the policies were stored")?;
        writes
            .into_iter()
            .map(|w| match w {
                PolicyWrite::Created => "created",
                PolicyWrite::Configured => "configured",
                PolicyWrite::Unchanged => "unchanged",
            })
            .collect()
    };
    let applied = policies
        .iter()
        .zip(outcomes)
        .map(|(policy, outcome)| {
            if outcome != "valid" && outcome != "unchanged" {
                info!(policy = %policy.compiled.policy.id, outcome, "authorization policy applied");
            }
            pb::AppliedPolicy {
                namespace: policy.namespace.clone(),
                name: policy.name.clone(),
                outcome: outcome.to_owned(),
                warnings: warnings(policy, local),
            }
        })
        .collect();
    Ok(pb::ApplyPoliciesResponse { applied })
}

pub async fn delete(
    kubernetes: bool,
    datastore: Option<&Datastore>,
    store: &PolicyStore,
    request: pb::DeletePolicyRequest,
) -> Result<pb::DeletePolicyResponse, Status> {
    refuse_in_kubernetes(kubernetes)?;
    let datastore = datastore.ok_or_else(|| Status::internal("no datastore"))?;
    let _serialised = store.write_guard().await;
    let namespace = if request.namespace.is_empty() {
        crate::policies::DEFAULT_NAMESPACE.to_owned()
    } else {
        request.namespace
    };
    // Checked before use, and never echoed: a 100 KB name quoted back in the status would not
    // fit the client's header limit and reach it as a bare protocol error.
    for (what, value) in [("namespace", &namespace), ("name", &request.name)] {
        crate::policies::check_object_name(value)
            .map_err(|reason| Status::invalid_argument(format!("policy {what}: {reason}")))?;
    }
    if !datastore
        .delete_policy(namespace.clone(), request.name.clone())
        .await
        .map_err(ServerError::from)?
    {
        return Err(Status::not_found(format!(
            "no AuthorizationPolicy {namespace}/{}",
            request.name
        )));
    }
    info!(policy = %format!("{namespace}/{}", request.name), "authorization policy deleted");
    load_standalone(datastore, store)
        .await?
        .into_status("the policy was deleted")?;
    Ok(pb::DeletePolicyResponse {})
}

pub fn list(store: &PolicyStore) -> Result<pb::ListPoliciesResponse, Status> {
    let set = store.current().ok_or_else(|| {
        Status::unavailable("the AuthorizationPolicies are not loaded yet; retry")
    })?;
    let wire = authz::PolicySet::from(set.as_ref());
    Ok(pb::ListPoliciesResponse {
        default_policy: wire.default_policy,
        policies: wire.bindings,
    })
}

fn parse_id(field: &str, raw: &str) -> Result<SpiffeId, Status> {
    SpiffeId::new(raw).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

/// The identities of the pod `namespace/name` (Kubernetes mode): the SPIFFE IDs of the entries
/// the controller made for its UID.
pub async fn pod_identities(
    client: &kube::Client,
    entries: &crate::index::EntryIndex,
    target: &str,
) -> Result<Vec<SpiffeId>, Status> {
    let (namespace, name) = target
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .ok_or_else(|| {
            Status::invalid_argument("to: give a SPIFFE ID or, in Kubernetes mode, namespace/pod")
        })?;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(client.clone(), namespace);
    let pod = pods
        .get_opt(name)
        .await
        .map_err(|e| Status::unavailable(format!("cannot read pod {namespace}/{name}: {e}")))?;
    let uid = pod
        .and_then(|p| p.metadata.uid)
        .ok_or_else(|| Status::not_found(format!("no pod {namespace}/{name}")))?;
    let selector = signet_core::k8s_selectors::workload::pod_uid(&uid)
        .map_err(|_| Status::not_found(format!("pod {namespace}/{name} has an unusable uid")))?;
    let mut ids: Vec<SpiffeId> = Vec::new();
    for entry in entries.all() {
        if entry.selectors.iter().any(|s| *s == selector) && !ids.contains(&entry.spiffe_id) {
            ids.push(entry.spiffe_id.clone());
        }
    }
    if ids.is_empty() {
        return Err(Status::failed_precondition(format!(
            "pod {namespace}/{name} has no identity (no ClusterSPIFFEID selects it)"
        )));
    }
    Ok(ids)
}

/// Evaluates one request against `set` as the target's enforcement point would; `targets` are
/// the target workload's identities (its SPIFFE ID, or every ID of a pod).
pub fn check(
    set: &PolicySet,
    local: &TrustDomain,
    targets: &[SpiffeId],
    request: &pb::CheckAuthorizationRequest,
) -> Result<pb::CheckAuthorizationResponse, Status> {
    let peer = (!request.from.is_empty())
        .then(|| parse_id("from", &request.from))
        .transpose()?;
    let port = u16::try_from(request.port)
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| Status::invalid_argument("port must be 1-65535"))?;
    let path = match (request.method.is_empty(), request.path.is_empty()) {
        (true, true) => None,
        (false, false) => Some(
            normalize_path(&request.path)
                .map_err(|e| Status::invalid_argument(format!("path: {e}")))?,
        ),
        _ => {
            return Err(Status::invalid_argument(
                "give both method and path for an HTTP request, or neither for TCP",
            ));
        }
    };
    let policies = set.effective(targets);
    let trust = TrustContext {
        local: local.clone(),
        federated: Vec::new(),
    };
    let decision = policy::evaluate(
        &policies,
        set.default_policy,
        &trust,
        &Request {
            peer: peer.as_ref(),
            port,
            http: path.as_deref().map(|path| HttpRequest {
                method: &request.method,
                path,
            }),
        },
    );
    Ok(pb::CheckAuthorizationResponse {
        allowed: decision.allowed,
        reason: decision.reason.to_string(),
        default_policy: authz::DefaultPolicy::from(set.default_policy).into(),
        dry_run_allowed: decision.dry_run_allowed,
        contributions: decision
            .contributions
            .iter()
            .map(|c| pb::PolicyContribution {
                policy: c.policy.to_string(),
                action: authz::Action::from(c.action).into(),
                enforcement: authz::Enforcement::from(c.enforcement).into(),
                matched: matches!(c.outcome, Outcome::Matched { .. }),
                rule: match c.outcome {
                    Outcome::Matched { rule } => u32::try_from(rule).unwrap_or(u32::MAX),
                    Outcome::NotMatched => 0,
                },
            })
            .collect(),
        path: path.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored document as `policy apply` writes it, with a rule a newer or older version would
    /// not compile (a partial wildcard).
    fn broken(name: &str, action: &str) -> (String, String, String) {
        let document = serde_json::json!({
            "apiVersion": "signet.dev/v1alpha1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "targetSPIFFEIDs": ["spiffe://example.org/backend"],
                "action": action,
                "rules": [{"from": [{"spiffeIDs": ["spiffe://example.org/front*"]}],
                           "to": [{"paths": ["/admin/*"]}]}],
            },
        });
        ("default".into(), name.into(), document.to_string())
    }

    async fn allowed(store: &PolicyStore, path: &str) -> bool {
        let set = store.current().expect("a published policy set");
        let request = pb::CheckAuthorizationRequest {
            from: "spiffe://example.org/frontend".into(),
            to: "spiffe://example.org/backend".into(),
            port: 8080,
            method: "GET".into(),
            path: path.into(),
        };
        let local = TrustDomain::new("example.org").unwrap();
        let target = SpiffeId::new("spiffe://example.org/backend").unwrap();
        check(&set, &local, &[target], &request).unwrap().allowed
    }

    #[tokio::test]
    async fn stored_policies_that_no_longer_compile_fail_closed() {
        let dir = tempfile::tempdir().unwrap();
        let datastore = Datastore::open(&dir.path().join("signet.db")).unwrap();
        let store = PolicyStore::new(signet_core::policy::DefaultPolicy::AllowTrustDomain);

        // A broken DENY denies everything to its targets (the default would have allowed).
        datastore
            .put_policies(vec![broken("deny-admin", "DENY")])
            .await
            .unwrap();
        assert_eq!(
            load_standalone(&datastore, &store).await.unwrap(),
            Loaded::Published(1)
        );
        assert!(!allowed(&store, "/admin/users").await);
        assert!(!allowed(&store, "/public").await);

        // A broken ALLOW admits nothing, and still shields its targets from the default.
        datastore
            .delete_policy("default".into(), "deny-admin".into())
            .await
            .unwrap();
        datastore
            .put_policies(vec![broken("allow-admin", "ALLOW")])
            .await
            .unwrap();
        load_standalone(&datastore, &store).await.unwrap();
        assert!(!allowed(&store, "/admin/users").await);

        // Without it, the default applies again.
        datastore
            .delete_policy("default".into(), "allow-admin".into())
            .await
            .unwrap();
        load_standalone(&datastore, &store).await.unwrap();
        assert!(allowed(&store, "/admin/users").await);

        // A row whose targets cannot be read: nothing new is published (the last set stays).
        let published = store.current();
        datastore
            .put_policies(vec![(
                "default".into(),
                "garbage".into(),
                "{not json".into(),
            )])
            .await
            .unwrap();
        assert_eq!(
            load_standalone(&datastore, &store).await.unwrap(),
            Loaded::Withheld(vec!["default/garbage".into()])
        );
        assert_eq!(store.current(), published);
        let fresh = PolicyStore::new(signet_core::policy::DefaultPolicy::AllowTrustDomain);
        load_standalone(&datastore, &fresh).await.unwrap();
        assert!(fresh.current().is_none(), "a fresh start publishes nothing");
    }

    /// An apply or delete that leaves the set unpublished says so instead of answering success.
    #[tokio::test]
    async fn changes_while_an_unreadable_policy_is_stored_are_not_reported_as_live() {
        let dir = tempfile::tempdir().unwrap();
        let datastore = Datastore::open(&dir.path().join("signet.db")).unwrap();
        let store = PolicyStore::new(signet_core::policy::DefaultPolicy::AllowTrustDomain);
        let local = TrustDomain::new("example.org").unwrap();
        datastore
            .put_policies(vec![(
                "default".into(),
                "garbage".into(),
                "{not json".into(),
            )])
            .await
            .unwrap();
        let document = "apiVersion: signet.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-admin\nspec:\n  targetSPIFFEIDs: [\"spiffe://example.org/backend\"]\n  action: DENY\n  rules:\n  - to:\n    - paths: [\"/admin/*\"]\n";
        let refused = apply(
            false,
            Some(&datastore),
            &store,
            &local,
            pb::ApplyPoliciesRequest {
                document: document.into(),
                dry_run: false,
            },
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(
            refused.message().contains("default/garbage")
                && refused.message().contains("not published"),
            "{}",
            refused.message()
        );
        assert!(store.current().is_none(), "nothing was published");

        // Deleting the unreadable row publishes the set, the DENY included.
        delete(
            false,
            Some(&datastore),
            &store,
            pb::DeletePolicyRequest {
                namespace: String::new(),
                name: "garbage".into(),
            },
        )
        .await
        .unwrap();
        assert!(!allowed(&store, "/admin/users").await);
        assert!(allowed(&store, "/public").await);
    }

    #[tokio::test]
    async fn oversized_names_are_refused_without_being_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let datastore = Datastore::open(&dir.path().join("signet.db")).unwrap();
        let store = PolicyStore::new(signet_core::policy::DefaultPolicy::AllowTrustDomain);
        for (namespace, name) in [
            (String::new(), "a".repeat(100_000)),
            ("b".repeat(100_000), "x".to_owned()),
            (String::new(), "Bad_Name".to_owned()),
        ] {
            let refused = delete(
                false,
                Some(&datastore),
                &store,
                pb::DeletePolicyRequest { namespace, name },
            )
            .await
            .unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument);
            assert!(refused.message().len() < 200, "{}", refused.message());
        }
    }

    #[tokio::test]
    async fn errors_quoting_huge_values_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let datastore = Datastore::open(&dir.path().join("signet.db")).unwrap();
        let store = PolicyStore::new(signet_core::policy::DefaultPolicy::AllowTrustDomain);
        let local = TrustDomain::new("example.org").unwrap();
        let huge_name = format!(
            "apiVersion: signet.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: {}\nspec:\n  targetSPIFFEIDs: [\"spiffe://example.org/b\"]\n  action: DENY\n",
            "a".repeat(100_000)
        );
        let huge_pattern = format!(
            "apiVersion: signet.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\nspec:\n  targetSPIFFEIDs: [\"spiffe://example.org/{}*x\"]\n  action: DENY\n",
            "a".repeat(100_000)
        );
        for document in [huge_name, huge_pattern] {
            let refused = apply(
                false,
                Some(&datastore),
                &store,
                &local,
                pb::ApplyPoliciesRequest {
                    document,
                    dry_run: false,
                },
            )
            .await
            .unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument);
            assert!(
                refused.message().len() <= MAX_MESSAGE_BYTES + 100,
                "{} bytes",
                refused.message().len()
            );
        }
    }
}
