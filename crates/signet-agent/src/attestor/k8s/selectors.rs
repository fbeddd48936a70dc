//! The `k8s:` selectors of a pod and one of its containers (DESIGN §4, SPIRE-compatible names plus
//! Signet's registry-independent digest selectors).

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use signet_core::k8s_selectors::workload as k8s;
use signet_core::{Selector, SelectorError, SelectorSet};

/// The `sha256:<hex>` digest an `imageID` carries, in any of the runtime's forms
/// (`repo@sha256:…`, `sha256:…`, `docker-pullable://repo@sha256:…`).
pub fn image_digest(image_id: &str) -> Option<String> {
    let start = image_id.rfind("sha256:")?;
    let hex = &image_id[start + 7..];
    let preceded_ok = start == 0 || matches!(image_id.as_bytes()[start - 1], b'@' | b'/');
    (preceded_ok && hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("sha256:{}", hex.to_ascii_lowercase()))
}

fn push(set: &mut SelectorSet, selector: Result<Selector, SelectorError>) {
    // A value that is not a valid selector (control characters, oversize) is skipped: it could
    // never match an entry, and must not fail attestation of everything else.
    if let Ok(selector) = selector {
        set.insert(selector);
    }
}

fn all_statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let status = pod.status.as_ref();
    status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .chain(
            status
                .and_then(|s| s.init_container_statuses.as_ref())
                .into_iter()
                .flatten(),
        )
        .chain(
            status
                .and_then(|s| s.ephemeral_container_statuses.as_ref())
                .into_iter()
                .flatten(),
        )
}

/// Selectors that depend only on the pod.
pub fn pod_selectors(pod: &Pod) -> SelectorSet {
    let mut set = SelectorSet::new();
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    if let Some(ns) = &meta.namespace {
        push(&mut set, k8s::namespace(ns));
    }
    if let Some(sa) = spec.and_then(|s| s.service_account_name.as_ref()) {
        push(&mut set, k8s::service_account(sa));
    }
    if let Some(node) = spec.and_then(|s| s.node_name.as_ref()) {
        push(&mut set, k8s::node_name(node));
    }
    if let Some(uid) = &meta.uid {
        push(&mut set, k8s::pod_uid(uid));
    }
    if let Some(name) = &meta.name {
        push(&mut set, k8s::pod_name(name));
    }
    for (key, value) in meta.labels.iter().flatten() {
        push(&mut set, k8s::pod_label(key, value));
    }
    for owner in meta.owner_references.iter().flatten() {
        push(&mut set, k8s::pod_owner(&owner.kind, &owner.name));
        push(&mut set, k8s::pod_owner_uid(&owner.kind, &owner.uid));
    }
    for container in spec.map(|s| s.containers.iter()).into_iter().flatten() {
        if let Some(image) = &container.image {
            push(&mut set, k8s::pod_image(image));
        }
    }
    for status in all_statuses(pod) {
        push(&mut set, k8s::pod_image(&status.image));
        if !status.image_id.is_empty() {
            push(&mut set, k8s::pod_image(&status.image_id));
        }
        if let Some(digest) = image_digest(&status.image_id) {
            push(&mut set, k8s::pod_image_digest(&digest));
        }
    }
    set
}

/// The status of the container with runtime ID `container_id` (`containerd://<id>` etc.).
pub fn container_status<'p>(pod: &'p Pod, container_id: &str) -> Option<&'p ContainerStatus> {
    all_statuses(pod).find(|s| {
        s.container_id
            .as_deref()
            .and_then(|id| id.split_once("://"))
            .is_some_and(|(_, id)| id == container_id)
    })
}

/// Selectors of one container of the pod.
pub fn container_selectors(pod: &Pod, status: &ContainerStatus) -> SelectorSet {
    let mut set = SelectorSet::new();
    push(&mut set, k8s::container_name(&status.name));
    let spec_image = pod.spec.as_ref().and_then(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .find(|c| c.name == status.name)
            .and_then(|c| c.image.clone())
    });
    if let Some(image) = spec_image {
        push(&mut set, k8s::container_image(&image));
    }
    push(&mut set, k8s::container_image(&status.image));
    if !status.image_id.is_empty() {
        push(&mut set, k8s::container_image(&status.image_id));
    }
    if let Some(digest) = image_digest(&status.image_id) {
        push(&mut set, k8s::container_image_digest(&digest));
    }
    set
}
