//! This node's pods, fed by a watch (field selector `spec.nodeName=<node>`), indexed by pod UID
//! and container ID, with a change signal attestation can wait on instead of polling.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;

use super::cgroup::ContainerRef;
use super::selectors::container_status;

/// What the cache knows about a container.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// The pod and the container's status are known.
    Container(Arc<Pod>),
    /// The pod is known; the container is not in its status yet.
    PodOnly(Arc<Pod>),
    /// Nothing known.
    Unknown,
}

#[derive(Debug, Default)]
struct Inner {
    by_uid: HashMap<String, Arc<Pod>>,
    by_container: HashMap<String, String>,
}

/// The pod cache.
#[derive(Debug)]
pub struct PodCache {
    inner: RwLock<Inner>,
    changed: watch::Sender<u64>,
}

impl Default for PodCache {
    fn default() -> Self {
        Self {
            inner: RwLock::default(),
            changed: watch::channel(0).0,
        }
    }
}

fn container_ids(pod: &Pod) -> Vec<String> {
    let status = pod.status.as_ref();
    [
        status.and_then(|s| s.container_statuses.as_ref()),
        status.and_then(|s| s.init_container_statuses.as_ref()),
        status.and_then(|s| s.ephemeral_container_statuses.as_ref()),
    ]
    .into_iter()
    .flatten()
    .flatten()
    .filter_map(|s| s.container_id.as_deref())
    .filter_map(|id| id.split_once("://").map(|(_, id)| id.to_owned()))
    .collect()
}

/// The part of a pod the selectors read; a full `Pod` (managed fields, volumes, env, probes...)
/// is many times larger.
pub fn slim(pod: Pod) -> Pod {
    use k8s_openapi::api::core::v1::{Container, ContainerStatus, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let containers = |list: Vec<Container>| -> Vec<Container> {
        list.into_iter()
            .map(|c| Container {
                name: c.name,
                image: c.image,
                ..Container::default()
            })
            .collect()
    };
    let statuses = |list: Option<Vec<ContainerStatus>>| -> Option<Vec<ContainerStatus>> {
        list.map(|l| {
            l.into_iter()
                .map(|s| ContainerStatus {
                    name: s.name,
                    image: s.image,
                    image_id: s.image_id,
                    container_id: s.container_id,
                    ..ContainerStatus::default()
                })
                .collect()
        })
    };
    let meta = pod.metadata;
    let spec = pod.spec.map(|s| PodSpec {
        service_account_name: s.service_account_name,
        node_name: s.node_name,
        containers: containers(s.containers),
        init_containers: s.init_containers.map(containers),
        ..PodSpec::default()
    });
    let status = pod.status.map(|s| PodStatus {
        phase: s.phase,
        container_statuses: statuses(s.container_statuses),
        init_container_statuses: statuses(s.init_container_statuses),
        ephemeral_container_statuses: statuses(s.ephemeral_container_statuses),
        ..PodStatus::default()
    });
    Pod {
        metadata: ObjectMeta {
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            labels: meta.labels,
            owner_references: meta.owner_references,
            ..ObjectMeta::default()
        },
        spec,
        status,
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl PodCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn write(&self, change: impl FnOnce(&mut Inner)) {
        change(&mut self.inner.write());
        self.changed.send_modify(|n| *n += 1);
    }

    fn remove_locked(inner: &mut Inner, uid: &str) {
        if let Some(old) = inner.by_uid.remove(uid) {
            for id in container_ids(&old) {
                inner.by_container.remove(&id);
            }
        }
    }

    /// A pod was added or changed; terminal pods are evicted at once.
    pub fn apply(&self, pod: Pod) {
        let pod = slim(pod);
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        self.write(|inner| {
            Self::remove_locked(inner, &uid);
            if is_terminal(&pod) {
                return;
            }
            for id in container_ids(&pod) {
                inner.by_container.insert(id, uid.clone());
            }
            inner.by_uid.insert(uid, Arc::new(pod));
        });
    }

    /// A pod was deleted.
    pub fn delete(&self, uid: &str) {
        self.write(|inner| Self::remove_locked(inner, uid));
    }

    /// Replaces the content after a (re)list.
    pub fn replace_all(&self, pods: Vec<Pod>) {
        self.write(|inner| {
            *inner = Inner::default();
            for pod in pods.into_iter().filter(|p| !is_terminal(p)).map(slim) {
                let Some(uid) = pod.metadata.uid.clone() else {
                    continue;
                };
                for id in container_ids(&pod) {
                    inner.by_container.insert(id, uid.clone());
                }
                inner.by_uid.insert(uid, Arc::new(pod));
            }
        });
    }

    /// Number of pods held.
    pub fn len(&self) -> usize {
        self.inner.read().by_uid.len()
    }

    /// Whether no pod is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What is known about a container right now.
    pub fn lookup(&self, container: &ContainerRef) -> Lookup {
        let inner = self.inner.read();
        let uid = container
            .pod_uid
            .as_ref()
            .or_else(|| inner.by_container.get(&container.container_id));
        let Some(pod) = uid.and_then(|uid| inner.by_uid.get(uid)) else {
            return Lookup::Unknown;
        };
        if container_status(pod, &container.container_id).is_some() {
            Lookup::Container(pod.clone())
        } else {
            Lookup::PodOnly(pod.clone())
        }
    }

    /// Like [`lookup`](Self::lookup), but waits on the watch (not a poll) up to `bound` for the
    /// container to appear in its pod's status.
    pub async fn wait_for(&self, container: &ContainerRef, bound: Duration) -> Lookup {
        let mut changes = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            changes.mark_unchanged();
            let found = self.lookup(container);
            if matches!(found, Lookup::Container(_)) {
                return found;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.lookup(container),
            }
        }
    }
}
