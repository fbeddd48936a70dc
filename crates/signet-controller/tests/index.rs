//! The controller's computation over fixtures: pods, namespaces, nodes and resources in; entries,
//! changes and status figures out.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::sync::Arc;

use signet_api::{ClusterStaticEntry, ClusterStaticEntrySpec};
use signet_controller::ControllerConfig;
use signet_controller::index::{EntryChange, Index, anchored};
use signet_core::RegistrationEntry;
use signet_spiffe::TrustDomain;
use signet_test_support::k8s::{
    PodBuilder, cluster_spiffe_id, endpoint_slice, fixture_node, fixture_pod, match_labels,
    namespace, node, uid_for,
};

const DEFAULT_TEMPLATE: &str =
    "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}";

fn config() -> ControllerConfig {
    ControllerConfig::new(TrustDomain::new("example.org").unwrap(), "prod")
}

fn index() -> Index {
    let mut index = Index::new(config());
    index.apply_namespace(&namespace("demo", &[("team", "a")]));
    index.apply_namespace(&namespace("other", &[("team", "b")]));
    index.apply_node(&node("n1"));
    index.apply_node(&node("n2"));
    index
}

fn ids(index: &Index) -> Vec<String> {
    let mut ids: Vec<String> = index.entries().map(|e| e.spiffe_id.to_string()).collect();
    ids.sort();
    ids
}

fn entry_of(index: &Index, pod_uid: &str) -> Vec<Arc<RegistrationEntry>> {
    let mut entries: Vec<_> = index
        .entries()
        .filter(|e| e.id.as_str().ends_with(pod_uid))
        .cloned()
        .collect();
    entries.sort_by(|a, b| a.id.cmp(&b.id));
    entries
}

fn agent(node_name: &str) -> String {
    format!(
        "spiffe://example.org/signet/agent/k8s/prod/{}",
        uid_for(&format!("node/{node_name}"))
    )
}

#[test]
fn the_captured_pod_gets_the_default_identity_under_its_nodes_agent() {
    let mut index = Index::new(config());
    index.apply_namespace(&namespace("demo", &[]));
    index.apply_node(&fixture_node());
    let mut identity = cluster_spiffe_id("default", DEFAULT_TEMPLATE, 0);
    identity.spec.workload_selector_templates = vec![
        "k8s:ns:{{ .PodMeta.Namespace }}".into(),
        "k8s:pod-label:app:{{ index .PodMeta.Labels \"app\" }}".into(),
    ];
    identity.spec.dns_name_templates = vec![
        "{{ .PodMeta.Name }}.{{ .PodMeta.Namespace }}.svc".into(),
        "{{ .PodMeta.Name }}.{{ .PodMeta.Namespace }}.svc".into(),
        "{{ .PodMeta.Labels.app }}.{{ .ClusterDomain }}".into(),
    ];
    identity.spec.ttl = Some("30m".into());
    index.apply_identity(&identity);
    index.apply_pod(&fixture_pod());

    let changes = index.take_changes();
    assert_eq!(changes.len(), 1);
    let EntryChange::Upsert(entry) = &changes[0] else {
        panic!("{changes:?}")
    };
    assert_eq!(
        entry.spiffe_id.as_str(),
        "spiffe://example.org/ns/demo/sa/web"
    );
    assert_eq!(
        entry.parent_id.as_str(),
        "spiffe://example.org/signet/agent/k8s/prod/f2ababaf-ec73-4e18-8b0f-e9ffeb713507"
    );
    assert_eq!(
        entry.selectors.to_strings(),
        vec![
            "k8s:ns:demo",
            "k8s:pod-label:app:web",
            "k8s:pod-uid:66cf01ec-811b-46e1-9145-7357b92bad2a",
        ]
    );
    assert_eq!(
        entry.dns_names,
        vec!["web-0.demo.svc".to_owned(), "web.cluster.local".to_owned()]
    );
    assert_eq!(entry.x509_svid_ttl.as_secs(), 1800);
    assert_eq!(entry.jwt_svid_ttl.as_secs(), 300);
    assert_eq!(
        entry.id.as_str(),
        "csid/default/66cf01ec-811b-46e1-9145-7357b92bad2a"
    );
    assert_ne!(entry.revision, 0);
    // Applying the same objects again changes nothing.
    index.apply_pod(&fixture_pod());
    index.apply_identity(&identity);
    assert!(index.take_changes().is_empty());
}

#[test]
fn only_scheduled_live_pods_get_entries() {
    let mut index = index();
    index.apply_identity(&cluster_spiffe_id("default", DEFAULT_TEMPLATE, 0));
    let pending = PodBuilder::new("demo", "p").service_account("web");
    index.apply_pod(&pending.clone().build());
    assert!(index.is_empty(), "unscheduled pod got an entry");

    index.apply_pod(&pending.clone().on_node("n1").build());
    assert_eq!(ids(&index), vec!["spiffe://example.org/ns/demo/sa/web"]);
    assert_eq!(
        index.entries().next().unwrap().parent_id.as_str(),
        agent("n1")
    );

    for phase in ["Succeeded", "Failed"] {
        index.apply_pod(&pending.clone().on_node("n1").phase(phase).build());
        assert!(index.is_empty(), "{phase} pod kept its entry");
        index.apply_pod(&pending.clone().on_node("n1").build());
        assert_eq!(index.len(), 1);
    }

    // A pod on a node the controller does not know yet waits for the node.
    index.apply_pod(&PodBuilder::new("demo", "q").on_node("n9").build());
    assert_eq!(index.len(), 1);
    index.apply_node(&node("n9"));
    assert_eq!(index.len(), 2);
    index.delete_node("n9");
    assert_eq!(index.len(), 1);

    index.delete_pod("demo", "p");
    assert!(index.is_empty());
}

#[test]
fn namespace_and_pod_selectors() {
    let mut index = index();
    let mut identity = cluster_spiffe_id("team-a-web", DEFAULT_TEMPLATE, 0);
    identity.spec.namespace_selector = match_labels(&[("team", "a")]);
    identity.spec.pod_selector = match_labels(&[("app", "web")]);
    index.apply_identity(&identity);
    index.apply_pod(
        &PodBuilder::new("demo", "web")
            .label("app", "web")
            .on_node("n1")
            .build(),
    );
    index.apply_pod(
        &PodBuilder::new("demo", "db")
            .label("app", "db")
            .on_node("n1")
            .build(),
    );
    index.apply_pod(
        &PodBuilder::new("other", "web")
            .label("app", "web")
            .on_node("n1")
            .build(),
    );
    assert_eq!(ids(&index), vec!["spiffe://example.org/ns/demo/sa/default"]);

    // Relabelling the namespace moves the selection.
    index.take_changes();
    index.apply_namespace(&namespace("other", &[("team", "a")]));
    assert_eq!(index.len(), 2);
    index.apply_namespace(&namespace("demo", &[("team", "b")]));
    assert_eq!(
        ids(&index),
        vec!["spiffe://example.org/ns/other/sa/default"]
    );
    let changes = index.take_changes();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(
        matches!(&changes[0], EntryChange::Upsert(e) if e.spiffe_id.as_str().contains("/ns/other/"))
    );
    assert!(matches!(&changes[1], EntryChange::Remove(_)));
}

#[test]
fn ignored_namespaces_are_anchored() {
    let mut config = config();
    config.ignore_namespaces = anchored(&["kube-system", "signet"]).unwrap();
    let mut index = Index::new(config);
    index.apply_node(&node("n1"));
    index.apply_identity(&cluster_spiffe_id("default", DEFAULT_TEMPLATE, 0));
    for ns in [
        "kube-system",
        "signet",
        "my-kube-system",
        "kube-system-tools",
        "signet2",
    ] {
        index.apply_namespace(&namespace(ns, &[]));
        index.apply_pod(&PodBuilder::new(ns, "p").on_node("n1").build());
    }
    assert_eq!(
        ids(&index),
        vec![
            "spiffe://example.org/ns/kube-system-tools/sa/default",
            "spiffe://example.org/ns/my-kube-system/sa/default",
            "spiffe://example.org/ns/signet2/sa/default",
        ]
    );
    let report = index.identity_report("default").unwrap();
    assert_eq!(report.stats.namespaces_ignored, 2);
    assert_eq!(report.stats.namespaces_selected, 3);
    assert_eq!(report.stats.pods_selected, 3);
}

#[test]
fn identical_entries_are_masked_oldest_resource_wins() {
    let mut index = index();
    let pod = PodBuilder::new("demo", "p").on_node("n1").build();
    index.apply_pod(&pod);
    index.apply_identity(&cluster_spiffe_id("younger", DEFAULT_TEMPLATE, 10));
    index.apply_identity(&cluster_spiffe_id("older", DEFAULT_TEMPLATE, 5));
    let uid = pod.metadata.uid.clone().unwrap();
    let entries = entry_of(&index, &uid);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].id.as_str(), format!("csid/older/{uid}"));
    assert_eq!(
        index.identity_report("older").unwrap().stats.entries_to_set,
        1
    );
    let younger = index.identity_report("younger").unwrap();
    assert_eq!(younger.stats.entries_masked, 1);
    assert_eq!(younger.stats.entries_to_set, 0);

    // The masked one takes over when the winner goes: create first, then delete.
    index.take_changes();
    index.delete_identity("older");
    let changes = index.take_changes();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(
        matches!(&changes[0], EntryChange::Upsert(e) if e.id.as_str() == format!("csid/younger/{uid}"))
    );
    assert!(
        matches!(&changes[1], EntryChange::Remove(id) if id.as_str() == format!("csid/older/{uid}"))
    );

    // Two resources rendering different IDs give the pod two identities.
    index.apply_identity(&cluster_spiffe_id(
        "by-name",
        "spiffe://example.org/pod/{{ .PodMeta.Name }}",
        20,
    ));
    assert_eq!(entry_of(&index, &uid).len(), 2);
}

#[test]
fn fallback_applies_only_to_pods_nothing_else_covers() {
    let mut index = index();
    let mut fallback = cluster_spiffe_id("default", DEFAULT_TEMPLATE, 0);
    fallback.spec.fallback = true;
    index.apply_identity(&fallback);
    index.apply_pod(
        &PodBuilder::new("demo", "web")
            .label("app", "web")
            .on_node("n1")
            .build(),
    );
    index.apply_pod(
        &PodBuilder::new("demo", "db")
            .label("app", "db")
            .on_node("n1")
            .build(),
    );
    assert_eq!(index.len(), 2);

    let mut web = cluster_spiffe_id("web", "spiffe://example.org/web", 100);
    web.spec.pod_selector = match_labels(&[("app", "web")]);
    index.apply_identity(&web);
    assert_eq!(
        ids(&index),
        vec![
            "spiffe://example.org/ns/demo/sa/default",
            "spiffe://example.org/web"
        ]
    );
    let report = index.identity_report("default").unwrap();
    assert_eq!(report.stats.pods_selected, 2);
    assert_eq!(report.stats.entries_to_set, 1);

    // A non-fallback identity that fails to render does not count as covering the pod.
    web.spec.spiffe_id_template = "spiffe://example.org/{{ .PodMeta.Labels.missing }}".into();
    index.apply_identity(&web);
    assert_eq!(
        ids(&index),
        vec![
            "spiffe://example.org/ns/demo/sa/default",
            "spiffe://example.org/ns/demo/sa/default"
        ]
    );
    index.delete_identity("web");
    assert_eq!(index.len(), 2);
}

#[test]
fn render_failures_are_counted_per_pod_and_do_not_block_others() {
    let mut index = index();
    index.apply_identity(&cluster_spiffe_id(
        "by-app",
        "spiffe://example.org/app/{{ index .PodMeta.Labels \"app\" }}",
        0,
    ));
    index.apply_pod(
        &PodBuilder::new("demo", "good")
            .label("app", "web")
            .on_node("n1")
            .build(),
    );
    index.apply_pod(&PodBuilder::new("demo", "unlabelled").on_node("n1").build());
    index.apply_pod(
        &PodBuilder::new("demo", "bad-id")
            .label("app", "a/../b")
            .on_node("n1")
            .build(),
    );
    assert_eq!(ids(&index), vec!["spiffe://example.org/app/web"]);
    let report = index.identity_report("by-app").unwrap();
    assert_eq!(report.stats.pods_selected, 3);
    assert_eq!(report.stats.pod_entry_render_failures, 2);
    assert_eq!(report.failures.len(), 2);
    assert!(
        report
            .failures
            .iter()
            .any(|(pod, why)| pod == "demo/unlabelled" && why.contains("no key \"app\""))
    );
    assert!(report.failures.iter().any(|(pod, _)| pod == "demo/bad-id"));

    // Reserved and foreign IDs are render failures too.
    for template in [
        "spiffe://example.org/signet/agent/x",
        "spiffe://other.org/x",
        "spiffe://example.org",
    ] {
        let mut index = self::index();
        index.apply_identity(&cluster_spiffe_id("x", template, 0));
        index.apply_pod(&PodBuilder::new("demo", "p").on_node("n1").build());
        assert!(index.is_empty(), "{template}");
        assert_eq!(
            index
                .identity_report("x")
                .unwrap()
                .stats
                .pod_entry_render_failures,
            1
        );
    }
}

#[test]
fn an_invalid_update_keeps_the_last_valid_generation_serving() {
    let mut index = index();
    let mut identity = cluster_spiffe_id("default", DEFAULT_TEMPLATE, 0);
    index.apply_identity(&identity);
    index.apply_pod(&PodBuilder::new("demo", "p").on_node("n1").build());
    index.take_changes();

    for bad in [
        "spiffe://{{ .TrustDomain }}/{{ .PodMeta.Nmae }}",
        "spiffe://{{ .TrustDomain }}/{{ .PodMeta.Name | upper }}",
        "spiffe://{{ .TrustDomain",
    ] {
        identity.spec.spiffe_id_template = bad.into();
        identity.metadata.generation = Some(2);
        index.apply_identity(&identity);
        assert!(index.take_changes().is_empty(), "{bad} changed entries");
        let report = index.identity_report("default").unwrap();
        assert_eq!(
            report.error.as_ref().map(|e| e.reason()),
            Some("InvalidTemplate")
        );
        assert!(report.serving_previous);
        assert_eq!(report.generation, Some(2));
        assert_eq!(report.stats.entries_to_set, 1);
    }
    identity.spec.spiffe_id_template = DEFAULT_TEMPLATE.into();
    identity.spec.ttl = Some("-1h".into());
    index.apply_identity(&identity);
    assert_eq!(
        index
            .identity_report("default")
            .unwrap()
            .error
            .map(|e| e.reason()),
        Some("InvalidSpec")
    );
    identity.spec.ttl = None;
    identity.spec.pod_selector = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_expressions: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                    key: "a".into(),
                    operator: "Exists".into(),
                    values: Some(vec!["x".into()]),
                },
            ]),
            match_labels: None,
        },
    );
    index.apply_identity(&identity);
    assert_eq!(
        index
            .identity_report("default")
            .unwrap()
            .error
            .map(|e| e.reason()),
        Some("InvalidSelector")
    );
    assert_eq!(index.len(), 1);

    // A brand-new invalid resource serves nothing and says so.
    index.apply_identity(&cluster_spiffe_id("broken", "spiffe://x/{{", 0));
    let report = index.identity_report("broken").unwrap();
    assert!(report.error.is_some() && !report.serving_previous);
}

#[test]
fn an_identity_change_touches_only_the_pods_it_selects() {
    let mut index = index();
    let mut web = cluster_spiffe_id("web", "spiffe://example.org/web/{{ .PodMeta.Name }}", 0);
    web.spec.pod_selector = match_labels(&[("app", "web")]);
    index.apply_identity(&web);
    index.apply_identity(&cluster_spiffe_id("default", DEFAULT_TEMPLATE, 0));
    for i in 0..50 {
        let app = if i < 5 { "web" } else { "db" };
        index.apply_pod(
            &PodBuilder::new("demo", &format!("p{i}"))
                .label("app", app)
                .on_node("n1")
                .build(),
        );
    }
    index.take_changes();
    web.spec.spiffe_id_template = "spiffe://example.org/frontend/{{ .PodMeta.Name }}".into();
    index.apply_identity(&web);
    let changes = index.take_changes();
    assert_eq!(changes.len(), 5, "{changes:?}");
    // A changed SPIFFE ID keeps its entry id: one upsert, never a remove-then-create gap.
    assert!(changes.iter().all(|c| matches!(c, EntryChange::Upsert(e) if e.spiffe_id.as_str().starts_with("spiffe://example.org/frontend/"))));

    // Narrowing the selector removes exactly the pods no longer selected.
    web.spec.pod_selector = match_labels(&[("app", "web"), ("tier", "edge")]);
    index.apply_identity(&web);
    let changes = index.take_changes();
    assert_eq!(changes.len(), 5);
    assert!(changes.iter().all(|c| matches!(c, EntryChange::Remove(_))));
    assert_eq!(index.identity_report("web").unwrap().stats.pods_selected, 0);

    index.delete_identity("default");
    assert!(index.is_empty());
}

#[test]
fn status_only_changes_recompute_nothing() {
    let mut index = index();
    index.apply_identity(&cluster_spiffe_id("default", DEFAULT_TEMPLATE, 0));
    let pod = PodBuilder::new("demo", "p").on_node("n1").build();
    index.apply_pod(&pod);
    let before: Vec<_> = index.entries().cloned().collect();
    index.take_changes();

    let mut heartbeat = node("n1");
    heartbeat.status = Some(k8s_openapi::api::core::v1::NodeStatus {
        phase: Some("Running".into()),
        ..Default::default()
    });
    index.apply_node(&heartbeat);
    let mut noisy = pod.clone();
    noisy.metadata.resource_version = Some("999".into());
    noisy.metadata.annotations = Some(
        [(
            "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
            "{}".to_owned(),
        )]
        .into(),
    );
    if let Some(status) = noisy.status.as_mut() {
        status.pod_ip = Some("10.0.0.7".into());
    }
    index.apply_pod(&noisy);
    assert!(index.take_changes().is_empty());
    let after: Vec<_> = index.entries().cloned().collect();
    assert!(Arc::ptr_eq(&before[0], &after[0]));
}

#[test]
fn a_pod_recreated_on_another_node_moves_to_that_nodes_agent() {
    let mut index = index();
    index.apply_identity(&cluster_spiffe_id("default", DEFAULT_TEMPLATE, 0));
    index.apply_pod(&PodBuilder::new("demo", "db-0").on_node("n1").build());
    assert_eq!(
        index.entries().next().unwrap().parent_id.as_str(),
        agent("n1")
    );
    // StatefulSet pods keep their name; the new incarnation has a new uid and node.
    index.apply_pod(
        &PodBuilder::new("demo", "db-0")
            .uid("11111111-2222-3333-4444-555555555555")
            .on_node("n2")
            .build(),
    );
    let entries: Vec<_> = index.entries().cloned().collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].parent_id.as_str(), agent("n2"));
    assert!(
        entries[0]
            .selectors
            .to_strings()
            .contains(&"k8s:pod-uid:11111111-2222-3333-4444-555555555555".to_owned())
    );
    // A node changing identity (recreated with a new uid) re-parents its pods.
    let mut recreated = node("n2");
    recreated.metadata.uid = Some("99999999-2222-3333-4444-555555555555".into());
    index.apply_node(&recreated);
    assert!(
        index
            .entries()
            .next()
            .unwrap()
            .parent_id
            .as_str()
            .ends_with("99999999-2222-3333-4444-555555555555")
    );
}

fn static_entry(name: &str, spiffe_id: &str, created: i64) -> ClusterStaticEntry {
    let mut resource = ClusterStaticEntry::new(
        name,
        ClusterStaticEntrySpec {
            spiffe_id: spiffe_id.into(),
            parent_id: agent("n1"),
            selectors: vec!["unix:uid:1000".into()],
            ..ClusterStaticEntrySpec::default()
        },
    );
    resource.metadata.generation = Some(1);
    resource.metadata.uid = Some(uid_for(name));
    resource.metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(1_795_000_000 + created).unwrap(),
        ));
    resource
}

#[test]
fn static_entries_validate_mask_and_update_in_place() {
    let mut index = index();
    index.apply_static(&static_entry("db", "spiffe://example.org/vm/db", 0));
    index.apply_static(&static_entry("db-copy", "spiffe://example.org/vm/db", 5));
    assert_eq!(index.len(), 1);
    let db = index.static_report("db").unwrap();
    assert!(db.served && !db.masked);
    let copy = index.static_report("db-copy").unwrap();
    assert!(!copy.served && copy.masked);

    index.take_changes();
    let mut moved = static_entry("db", "spiffe://example.org/vm/db2", 0);
    moved.metadata.generation = Some(2);
    index.apply_static(&moved);
    // db now renders another ID, so the copy is unmasked.
    assert_eq!(index.len(), 2);
    let changes = index.take_changes();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(changes.iter().all(|c| matches!(c, EntryChange::Upsert(_))));

    for (field, bad) in [
        (
            "spiffeID",
            static_entry("bad", "spiffe://example.org/signet/server", 0),
        ),
        ("spiffeID", static_entry("bad", "spiffe://other.org/x", 0)),
        ("selectors", {
            let mut s = static_entry("bad", "spiffe://example.org/x", 0);
            s.spec.selectors = vec!["nocolon".into()];
            s
        }),
        ("x509SVIDTTL", {
            let mut s = static_entry("bad", "spiffe://example.org/x", 0);
            s.spec.x509_svid_ttl = Some("-1h".into());
            s
        }),
        ("parentID", {
            let mut s = static_entry("bad", "spiffe://example.org/x", 0);
            s.spec.parent_id = "spiffe://other.org/agent".into();
            s
        }),
    ] {
        let mut index = self::index();
        index.apply_static(&bad);
        assert!(index.is_empty());
        assert_eq!(
            index.static_report("bad").unwrap().error.map(|e| e.field),
            Some(field)
        );
    }
    index.delete_static("db");
    index.delete_static("db-copy");
    assert!(index.is_empty());
}

#[test]
fn class_names_partition_resources() {
    let mut config = config();
    config.class_name = Some("signet".into());
    config.watch_classless = false;
    let mut index = Index::new(config);
    index.apply_namespace(&namespace("demo", &[]));
    index.apply_node(&node("n1"));
    index.apply_pod(&PodBuilder::new("demo", "p").on_node("n1").build());
    let mut mine = cluster_spiffe_id("mine", "spiffe://example.org/mine", 0);
    mine.spec.class_name = Some("signet".into());
    let mut theirs = cluster_spiffe_id("theirs", "spiffe://example.org/theirs", 0);
    theirs.spec.class_name = Some("other".into());
    let classless = cluster_spiffe_id("classless", "spiffe://example.org/classless", 0);
    for r in [&mine, &theirs, &classless] {
        index.apply_identity(r);
    }
    assert_eq!(ids(&index), vec!["spiffe://example.org/mine"]);
    // Moving a resource to another class withdraws it.
    mine.spec.class_name = Some("other".into());
    index.apply_identity(&mine);
    assert!(index.is_empty());
}

#[test]
fn auto_populated_dns_names_come_from_the_services_selecting_the_pod() {
    let mut index = index();
    let mut identity = cluster_spiffe_id("default", DEFAULT_TEMPLATE, 0);
    identity.spec.auto_populate_dns_names = true;
    identity.spec.dns_name_templates = vec!["{{ .PodMeta.Name }}.example.com".into()];
    assert!(!index.wants_service_names());
    index.apply_identity(&identity);
    assert!(
        index.wants_service_names(),
        "EndpointSlices are watched only now"
    );
    let pod = PodBuilder::new("demo", "web-0").on_node("n1").build();
    let uid = pod.metadata.uid.clone().unwrap();
    index.apply_pod(&pod);
    index.apply_pod(&PodBuilder::new("demo", "other-0").on_node("n1").build());
    let dns = |index: &Index| entry_of(index, &uid)[0].dns_names.clone();
    assert_eq!(dns(&index), ["web-0.example.com"]);
    let _ = index.take_changes();

    index.apply_endpoint_slice(&endpoint_slice(
        "demo",
        "web-abc",
        "web",
        &["web-0", "web-1"],
    ));
    assert_eq!(
        dns(&index),
        [
            "web-0.example.com",
            "web.demo.svc.cluster.local",
            "web.demo.svc",
            "web.demo",
            "web",
        ],
        "the templates' names first (the first is the CN), then the Service's"
    );
    assert_eq!(
        index.take_changes().len(),
        1,
        "only the selected pod changed"
    );

    // A second Service and a second slice of the first: Services in name order, no duplicates.
    index.apply_endpoint_slice(&endpoint_slice("demo", "api-xyz", "api", &["web-0"]));
    index.apply_endpoint_slice(&endpoint_slice("demo", "web-def", "web", &["web-0"]));
    assert_eq!(
        dns(&index)[1..5],
        [
            "api.demo.svc.cluster.local",
            "api.demo.svc",
            "api.demo",
            "api"
        ]
    );
    assert_eq!(dns(&index).len(), 9);
    // The pod leaves one slice of `web` but is still in the other.
    index.apply_endpoint_slice(&endpoint_slice("demo", "web-abc", "web", &["web-1"]));
    assert_eq!(dns(&index).len(), 9);
    index.delete_endpoint_slice("demo/web-def");
    index.delete_endpoint_slice("demo/api-xyz");
    assert_eq!(dns(&index), ["web-0.example.com"]);

    // A Service in another namespace never adds names here; a slice without a Service label is
    // ignored.
    index.apply_endpoint_slice(&endpoint_slice("other", "web-zzz", "web", &["web-0"]));
    index.apply_endpoint_slice(&endpoint_slice(
        "demo",
        "forged",
        "kubernetes.default.svc",
        &["web-0"],
    ));
    let mut unlabelled = endpoint_slice("demo", "manual", "x", &["web-0"]);
    unlabelled.metadata.labels = None;
    index.apply_endpoint_slice(&unlabelled);
    assert_eq!(dns(&index), ["web-0.example.com"]);

    // Without autoPopulateDNSNames the names go, and nothing asks for slices any more.
    index.apply_endpoint_slice(&endpoint_slice("demo", "web-abc", "web", &["web-0"]));
    assert_eq!(dns(&index).len(), 5);
    identity.spec.auto_populate_dns_names = false;
    identity.metadata.generation = Some(2);
    index.apply_identity(&identity);
    assert_eq!(dns(&index), ["web-0.example.com"]);
    assert!(!index.wants_service_names());
    index.clear_endpoint_slices();
    assert!(index.endpoint_slice_keys().is_empty());
}
