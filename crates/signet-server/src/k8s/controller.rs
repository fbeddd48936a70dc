//! The Kubernetes entry source: the controller (`signet-controller`) runs in the server process
//! and feeds the entry index and the policy store through `sink`. This module and `sink` are the
//! only places the server uses the controller.

use std::sync::Arc;

use crate::error::ServerError;

/// Starts the controller for `options`; its changes go to `index` and `policies`, its status
/// writes only while `leader` is true.
pub(crate) fn start(
    config: &crate::ServerConfig,
    options: &super::KubernetesOptions,
    index: Arc<crate::index::EntryIndex>,
    policies: Arc<crate::policies::PolicyStore>,
    leader: tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, ServerError> {
    let patterns: Vec<&str> = options
        .ignore_namespaces
        .iter()
        .map(String::as_str)
        .collect();
    let mut controller_config = signet_controller::ControllerConfig::new(
        config.trust_domain.clone(),
        &options.cluster_name,
    );
    controller_config.ignore_namespaces = signet_controller::index::anchored(&patterns)
        .map_err(|e| ServerError::InvalidArgument(format!("ignore namespace pattern: {e}")))?;
    controller_config.cluster.cluster_domain = options.cluster_domain.clone();
    controller_config.class_name = options.class_name.clone();
    controller_config.watch_classless = true;
    controller_config.default_x509_ttl = config.default_x509_svid_ttl;
    controller_config.default_jwt_ttl = config.default_jwt_svid_ttl;
    let runtime_config = signet_controller::runtime::RuntimeConfig {
        reporter_instance: options.replica_name.clone(),
        ..signet_controller::runtime::RuntimeConfig::default()
    };
    let client = options.client.clone();
    Ok(vec![signet_unix::spawn_named(
        "controller",
        signet_controller::runtime::run(
            client,
            signet_controller::Index::new(controller_config),
            Arc::new(super::sink::ControllerSink {
                entries: index,
                policies,
            }),
            leader,
            runtime_config,
        ),
    )])
}
