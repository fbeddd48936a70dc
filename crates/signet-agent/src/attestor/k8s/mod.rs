//! The Kubernetes workload attestor (DESIGN §7): the caller's cgroup names its pod and container,
//! this node's pod watch supplies the pod, and the selectors follow.

pub mod cgroup;
pub mod pods;
pub mod selectors;
pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use signet_core::SelectorSet;
use tracing::debug;

use self::cgroup::{CgroupError, ContainerRef};
use self::pods::{Lookup, PodCache};

/// Why the k8s attestor failed (the caller gets `Unavailable`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum K8sAttestError {
    /// `/proc/<pid>/cgroup` could not be read (the process exited, or hostPID is missing).
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The cgroup file is inconsistent.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The container's pod is not on this node (or not yet known) after waiting.
    #[error("no pod on this node has container {0}")]
    UnknownPod(String),
}

impl K8sAttestError {
    /// A metric label for the failure kind.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Read { .. } => "cgroup_read",
            Self::Cgroup(_) => "cgroup_invalid",
            Self::UnknownPod(_) => "unknown_pod",
        }
    }
}

/// Configuration of the k8s attestor.
#[derive(Debug, Clone)]
pub struct K8sAttestorConfig {
    /// Where the host's `/proc` is mounted (the agent runs with hostPID).
    pub proc_root: PathBuf,
    /// How long to wait for a container to appear in its pod's status.
    pub container_wait: Duration,
}

impl Default for K8sAttestorConfig {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            container_wait: Duration::from_secs(10),
        }
    }
}

/// The attestor.
#[derive(Debug, Clone)]
pub struct K8sAttestor {
    config: K8sAttestorConfig,
    pods: Arc<PodCache>,
}

impl K8sAttestor {
    /// An attestor over this node's pod cache.
    pub fn new(config: K8sAttestorConfig, pods: Arc<PodCache>) -> Self {
        Self { config, pods }
    }

    /// The container of a process, from its cgroup file.
    pub async fn container_of(&self, pid: i32) -> Result<Option<ContainerRef>, K8sAttestError> {
        let path = self.config.proc_root.join(pid.to_string()).join("cgroup");
        let content =
            tokio::fs::read_to_string(&path)
                .await
                .map_err(|source| K8sAttestError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
        Ok(cgroup::parse(&content)?)
    }

    /// The `k8s:` selectors of process `pid`; empty when it is not in a Kubernetes container.
    pub async fn attest(&self, pid: i32) -> Result<SelectorSet, K8sAttestError> {
        let Some(container) = self.container_of(pid).await? else {
            return Ok(SelectorSet::new());
        };
        match self
            .pods
            .wait_for(&container, self.config.container_wait)
            .await
        {
            Lookup::Container(pod) => {
                let mut set = selectors::pod_selectors(&pod);
                if let Some(status) = selectors::container_status(&pod, &container.container_id) {
                    set.extend(selectors::container_selectors(&pod, status));
                }
                Ok(set)
            }
            Lookup::PodOnly(pod) => {
                debug!(
                    container = %container.container_id,
                    "container not in pod status after waiting; pod-level selectors only"
                );
                Ok(selectors::pod_selectors(&pod))
            }
            Lookup::Unknown => Err(K8sAttestError::UnknownPod(container.container_id)),
        }
    }
}
