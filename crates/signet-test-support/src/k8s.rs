//! Kubernetes object builders and the fixtures captured from a real cluster
//! (`fixtures/`, see its README).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerStatus, Namespace, Node, Pod, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use signet_api::{ClusterSPIFFEID, ClusterSPIFFEIDSpec};

/// A fixture file's text.
pub fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

/// The running pod captured from the cluster (`demo/web-0`, two containers and an init container).
pub fn fixture_pod() -> Pod {
    serde_json::from_str(&fixture("pod-running.json")).unwrap()
}

/// The node that pod runs on (`vm`).
pub fn fixture_node() -> Node {
    serde_json::from_str(&fixture("node.json")).unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    (!pairs.is_empty()).then(|| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    })
}

/// A deterministic UUID-shaped uid from a name.
pub fn uid_for(name: &str) -> String {
    let mut hash: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for byte in name.bytes() {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    let hex = format!("{hash:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A namespace with labels.
pub fn namespace(name: &str, label_pairs: &[(&str, &str)]) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            uid: Some(uid_for(&format!("ns/{name}"))),
            labels: labels(label_pairs),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// A node with a uid derived from its name.
pub fn node(name: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            uid: Some(uid_for(&format!("node/{name}"))),
            labels: labels(&[("kubernetes.io/hostname", name)]),
            ..ObjectMeta::default()
        },
        ..Node::default()
    }
}

/// Builds pods: `PodBuilder::new("demo", "web-0").on_node("n1").label("app", "web").build()`.
#[derive(Debug, Clone)]
pub struct PodBuilder {
    pod: Pod,
}

impl PodBuilder {
    /// A pending, unscheduled pod with service account `default`.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            pod: Pod {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    uid: Some(uid_for(&format!("pod/{namespace}/{name}"))),
                    ..ObjectMeta::default()
                },
                spec: Some(PodSpec {
                    service_account_name: Some("default".to_owned()),
                    ..PodSpec::default()
                }),
                status: Some(PodStatus {
                    phase: Some("Pending".to_owned()),
                    ..PodStatus::default()
                }),
            },
        }
    }

    /// Scheduled on `node`, phase Running.
    pub fn on_node(mut self, node: &str) -> Self {
        if let Some(spec) = self.pod.spec.as_mut() {
            spec.node_name = Some(node.to_owned());
        }
        self.phase("Running")
    }

    /// Sets the phase.
    pub fn phase(mut self, phase: &str) -> Self {
        if let Some(status) = self.pod.status.as_mut() {
            status.phase = Some(phase.to_owned());
        }
        self
    }

    /// Sets the uid.
    pub fn uid(mut self, uid: &str) -> Self {
        self.pod.metadata.uid = Some(uid.to_owned());
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.pod
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Sets the service account.
    pub fn service_account(mut self, name: &str) -> Self {
        if let Some(spec) = self.pod.spec.as_mut() {
            spec.service_account_name = Some(name.to_owned());
        }
        self
    }

    /// Adds a container with its status (`containerd://<id>`); `image_id` as the runtime reports it.
    pub fn container(
        mut self,
        name: &str,
        image: &str,
        image_id: &str,
        container_id: &str,
    ) -> Self {
        if let Some(spec) = self.pod.spec.as_mut() {
            spec.containers.push(Container {
                name: name.to_owned(),
                image: Some(image.to_owned()),
                ..Container::default()
            });
        }
        if let Some(status) = self.pod.status.as_mut() {
            status
                .container_statuses
                .get_or_insert_with(Vec::new)
                .push(ContainerStatus {
                    name: name.to_owned(),
                    image: image.to_owned(),
                    image_id: image_id.to_owned(),
                    container_id: Some(format!("containerd://{container_id}")),
                    ready: true,
                    ..ContainerStatus::default()
                });
        }
        self
    }

    /// The pod.
    pub fn build(self) -> Pod {
        self.pod
    }
}

/// A ClusterSPIFFEID with a template, created at `created_secs` (for masking order).
pub fn cluster_spiffe_id(name: &str, template: &str, created_secs: i64) -> ClusterSPIFFEID {
    let mut resource = ClusterSPIFFEID::new(
        name,
        ClusterSPIFFEIDSpec {
            spiffe_id_template: template.to_owned(),
            ..ClusterSPIFFEIDSpec::default()
        },
    );
    resource.metadata.uid = Some(uid_for(&format!("csid/{name}")));
    resource.metadata.generation = Some(1);
    resource.metadata.creation_timestamp = Some(Time(
        k8s_openapi::jiff::Timestamp::from_second(1_795_000_000 + created_secs).unwrap(),
    ));
    resource
}

/// A label selector from `key=value` pairs.
pub fn match_labels(pairs: &[(&str, &str)]) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_labels: labels(pairs),
        match_expressions: None,
    })
}

/// An EndpointSlice of Service `service` listing `pods` (ready endpoints, one IPv4 address each),
/// shaped as the EndpointSlice controller writes it.
pub fn endpoint_slice(
    namespace: &str,
    name: &str,
    service: &str,
    pods: &[&str],
) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    let endpoints: Vec<serde_json::Value> = pods
        .iter()
        .enumerate()
        .map(|(i, pod)| {
            serde_json::json!({
                "addresses": [format!("10.244.1.{}", i + 10)],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": "n1",
                "targetRef": {
                    "kind": "Pod",
                    "name": pod,
                    "namespace": namespace,
                    "uid": uid_for(&format!("pod/{namespace}/{pod}")),
                },
            })
        })
        .collect();
    let value = serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
            "uid": uid_for(&format!("endpointslice/{namespace}/{name}")),
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    });
    serde_json::from_value(value).unwrap_or_default()
}
