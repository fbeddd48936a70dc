//! Kubernetes mode (DESIGN §8): ClusterSPIFFEIDs, ClusterStaticEntries, pods, namespaces and nodes
//! become registration entries, computed incrementally in memory and handed to the server's entry
//! index; status is computed as values for one writer on the leader.
//!
//! The computation (`cluster_spiffe_id`, `static_entry`, `index`, `status`) is pure: no kube client, no
//! tokio. The watch and write loops live in `runtime`.

mod authorization;
mod cluster_spiffe_id;
pub mod index;
mod label_selector;
mod pod_context;
pub mod policy_state;
pub mod runtime;
mod services;
mod static_entry;
mod status;

pub use cluster_spiffe_id::{CompileError, CompiledClusterSpiffeId};
pub use index::{ControllerConfig, EntryChange, Index};
pub use pod_context::ClusterInfo;
