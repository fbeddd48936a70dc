//! Workload attestors: turn a peer into selectors.

pub mod binary_hash;
pub mod k8s;
pub mod unix;
