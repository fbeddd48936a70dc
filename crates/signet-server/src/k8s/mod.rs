//! Kubernetes mode of the server (DESIGN §6, §8): CA keys in a Secret, leader election on a
//! Lease, the bundle published to a ConfigMap, PSAT node attestation and the controller feeding
//! the entry index.

pub mod leader;
pub mod secret_store;
