//! The data a ClusterSPIFFEID template renders against, with spire-controller-manager's names:
//! `.TrustDomain`, `.ClusterName`, `.ClusterDomain`, `.PodMeta`, `.PodSpec`, `.NodeMeta`, `.NodeSpec`,
//! and inside them the Go field names of the Kubernetes types (`.PodMeta.Namespace`,
//! `.PodSpec.ServiceAccountName`, `.NodeMeta.UID`, ...). Fields are read straight from the objects,
//! nothing is converted per render.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSpec, PodSpec};
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

/// One pod (and its node, when known) as template data.
#[derive(Debug)]
pub struct PodContext<'a> {
    /// Cluster values.
    pub cluster: &'a ClusterInfo,
    /// The pod's metadata.
    pub pod_meta: &'a ObjectMeta,
    /// The pod's spec.
    pub pod_spec: Option<&'a PodSpec>,
    /// The node the pod is scheduled on.
    pub node: Option<&'a Node>,
}

static EMPTY_MAP: BTreeMap<String, String> = BTreeMap::new();

fn text(value: Option<&String>) -> Value<'_> {
    Value::Text(Cow::Borrowed(value.map_or("", String::as_str)))
}

fn map(value: Option<&BTreeMap<String, String>>) -> Value<'_> {
    Value::Map(value.unwrap_or(&EMPTY_MAP))
}

fn boolean(value: Option<bool>) -> Value<'static> {
    Value::Text(Cow::Borrowed(if value.unwrap_or(false) {
        "true"
    } else {
        "false"
    }))
}

fn object_meta<'a>(meta: &'a ObjectMeta, field: &[String]) -> Option<Value<'a>> {
    let [field] = field else {
        return field.is_empty().then_some(Value::Struct);
    };
    Some(match field.as_str() {
        "Name" => text(meta.name.as_ref()),
        "GenerateName" => text(meta.generate_name.as_ref()),
        "Namespace" => text(meta.namespace.as_ref()),
        "UID" => text(meta.uid.as_ref()),
        "ResourceVersion" => text(meta.resource_version.as_ref()),
        "Generation" => Value::Text(Cow::Owned(meta.generation.unwrap_or(0).to_string())),
        "Labels" => map(meta.labels.as_ref()),
        "Annotations" => map(meta.annotations.as_ref()),
        "CreationTimestamp" | "DeletionTimestamp" | "OwnerReferences" | "Finalizers"
        | "ManagedFields" => Value::Struct,
        _ => return None,
    })
}

fn pod_spec<'a>(spec: Option<&'a PodSpec>, field: &[String]) -> Option<Value<'a>> {
    let [field] = field else {
        return field.is_empty().then_some(Value::Struct);
    };
    Some(match field.as_str() {
        "ServiceAccountName" => text(spec.and_then(|s| s.service_account_name.as_ref())),
        "DeprecatedServiceAccount" => text(spec.and_then(|s| s.service_account.as_ref())),
        "NodeName" => text(spec.and_then(|s| s.node_name.as_ref())),
        "Hostname" => text(spec.and_then(|s| s.hostname.as_ref())),
        "Subdomain" => text(spec.and_then(|s| s.subdomain.as_ref())),
        "SchedulerName" => text(spec.and_then(|s| s.scheduler_name.as_ref())),
        "PriorityClassName" => text(spec.and_then(|s| s.priority_class_name.as_ref())),
        "RestartPolicy" => text(spec.and_then(|s| s.restart_policy.as_ref())),
        "DNSPolicy" => text(spec.and_then(|s| s.dns_policy.as_ref())),
        "RuntimeClassName" => text(spec.and_then(|s| s.runtime_class_name.as_ref())),
        "HostNetwork" => boolean(spec.and_then(|s| s.host_network)),
        "HostPID" => boolean(spec.and_then(|s| s.host_pid)),
        "NodeSelector" => map(spec.and_then(|s| s.node_selector.as_ref())),
        "Containers" | "InitContainers" | "Volumes" | "Affinity" | "Tolerations"
        | "SecurityContext" => Value::Struct,
        _ => return None,
    })
}

fn node_spec<'a>(spec: Option<&'a NodeSpec>, field: &[String]) -> Option<Value<'a>> {
    let [field] = field else {
        return field.is_empty().then_some(Value::Struct);
    };
    Some(match field.as_str() {
        "PodCIDR" => text(spec.and_then(|s| s.pod_cidr.as_ref())),
        "ProviderID" => text(spec.and_then(|s| s.provider_id.as_ref())),
        "Unschedulable" => boolean(spec.and_then(|s| s.unschedulable)),
        "PodCIDRs" | "Taints" | "ConfigSource" => Value::Struct,
        _ => return None,
    })
}

static EMPTY_META: std::sync::LazyLock<ObjectMeta> = std::sync::LazyLock::new(ObjectMeta::default);

impl TemplateContext for PodContext<'_> {
    fn lookup(&self, path: &[String]) -> Option<Value<'_>> {
        let (root, rest) = path.split_first()?;
        match root.as_str() {
            "TrustDomain" if rest.is_empty() => {
                Some(Value::Text(self.cluster.trust_domain.as_str().into()))
            }
            "ClusterName" if rest.is_empty() => {
                Some(Value::Text(self.cluster.cluster_name.as_str().into()))
            }
            "ClusterDomain" if rest.is_empty() => {
                Some(Value::Text(self.cluster.cluster_domain.as_str().into()))
            }
            "PodMeta" => object_meta(self.pod_meta, rest),
            "PodSpec" => pod_spec(self.pod_spec, rest),
            "NodeMeta" => object_meta(self.node.map_or(&*EMPTY_META, |n| &n.metadata), rest),
            "NodeSpec" => node_spec(self.node.and_then(|n| n.spec.as_ref()), rest),
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
    let node = Node::default();
    let context = PodContext {
        cluster: &cluster,
        pod_meta: &EMPTY_META,
        pod_spec: None,
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
