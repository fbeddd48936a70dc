//! Workload attestors: turn a peer into selectors.

pub mod k8s;
pub mod unix;
