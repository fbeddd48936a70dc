//! The data a ClusterSPIFFEID template renders against, with spire-controller-manager's names:
//! `.TrustDomain`, `.ClusterName`, `.ClusterDomain`, `.PodMeta`, `.PodSpec`, `.NodeMeta`, `.NodeSpec`,
//! and inside them the Go field names of the Kubernetes types (`.PodMeta.Namespace`,
//! `.PodSpec.ServiceAccountName`, `.NodeMeta.UID`, ...).
//!
//! Pods and nodes are kept in compact copies holding only what templates and eligibility read
//! (a full `Pod` is kilobytes even when empty), which is what keeps 30,000 pods in tens of MiB.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use signet_core::template::{TemplateContext, Value};

/// Cluster-wide template values.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    /// `.TrustDomain`
    pub trust_domain: String,
    /// `.ClusterName`
    pub cluster_name: String,
    /// `.ClusterDomain`
    pub cluster_domain: String,
}

/// The template-visible part of `ObjectMeta`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// `.Name`
    pub name: String,
    /// `.GenerateName`
    pub generate_name: String,
    /// `.Namespace`
    pub namespace: String,
    /// `.UID`
    pub uid: String,
    /// `.Generation`
    pub generation: i64,
    /// `.Labels`
    pub labels: Option<BTreeMap<String, String>>,
    /// `.Annotations` (without kubectl's last-applied copy of the object)
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Meta {
    /// Copies what templates can see.
    pub fn from_object(meta: &ObjectMeta) -> Self {
        let mut annotations = meta.annotations.clone();
        if let Some(map) = annotations.as_mut() {
            map.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
        Self {
            name: meta.name.clone().unwrap_or_default(),
            generate_name: meta.generate_name.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            generation: meta.generation.unwrap_or(0),
            labels: meta.labels.clone().filter(|l| !l.is_empty()),
            annotations: annotations.filter(|a| !a.is_empty()),
        }
    }
}

/// The template-visible scalar fields of a `PodSpec`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFields {
    /// `.ServiceAccountName`
    pub service_account_name: String,
    /// `.DeprecatedServiceAccount`
    pub service_account: String,
    /// `.NodeName`
    pub node_name: String,
    /// `.Hostname`
    pub hostname: String,
    /// `.Subdomain`
    pub subdomain: String,
    /// `.SchedulerName`
    pub scheduler_name: String,
    /// `.PriorityClassName`
    pub priority_class_name: String,
    /// `.RestartPolicy`
    pub restart_policy: String,
    /// `.DNSPolicy`
    pub dns_policy: String,
    /// `.RuntimeClassName`
    pub runtime_class_name: String,
    /// `.HostNetwork`
    pub host_network: bool,
    /// `.HostPID`
    pub host_pid: bool,
    /// `.NodeSelector`
    pub node_selector: Option<BTreeMap<String, String>>,
}

/// A pod as the controller keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodData {
    /// Metadata.
    pub meta: Meta,
    /// Spec fields.
    pub spec: PodFields,
    /// `status.phase`.
    pub phase: String,
}

impl PodData {
    /// Copies what the controller needs from a pod.
    pub fn from_pod(pod: &Pod) -> Self {
        let spec = pod.spec.as_ref();
        let string = |f: fn(&k8s_openapi::api::core::v1::PodSpec) -> Option<&String>| {
            spec.and_then(f).cloned().unwrap_or_default()
        };
        Self {
            meta: Meta::from_object(&pod.metadata),
            spec: PodFields {
                service_account_name: string(|s| s.service_account_name.as_ref()),
                service_account: string(|s| s.service_account.as_ref()),
                node_name: string(|s| s.node_name.as_ref()),
                hostname: string(|s| s.hostname.as_ref()),
                subdomain: string(|s| s.subdomain.as_ref()),
                scheduler_name: string(|s| s.scheduler_name.as_ref()),
                priority_class_name: string(|s| s.priority_class_name.as_ref()),
                restart_policy: string(|s| s.restart_policy.as_ref()),
                dns_policy: string(|s| s.dns_policy.as_ref()),
                runtime_class_name: string(|s| s.runtime_class_name.as_ref()),
                host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
                host_pid: spec.and_then(|s| s.host_pid).unwrap_or(false),
                node_selector: spec.and_then(|s| s.node_selector.clone()),
            },
            phase: pod
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default(),
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        crate::index::pod_key(&self.meta.namespace, &self.meta.name)
    }

    /// The node it is scheduled on, if any.
    pub fn node_name(&self) -> Option<&str> {
        Some(self.spec.node_name.as_str()).filter(|n| !n.is_empty())
    }

    /// Succeeded or Failed: its containers will not run again.
    pub fn is_terminal(&self) -> bool {
        matches!(self.phase.as_str(), "Succeeded" | "Failed")
    }
}

/// A node as the controller keeps it (status, which changes with every heartbeat, is dropped).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeData {
    /// Metadata.
    pub meta: Meta,
    /// `.NodeSpec.PodCIDR`
    pub pod_cidr: String,
    /// `.NodeSpec.ProviderID`
    pub provider_id: String,
    /// `.NodeSpec.Unschedulable`
    pub unschedulable: bool,
}

impl NodeData {
    /// Copies what the controller needs from a node.
    pub fn from_node(node: &Node) -> Self {
        let spec = node.spec.as_ref();
        Self {
            meta: Meta::from_object(&node.metadata),
            pod_cidr: spec.and_then(|s| s.pod_cidr.clone()).unwrap_or_default(),
            provider_id: spec.and_then(|s| s.provider_id.clone()).unwrap_or_default(),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
        }
    }
}

/// One pod (and its node, when known) as template data.
#[derive(Debug)]
pub struct PodContext<'a> {
    /// Cluster values.
    pub cluster: &'a ClusterInfo,
    /// The pod.
    pub pod: &'a PodData,
    /// The node the pod is scheduled on.
    pub node: Option<&'a NodeData>,
}

static EMPTY_MAP: BTreeMap<String, String> = BTreeMap::new();

fn text(value: &str) -> Value<'_> {
    Value::Text(Cow::Borrowed(value))
}

fn map(value: Option<&BTreeMap<String, String>>) -> Value<'_> {
    Value::Map(value.unwrap_or(&EMPTY_MAP))
}

fn boolean(value: bool) -> Value<'static> {
    Value::Text(Cow::Borrowed(if value { "true" } else { "false" }))
}

fn single(field: &[String]) -> Result<&str, bool> {
    match field {
        [] => Err(true),
        [one] => Ok(one.as_str()),
        _ => Err(false),
    }
}

fn meta_field<'a>(meta: &'a Meta, field: &[String]) -> Option<Value<'a>> {
    let field = match single(field) {
        Ok(field) => field,
        Err(is_root) => return is_root.then_some(Value::Struct),
    };
    Some(match field {
        "Name" => text(&meta.name),
        "GenerateName" => text(&meta.generate_name),
        "Namespace" => text(&meta.namespace),
        "UID" => text(&meta.uid),
        "Generation" => Value::Text(Cow::Owned(meta.generation.to_string())),
        "Labels" => map(meta.labels.as_ref()),
        "Annotations" => map(meta.annotations.as_ref()),
        "CreationTimestamp" | "DeletionTimestamp" | "OwnerReferences" | "Finalizers"
        | "ManagedFields" => Value::Struct,
        _ => return None,
    })
}

fn pod_spec_field<'a>(spec: &'a PodFields, field: &[String]) -> Option<Value<'a>> {
    let field = match single(field) {
        Ok(field) => field,
        Err(is_root) => return is_root.then_some(Value::Struct),
    };
    Some(match field {
        "ServiceAccountName" => text(&spec.service_account_name),
        "DeprecatedServiceAccount" => text(&spec.service_account),
        "NodeName" => text(&spec.node_name),
        "Hostname" => text(&spec.hostname),
        "Subdomain" => text(&spec.subdomain),
        "SchedulerName" => text(&spec.scheduler_name),
        "PriorityClassName" => text(&spec.priority_class_name),
        "RestartPolicy" => text(&spec.restart_policy),
        "DNSPolicy" => text(&spec.dns_policy),
        "RuntimeClassName" => text(&spec.runtime_class_name),
        "HostNetwork" => boolean(spec.host_network),
        "HostPID" => boolean(spec.host_pid),
        "NodeSelector" => map(spec.node_selector.as_ref()),
        "Containers" | "InitContainers" | "Volumes" | "Affinity" | "Tolerations"
        | "SecurityContext" => Value::Struct,
        _ => return None,
    })
}

fn node_spec_field<'a>(node: Option<&'a NodeData>, field: &[String]) -> Option<Value<'a>> {
    let field = match single(field) {
        Ok(field) => field,
        Err(is_root) => return is_root.then_some(Value::Struct),
    };
    Some(match field {
        "PodCIDR" => text(node.map_or("", |n| n.pod_cidr.as_str())),
        "ProviderID" => text(node.map_or("", |n| n.provider_id.as_str())),
        "Unschedulable" => boolean(node.is_some_and(|n| n.unschedulable)),
        "PodCIDRs" | "Taints" | "ConfigSource" => Value::Struct,
        _ => return None,
    })
}

static EMPTY_META: Meta = Meta {
    name: String::new(),
    generate_name: String::new(),
    namespace: String::new(),
    uid: String::new(),
    generation: 0,
    labels: None,
    annotations: None,
};

impl TemplateContext for PodContext<'_> {
    fn lookup(&self, path: &[String]) -> Option<Value<'_>> {
        let (root, rest) = path.split_first()?;
        match root.as_str() {
            "TrustDomain" if rest.is_empty() => Some(text(&self.cluster.trust_domain)),
            "ClusterName" if rest.is_empty() => Some(text(&self.cluster.cluster_name)),
            "ClusterDomain" if rest.is_empty() => Some(text(&self.cluster.cluster_domain)),
            "PodMeta" => meta_field(&self.pod.meta, rest),
            "PodSpec" => pod_spec_field(&self.pod.spec, rest),
            "NodeMeta" => meta_field(self.node.map_or(&EMPTY_META, |n| &n.meta), rest),
            "NodeSpec" => node_spec_field(self.node, rest),
            _ => None,
        }
    }
}

/// Checks at load time that every field a template names exists, so a typo is reported once on
/// the resource instead of as a render failure on every pod.
pub fn check_fields(template: &signet_core::Template) -> Result<(), signet_core::RenderError> {
    let cluster = ClusterInfo {
        trust_domain: "example.org".into(),
        cluster_name: "c".into(),
        cluster_domain: "cluster.local".into(),
    };
    let pod = PodData::default();
    let node = NodeData::default();
    let context = PodContext {
        cluster: &cluster,
        pod: &pod,
        node: Some(&node),
    };
    match template.render(&context) {
        Err(
            error @ (signet_core::RenderError::UnknownField(_)
            | signet_core::RenderError::NotPrintable(_)
            | signet_core::RenderError::NotAMap(_)),
        ) => Err(error),
        _ => Ok(()),
    }
}
