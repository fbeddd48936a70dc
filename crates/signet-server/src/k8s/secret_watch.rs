//! Follows one Secret by name on every replica, leader or not: how a CA change written by any
//! replica reaches the others within a watch round trip, and how a renewed upstream CA
//! certificate (cert-manager) is noticed.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::task::JoinHandle;
use tracing::warn;

/// Calls `changed` with the Secret when the watch starts and on every change of it. Deletions
/// are ignored: what was loaded stays in force (a deleted CA Secret is an operator error the
/// leader reports when it next writes).
pub(crate) fn spawn(
    api: Api<Secret>,
    name: String,
    task: &'static str,
    mut changed: impl FnMut(&Secret) + Send + 'static,
) -> JoinHandle<()> {
    signet_unix::spawn_named(task, async move {
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut events = watcher::watcher(api, config).default_backoff().boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Apply(secret) | Event::InitApply(secret))
                    if secret.metadata.name.as_deref() == Some(name.as_str()) =>
                {
                    changed(&secret);
                }
                Ok(_) => {}
                Err(error) => warn!(%error, secret = %name, "watching the Secret failed; retrying"),
            }
        }
    })
}
