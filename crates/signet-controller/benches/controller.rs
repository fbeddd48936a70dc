//! P4 (DESIGN §15): 30,000 pods × 10 ClusterSPIFFEIDs — initial computation time, the cost of one
//! pod change, and the memory the index holds (RSS). Prints figures; run with
//! `cargo bench -p signet-controller --bench controller`.

#![expect(clippy::unwrap_used, reason = "bench setup fails loudly")]

use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use signet_controller::{ControllerConfig, Index};
use signet_spiffe::TrustDomain;
use signet_test_support::k8s::{PodBuilder, cluster_spiffe_id, match_labels, namespace, node};
use signet_test_support::percentile;

/// A `/proc/self/status` field in KiB (`VmRSS`, `VmHWM`).
fn proc_kib(field: &str) -> usize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

const PODS: usize = 30_000;
const NODES: usize = 100;
const NAMESPACES: usize = 100;
const IDENTITIES: usize = 10;

fn pods() -> Vec<Pod> {
    (0..PODS)
        .map(|i| {
            PodBuilder::new(&format!("ns{}", i % NAMESPACES), &format!("pod-{i}"))
                .label("app", &format!("app{}", i % 50))
                .label("pod-template-hash", "5d8f7c9b4")
                .service_account(&format!("sa{}", i % 20))
                .on_node(&format!("node-{}", i % NODES))
                .build()
        })
        .collect()
}

fn identities() -> Vec<signet_api::ClusterSPIFFEID> {
    (0..IDENTITIES)
        .map(|i| {
            let fallback = i == IDENTITIES - 1;
            let mut identity = cluster_spiffe_id(
                &format!("id{i}"),
                "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}",
                i64::try_from(i).unwrap(),
            );
            if fallback {
                identity.spec.fallback = true;
            } else {
                // Each non-fallback identity selects one team's namespaces and some apps.
                identity.spec.namespace_selector = match_labels(&[("team", &format!("t{i}"))]);
            }
            identity.spec.workload_selector_templates = vec![
                "k8s:ns:{{ .PodMeta.Namespace }}".into(),
                "k8s:sa:{{ .PodSpec.ServiceAccountName }}".into(),
            ];
            identity.spec.dns_name_templates =
                vec!["{{ .PodMeta.Name }}.{{ .PodMeta.Namespace }}.svc".into()];
            identity
        })
        .collect()
}

fn base_index() -> Index {
    let mut index = Index::new(ControllerConfig::new(
        TrustDomain::new("example.org").unwrap(),
        "bench",
    ));
    for n in 0..NAMESPACES {
        let team = format!("t{}", n % (IDENTITIES + 2));
        index.apply_namespace(&namespace(&format!("ns{n}"), &[("team", &team)]));
    }
    for n in 0..NODES {
        index.apply_node(&node(&format!("node-{n}")));
    }
    index
}

fn authorization_policy(
    namespace: &str,
    name: &str,
    spec: serde_json::Value,
) -> signet_api::AuthorizationPolicy {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "signet.dev/v1alpha1", "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": namespace, "generation": 1}, "spec": spec
    }))
    .unwrap()
}

/// One pod change (a label edit) with its changes taken, `edited.len()` times: counted by
/// `hack/instructions.sh` under callgrind (`controller instructions`).
#[inline(never)]
fn measured_controller(index: &mut Index, edited: &[Pod]) -> usize {
    let mut changes = 0;
    for pod in edited {
        index.apply_pod(pod);
        changes += index.take_changes().len();
    }
    changes
}

/// The instruction-count mode: the P4 index, then 100 pod changes in `measured_controller`.
fn instructions(pods: &[Pod], identities: &[signet_api::ClusterSPIFFEID]) {
    let mut index = base_index();
    for identity in identities {
        index.apply_identity(identity);
    }
    for pod in pods {
        index.apply_pod(pod);
    }
    let _ = index.take_changes();
    let edited: Vec<Pod> = (0..100)
        .map(|i| {
            let mut pod = pods[(i * 7919) % PODS].clone();
            pod.metadata
                .labels
                .get_or_insert_default()
                .insert("revision".into(), i.to_string());
            pod
        })
        .collect();
    std::hint::black_box(measured_controller(&mut index, &edited));
}

fn main() {
    let pods = pods();
    let identities = identities();
    if std::env::args().skip(1).any(|a| a == "instructions") {
        instructions(&pods, &identities);
        return;
    }

    // Order A: resources first, then the pod list (a server starting against a running cluster
    // whose CR watch synced first).
    let rss_before = proc_kib("VmRSS:");
    let start = Instant::now();
    let mut index = base_index();
    for identity in &identities {
        index.apply_identity(identity);
    }
    for pod in &pods {
        index.apply_pod(pod);
    }
    let changes = index.take_changes();
    let initial_a = start.elapsed();
    drop(changes);
    let rss_index = proc_kib("VmRSS:").saturating_sub(rss_before);
    let entries = index.len();

    // Order B: pods first, then the resources (every resource scans all pods).
    let start = Instant::now();
    let mut index_b = base_index();
    for pod in &pods {
        index_b.apply_pod(pod);
    }
    for identity in &identities {
        index_b.apply_identity(identity);
    }
    let changes_b = index_b.take_changes();
    let initial_b = start.elapsed();
    assert_eq!(changes_b.len(), entries);
    drop(changes_b);
    drop(index_b);

    // One pod change: a label edit (recomputes that pod against all 10 identities) and a pod
    // deletion + re-creation, each followed by take_changes.
    let mut relabel = Vec::new();
    let mut recreate = Vec::new();
    for i in 0..2_000 {
        let mut pod = pods[(i * 7919) % PODS].clone();
        pod.metadata
            .labels
            .get_or_insert_default()
            .insert("revision".into(), i.to_string());
        let t = Instant::now();
        index.apply_pod(&pod);
        let _ = index.take_changes();
        relabel.push(t.elapsed());

        let ns = pod.metadata.namespace.clone().unwrap();
        let name = pod.metadata.name.clone().unwrap();
        let t = Instant::now();
        index.delete_pod(&ns, &name);
        index.apply_pod(&pod);
        let _ = index.take_changes();
        recreate.push(t.elapsed());
    }

    // One ClusterSPIFFEID change (template edit) for scale.
    let mut edited = identities[0].clone();
    edited.spec.spiffe_id_template =
        "spiffe://{{ .TrustDomain }}/team0/{{ .PodMeta.Namespace }}/{{ .PodSpec.ServiceAccountName }}".into();
    let t = Instant::now();
    index.apply_identity(&edited);
    let edit_changes = index.take_changes().len();
    let identity_edit = t.elapsed();

    // AuthorizationPolicies: one selector policy per namespace plus ID-pattern policies, and the
    // cost one pod change adds when they are resolved again (what the runtime does per batch).
    let mut policies = signet_controller::policy_state::PolicyState::default();
    for n in 0..NAMESPACES {
        policies.apply(&authorization_policy(
            &format!("ns{n}"),
            "readers",
            serde_json::json!({"selector": {"matchLabels": {"app": format!("app{}", n % 50)}},
                "action": "ALLOW", "rules": [{"from": [{"namespaces": ["frontend"]}]}]}),
        ));
    }
    for n in 0..10 {
        policies.apply(&authorization_policy(
            "default",
            &format!("by-id-{n}"),
            serde_json::json!({"targetSPIFFEIDs": [format!("spiffe://example.org/ns/ns{n}/sa/*")],
                "action": "DENY", "rules": [{"to": [{"paths": ["/admin/*"]}]}]}),
        ));
    }
    let t = Instant::now();
    let bindings = policies.take_bindings(&index, true).map_or(0, |b| b.len());
    let policies_initial = t.elapsed();
    let mut policy_pod_change = Vec::new();
    for i in 0..500 {
        let mut pod = pods[(i * 7919) % PODS].clone();
        pod.metadata
            .labels
            .get_or_insert_default()
            .insert("policy-revision".into(), i.to_string());
        let t = Instant::now();
        index.apply_pod(&pod);
        let _ = index.take_changes();
        policies.pods_changed(pod.metadata.namespace.as_deref());
        let _ = policies.take_bindings(&index, false);
        policy_pod_change.push(t.elapsed());
    }
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let t = Instant::now();
    let statuses = policies
        .statuses(&index, &[TrustDomain::new("example.org").unwrap()], &now)
        .len();
    let policy_statuses = t.elapsed();

    println!(
        "P4 controller benchmark: {PODS} pods, {NODES} nodes, {NAMESPACES} namespaces, {IDENTITIES} ClusterSPIFFEIDs (1 fallback)"
    );
    println!("  entries published: {entries}");
    println!(
        "  initial computation, resources then pods: {:.1} ms",
        initial_a.as_secs_f64() * 1e3
    );
    println!(
        "  initial computation, pods then resources: {:.1} ms",
        initial_b.as_secs_f64() * 1e3
    );
    println!(
        "  one pod change (label edit): p50 {:.1} µs, p99 {:.1} µs",
        percentile(&mut relabel, 0.5).as_secs_f64() * 1e6,
        percentile(&mut relabel, 0.99).as_secs_f64() * 1e6
    );
    println!(
        "  one pod delete + re-create: p50 {:.1} µs, p99 {:.1} µs",
        percentile(&mut recreate, 0.5).as_secs_f64() * 1e6,
        percentile(&mut recreate, 0.99).as_secs_f64() * 1e6
    );
    println!(
        "  one ClusterSPIFFEID template edit: {:.1} ms ({edit_changes} entries changed)",
        identity_edit.as_secs_f64() * 1e3
    );
    println!(
        "  AuthorizationPolicies ({bindings}: {NAMESPACES} selector + 10 ID-pattern): resolve all {:.1} ms; one pod change incl. re-resolving them p50 {:.1} µs, p99 {:.1} µs; {statuses} statuses {:.1} ms",
        policies_initial.as_secs_f64() * 1e3,
        percentile(&mut policy_pod_change, 0.5).as_secs_f64() * 1e6,
        percentile(&mut policy_pod_change, 0.99).as_secs_f64() * 1e6,
        policy_statuses.as_secs_f64() * 1e3
    );
    println!(
        "  RSS growth while building the index (pods, index, change list): {:.1} MiB",
        rss_index as f64 / 1024.0
    );
    println!(
        "  process RSS now {:.1} MiB, peak {:.1} MiB (includes the 30k input pods and a second index)",
        proc_kib("VmRSS:") as f64 / 1024.0,
        proc_kib("VmHWM:") as f64 / 1024.0
    );
}
