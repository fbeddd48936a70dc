//! A Kubernetes client from a kubeconfig flag, `$KUBECONFIG`, `~/.kube/config` or the
//! in-cluster service account, in that order.

use std::path::Path;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The client and the namespace its configuration names.
pub async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<(kube::Client, String)> {
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no Kubernetes configuration found: pass --kubeconfig, set KUBECONFIG, or run in a pod",
        )?,
    };
    let namespace = config.default_namespace.clone();
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
    Ok((client, namespace))
}

/// The host name, the fallback identity for leader election outside a pod.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "signet-server".to_owned())
}
