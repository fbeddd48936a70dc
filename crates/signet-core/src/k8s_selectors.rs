//! The Kubernetes selectors (DESIGN §4), built in one place: the agent reports them for a pod,
//! the controller writes `k8s:pod-uid` into every pod's entry, the server looks entries up by it,
//! and `k8s_psat` node attestation reports the agent's own pod and node.

use crate::selector::{Selector, SelectorError};

/// `<kind>:<field>:<value>`; an empty value (a pod without a UID, say) is refused: it would
/// match every workload that lacks the field.
fn build(kind: &str, field: &str, value: &str) -> Result<Selector, SelectorError> {
    if value.is_empty() {
        return Err(SelectorError::EmptyValue(format!("{kind}:{field}:")));
    }
    Selector::new(kind, &format!("{field}:{value}"))
}

/// Workload selectors of type `k8s`.
pub mod workload {
    use super::{Selector, SelectorError};

    fn k8s(field: &str, value: &str) -> Result<Selector, SelectorError> {
        super::build("k8s", field, value)
    }

    /// `k8s:pod-uid:<uid>`: the selector that ties a pod's entry to that pod alone.
    pub fn pod_uid(uid: &str) -> Result<Selector, SelectorError> {
        k8s("pod-uid", uid)
    }

    /// `k8s:ns:<namespace>`.
    pub fn namespace(namespace: &str) -> Result<Selector, SelectorError> {
        k8s("ns", namespace)
    }

    /// `k8s:sa:<service account>`.
    pub fn service_account(name: &str) -> Result<Selector, SelectorError> {
        k8s("sa", name)
    }

    /// `k8s:node-name:<node>`.
    pub fn node_name(node: &str) -> Result<Selector, SelectorError> {
        k8s("node-name", node)
    }

    /// `k8s:pod-name:<name>`.
    pub fn pod_name(name: &str) -> Result<Selector, SelectorError> {
        k8s("pod-name", name)
    }

    /// `k8s:pod-label:<key>:<value>`.
    pub fn pod_label(key: &str, value: &str) -> Result<Selector, SelectorError> {
        k8s("pod-label", &format!("{key}:{value}"))
    }

    /// `k8s:pod-owner:<kind>:<name>`.
    pub fn pod_owner(kind: &str, name: &str) -> Result<Selector, SelectorError> {
        k8s("pod-owner", &format!("{kind}:{name}"))
    }

    /// `k8s:pod-owner-uid:<kind>:<uid>`.
    pub fn pod_owner_uid(kind: &str, uid: &str) -> Result<Selector, SelectorError> {
        k8s("pod-owner-uid", &format!("{kind}:{uid}"))
    }

    /// `k8s:pod-image:<image>` (a spec image, a status image or an image ID).
    pub fn pod_image(image: &str) -> Result<Selector, SelectorError> {
        k8s("pod-image", image)
    }

    /// `k8s:pod-image-digest:sha256:<hex>`.
    pub fn pod_image_digest(digest: &str) -> Result<Selector, SelectorError> {
        k8s("pod-image-digest", digest)
    }

    /// `k8s:container-name:<name>`.
    pub fn container_name(name: &str) -> Result<Selector, SelectorError> {
        k8s("container-name", name)
    }

    /// `k8s:container-image:<image>`.
    pub fn container_image(image: &str) -> Result<Selector, SelectorError> {
        k8s("container-image", image)
    }

    /// `k8s:container-image-digest:sha256:<hex>`.
    pub fn container_image_digest(digest: &str) -> Result<Selector, SelectorError> {
        k8s("container-image-digest", digest)
    }
}

/// Node selectors of `k8s_psat` attestation.
pub mod node {
    use super::{Selector, SelectorError};

    fn psat(field: &str, value: &str) -> Result<Selector, SelectorError> {
        super::build("k8s_psat", field, value)
    }

    /// `k8s_psat:cluster:<name>`.
    pub fn cluster(name: &str) -> Result<Selector, SelectorError> {
        psat("cluster", name)
    }

    /// `k8s_psat:agent_ns:<namespace>`.
    pub fn agent_namespace(namespace: &str) -> Result<Selector, SelectorError> {
        psat("agent_ns", namespace)
    }

    /// `k8s_psat:agent_sa:<service account>`.
    pub fn agent_service_account(name: &str) -> Result<Selector, SelectorError> {
        psat("agent_sa", name)
    }

    /// `k8s_psat:agent_pod_name:<name>`.
    pub fn agent_pod_name(name: &str) -> Result<Selector, SelectorError> {
        psat("agent_pod_name", name)
    }

    /// `k8s_psat:agent_pod_uid:<uid>`.
    pub fn agent_pod_uid(uid: &str) -> Result<Selector, SelectorError> {
        psat("agent_pod_uid", uid)
    }

    /// `k8s_psat:agent_node_name:<node>`.
    pub fn agent_node_name(node: &str) -> Result<Selector, SelectorError> {
        psat("agent_node_name", node)
    }

    /// `k8s_psat:agent_node_uid:<uid>`.
    pub fn agent_node_uid(uid: &str) -> Result<Selector, SelectorError> {
        psat("agent_node_uid", uid)
    }

    /// `k8s_psat:agent_node_ip:<ip>`.
    pub fn agent_node_ip(ip: &str) -> Result<Selector, SelectorError> {
        psat("agent_node_ip", ip)
    }

    /// `k8s_psat:agent_node_label:<key>:<value>`.
    pub fn agent_node_label(key: &str, value: &str) -> Result<Selector, SelectorError> {
        psat("agent_node_label", &format!("{key}:{value}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_have_the_documented_text() {
        assert_eq!(
            workload::pod_uid("0b1c").unwrap().to_string(),
            "k8s:pod-uid:0b1c"
        );
        assert_eq!(
            workload::pod_label("app", "web").unwrap().to_string(),
            "k8s:pod-label:app:web"
        );
        assert_eq!(
            node::agent_node_label("zone", "a").unwrap().to_string(),
            "k8s_psat:agent_node_label:zone:a"
        );
        assert_eq!(
            node::cluster("prod").unwrap().to_string(),
            "k8s_psat:cluster:prod"
        );
    }

    #[test]
    fn hostile_values_are_refused() {
        assert!(workload::pod_uid("").is_err());
        assert!(node::agent_node_uid("").is_err());
        // An empty label value is a value.
        assert!(workload::pod_label("app", "").is_ok());
        assert!(workload::namespace("a\nb").is_err());
        assert!(workload::pod_image(&"x".repeat(2000)).is_err());
    }
}
