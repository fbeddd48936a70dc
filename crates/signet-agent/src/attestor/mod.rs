//! Workload attestors: turn a peer into selectors.

pub mod unix;
