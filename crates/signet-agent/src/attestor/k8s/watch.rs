//! Feeds the pod cache from a watch of this node's pods only (`spec.nodeName=<node>`): no
//! kubelet `/pods` polling and no `nodes/proxy` permission. A relist replaces the cache at
//! `InitDone`; a watch error keeps what is known.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tracing::{info, warn};

use super::pods::PodCache;

/// Watches `node`'s pods into `cache` until the task is aborted.
pub fn spawn(
    client: kube::Client,
    node: String,
    cache: Arc<PodCache>,
) -> tokio::task::JoinHandle<()> {
    signet_unix::spawn_named("pod-watch", async move {
        let api: Api<Pod> = Api::all(client);
        let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let mut events = watcher::watcher(api, config).default_backoff().boxed();
        let mut listing: Option<Vec<Pod>> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => listing = Some(Vec::new()),
                Ok(Event::InitApply(pod)) => match listing.as_mut() {
                    Some(list) => list.push(pod),
                    None => cache.apply(pod),
                },
                Ok(Event::InitDone) => {
                    if let Some(list) = listing.take() {
                        cache.replace_all(list);
                        info!(%node, pods = cache.len(), "node pods listed");
                    }
                }
                Ok(Event::Apply(pod)) => cache.apply(pod),
                Ok(Event::Delete(pod)) => {
                    if let Some(uid) = pod.metadata.uid.as_deref() {
                        cache.delete(uid);
                    }
                }
                Err(error) => warn!(%error, "pod watch error; keeping the last known pods"),
            }
        }
    })
}
