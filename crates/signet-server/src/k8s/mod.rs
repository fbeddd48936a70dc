//! Kubernetes mode of the server (DESIGN §6, §8): CA keys in a Secret, leader election on a
//! Lease, the bundle published to a ConfigMap, PSAT node attestation and the controller feeding
//! the entry index.

pub mod agent_state;
pub mod bundle_configmap;
pub(crate) mod controller;
pub mod default_identity;
mod federation;
pub mod leader;
pub mod secret_store;
mod secret_watch;
pub mod sink;
pub(crate) mod state;
pub(crate) mod upstream_secret;

use std::collections::BTreeSet;
use std::time::Duration;

/// What Kubernetes mode needs besides the common server configuration.
#[derive(Clone)]
pub struct KubernetesOptions {
    /// The API client (in-cluster, or from a kubeconfig).
    pub client: kube::Client,
    /// The server's namespace (Secret, ConfigMap, Lease live there).
    pub namespace: String,
    /// This replica's name for leader election (its pod name).
    pub replica_name: String,
    /// Cluster name in agent IDs, selectors and templates.
    pub cluster_name: String,
    /// `.ClusterDomain` for templates.
    pub cluster_domain: String,
    /// Secret holding the CA keys.
    pub ca_secret: String,
    /// ConfigMap receiving the bundle.
    pub bundle_configmap: String,
    /// ConfigMap holding agent bans and evictions (every replica watches it).
    pub agent_state_configmap: String,
    /// ConfigMap keeping the federated bundles across restarts (the leader writes it).
    pub federated_bundles_configmap: String,
    /// Lease for leader election.
    pub lease_name: String,
    /// Audience agent tokens must carry.
    pub psat_audience: String,
    /// `namespace:serviceaccount` pairs agents may run as.
    pub agent_service_accounts: BTreeSet<String>,
    /// Node label keys reported as agent selectors.
    pub node_label_keys: BTreeSet<String>,
    /// Namespaces whose pods get no entries (anchored regexes).
    pub ignore_namespaces: Vec<String>,
    /// Only resources of this class are reconciled.
    pub class_name: Option<String>,
    /// How long a leader lease lasts.
    pub lease_duration: Duration,
    /// The fallback ClusterSPIFFEID the leader keeps applied, if any.
    pub default_identity: Option<default_identity::DefaultIdentity>,
}

impl std::fmt::Debug for KubernetesOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesOptions")
            .field("namespace", &self.namespace)
            .field("replica_name", &self.replica_name)
            .field("cluster_name", &self.cluster_name)
            .field("ca_secret", &self.ca_secret)
            .field("bundle_configmap", &self.bundle_configmap)
            .field("lease_name", &self.lease_name)
            .finish_non_exhaustive()
    }
}

impl KubernetesOptions {
    /// Defaults for a server in `namespace` of cluster `cluster_name`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        replica_name: &str,
        cluster_name: &str,
    ) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
            replica_name: replica_name.to_owned(),
            cluster_name: cluster_name.to_owned(),
            cluster_domain: "cluster.local".to_owned(),
            ca_secret: "signet-ca".to_owned(),
            bundle_configmap: "signet-bundle".to_owned(),
            agent_state_configmap: "signet-agents".to_owned(),
            federated_bundles_configmap: "signet-federated-bundles".to_owned(),
            lease_name: "signet-server".to_owned(),
            psat_audience: "signet-server".to_owned(),
            agent_service_accounts: BTreeSet::from([format!("{namespace}:signet-agent")]),
            node_label_keys: BTreeSet::new(),
            ignore_namespaces: vec![
                "kube-system".into(),
                "kube-public".into(),
                namespace.to_owned(),
            ],
            class_name: None,
            lease_duration: Duration::from_secs(15),
            default_identity: None,
        }
    }
}
