//! Generated gRPC code for Signet's protocols, compiled from `proto/`.

#![allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]

/// The SPIFFE Workload API. The proto has no package, so the generated file is `_.rs`; method
/// paths are `/SpiffeWorkloadAPI/<Method>` as every SPIFFE client expects.
pub mod workload {
    tonic::include_proto!("_");
}

/// Signet's own packages, nested as their proto packages are so cross-references resolve.
pub mod signet {
    pub mod agent {
        pub mod v1 {
            tonic::include_proto!("signet.agent.v1");
        }
    }
    pub mod authz {
        pub mod v1 {
            tonic::include_proto!("signet.authz.v1");
        }
    }
    pub mod admin {
        pub mod v1 {
            tonic::include_proto!("signet.admin.v1");
        }
    }
}

/// The Container Storage Interface v1 (Identity and Node services), package `csi.v1`.
pub mod csi {
    pub mod v1 {
        tonic::include_proto!("csi.v1");
    }
}

pub use signet::admin::v1 as admin;
pub use signet::agent::v1 as agent;
pub use signet::authz::v1 as authz;

pub mod convert;
pub mod policy;
