//! Agent bans and evictions in Kubernetes mode live in the cluster, not on a replica's disk: one
//! ConfigMap (`--agent-state-configmap`, default `signet-agents`) in the server's namespace that
//! every replica watches, so a ban holds on every replica within the watch latency and survives
//! restarts (DESIGN §1.2: replicas keep no state but the CA keys).
//!
//! One key per fact, so that concurrent writers never overwrite each other (each write is a JSON
//! merge patch of a single key):
//! - `ban.<id hash>`: `{"agent": "<SPIFFE ID>", "at": <unix seconds>}`, until `signet agent unban`;
//! - `evict.<id hash>`: the same; the agent's SVIDs issued up to `at` are refused, so it attests
//!   again (PSAT) and carries on with a new SVID.
//!
//! `<id hash>` is the first 32 hex digits of SHA-256 of the ID (ConfigMap keys allow no `/`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::{Deserialize, Serialize};
use serde_json::json;
use signet_spiffe::SpiffeId;
use tracing::{info, warn};

use crate::agents::{AgentRegistry, SharedAgentState};
use crate::error::ServerError;

const BAN: &str = "ban.";
const EVICT: &str = "evict.";

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    agent: String,
    /// Unix seconds.
    at: u64,
}

fn key(prefix: &str, id: &SpiffeId) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_str().as_bytes());
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{prefix}{hex}")
}

/// The bans and evictions a ConfigMap holds; entries that do not parse are skipped (and logged).
pub fn read_state(config_map: &ConfigMap) -> SharedAgentState {
    let mut state = SharedAgentState::default();
    for (key, value) in config_map.data.iter().flatten() {
        let record = serde_json::from_str::<Record>(value)
            .ok()
            .and_then(|r| Some((SpiffeId::new(&r.agent).ok()?, r.at)));
        let Some((agent, at)) = record else {
            warn!(%key, "unreadable agent state entry; ignored");
            continue;
        };
        if key.starts_with(BAN) {
            state.banned.insert(agent);
        } else if key.starts_with(EVICT) {
            state
                .evicted
                .insert(agent, UNIX_EPOCH + Duration::from_secs(at));
        }
    }
    state
}

/// Reads and writes the agent state object.
#[derive(Clone, Debug)]
pub struct ClusterAgentState {
    api: Api<ConfigMap>,
    name: String,
}

impl ClusterAgentState {
    /// The ConfigMap `name` of `api`'s namespace.
    pub fn new(api: Api<ConfigMap>, name: String) -> Self {
        Self { api, name }
    }

    /// Bans `id` on every replica until unbanned.
    pub async fn ban(&self, id: &SpiffeId) -> Result<(), ServerError> {
        self.set(key(BAN, id), Some(id)).await
    }

    /// Lifts a ban.
    pub async fn unban(&self, id: &SpiffeId) -> Result<(), ServerError> {
        self.set(key(BAN, id), None).await
    }

    /// Refuses every SVID `id` holds now: it must attest again.
    pub async fn evict(&self, id: &SpiffeId) -> Result<(), ServerError> {
        self.set(key(EVICT, id), Some(id)).await
    }

    /// The current state, read from the API server.
    pub async fn read(&self) -> Result<SharedAgentState, ServerError> {
        match self.api.get_opt(&self.name).await {
            Ok(found) => Ok(found.as_ref().map(read_state).unwrap_or_default()),
            Err(error) => Err(unavailable(&self.name, error)),
        }
    }

    /// Writes (`Some`) or removes (`None`) one key, creating the ConfigMap when missing.
    async fn set(&self, key: String, agent: Option<&SpiffeId>) -> Result<(), ServerError> {
        let value = agent.map(|id| {
            let at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            serde_json::to_string(&Record {
                agent: id.to_string(),
                at,
            })
            .unwrap_or_default()
        });
        let patch = json!({"data": {&key: value}});
        for _ in 0..3 {
            match self
                .api
                .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    if value.is_none() {
                        return Ok(());
                    }
                    // Created with server-side apply (a PATCH, so RBAC can limit it to this
                    // name), owning only its label; then the key is patched in.
                    let shell = json!({
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {
                            "name": self.name,
                            "labels": {"app.kubernetes.io/managed-by": "signet"},
                        },
                    });
                    self.api
                        .patch(
                            &self.name,
                            &PatchParams::apply("signet-agent-state"),
                            &Patch::Apply(&shell),
                        )
                        .await
                        .map_err(|error| unavailable(&self.name, error))?;
                }
                Err(error) => return Err(unavailable(&self.name, error)),
            }
        }
        Err(ServerError::Contended(format!(
            "ConfigMap {} kept changing; try again",
            self.name
        )))
    }

    /// Follows the object and hands every change to `registry` (all replicas, leader or not).
    pub fn spawn_watch(self, registry: Arc<AgentRegistry>) -> tokio::task::JoinHandle<()> {
        signet_unix::spawn_named("agent-state-watch", async move {
            let config = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
            let mut events = watcher::watcher(self.api.clone(), config)
                .default_backoff()
                .boxed();
            let mut listing: Option<SharedAgentState> = None;
            while let Some(event) = events.next().await {
                match event {
                    Ok(Event::Init) => listing = Some(SharedAgentState::default()),
                    Ok(Event::InitApply(object))
                        if object.metadata.name.as_deref() == Some(&self.name) =>
                    {
                        listing = Some(read_state(&object));
                    }
                    Ok(Event::InitDone) => {
                        let state = listing.take().unwrap_or_default();
                        info!(
                            banned = state.banned.len(),
                            evicted = state.evicted.len(),
                            configmap = %self.name,
                            "agent bans and evictions loaded"
                        );
                        registry.set_shared(state);
                    }
                    Ok(Event::Apply(object))
                        if object.metadata.name.as_deref() == Some(&self.name) =>
                    {
                        registry.set_shared(read_state(&object));
                    }
                    Ok(Event::Delete(object))
                        if object.metadata.name.as_deref() == Some(&self.name) =>
                    {
                        registry.set_shared(SharedAgentState::default());
                    }
                    Ok(_) => {}
                    // The watcher retries with backoff; the last known state stays in force.
                    Err(error) => {
                        warn!(%error, "watching agent bans failed; keeping the last known state")
                    }
                }
            }
        })
    }
}

fn unavailable(name: &str, error: kube::Error) -> ServerError {
    ServerError::Kubernetes {
        what: format!("agent state ConfigMap {name}"),
        source: error,
    }
}
