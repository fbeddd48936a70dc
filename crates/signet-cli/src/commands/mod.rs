//! One module per command family.

pub mod admin;
pub mod daemons;
pub mod quickstart;
pub mod workload;
