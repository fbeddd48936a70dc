//! One module per command family.

pub mod admin;
pub mod ca;
pub mod daemons;
pub mod datastore;
pub mod federation;
pub mod helper;
pub mod kube_client;
pub mod oidc_client;
pub mod policy;
pub mod proxy;
pub mod quickstart;
pub mod workload;
