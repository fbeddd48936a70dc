//! The entry sync stream: snapshots, deltas, bundle and policy updates from the server, with
//! reconnect, backoff and re-attestation when the server refuses the agent.

use std::sync::Arc;

use signet_core::Backoff;
use signet_proto::agent::SyncEntriesRequest;
use signet_proto::sync::{SnapshotAssembler, SyncUpdate, parse_sync_message};
use tracing::{debug, info, warn};

use super::{AgentContext, server_backoff};
use crate::error::AgentError;

impl AgentContext {
    /// Runs the entry sync stream forever, reconnecting with backoff.
    pub(crate) async fn run_sync(self: Arc<Self>) {
        let mut backoff = server_backoff();
        loop {
            let mut delay = None;
            match self.sync_once(&mut backoff).await {
                Ok(()) => debug!("sync stream ended; reconnecting"),
                Err(AgentError::Refused(reason)) => {
                    if self.reattest.is_some() || self.agent_svid_expired() {
                        warn!(%reason, "the server refused this agent; attesting again");
                        if let Err(error) = self.attest_again().await {
                            warn!(%error, "re-attestation failed; retrying");
                        }
                    } else {
                        warn!(%reason, "the server refused this agent; it must be attested again (restart it with a new join token)");
                    }
                }
                // The SVID expired while the server was unreachable: the TLS handshake now fails
                // before any refusal can be said.
                Err(error) if self.agent_svid_expired() => {
                    warn!(%error, "entry sync failed with an expired agent SVID; attesting again");
                    if let Err(error) = self.attest_again().await {
                        warn!(%error, "re-attestation failed; retrying");
                    }
                }
                Err(error) => {
                    delay = error.retry_after();
                    warn!(%error, retry_in = ?delay, "entry sync failed; retrying");
                }
            }
            tokio::time::sleep(delay.unwrap_or_else(|| backoff.next_delay())).await;
        }
    }

    async fn sync_once(&self, backoff: &mut Backoff) -> Result<(), AgentError> {
        let mut stream = self
            .client()
            .sync_entries(SyncEntriesRequest {})
            .await
            .map_err(AgentError::from_status)?
            .into_inner();
        let mut snapshot = SnapshotAssembler::default();
        while let Some(message) = stream.message().await.map_err(AgentError::from_status)? {
            backoff.reset();
            let message = parse_sync_message(message, &self.trust_domain)
                .map_err(|e| AgentError::invalid_answer("sync message", e))?;
            if self
                .agent_svid_authority()
                .is_some_and(|own| message.tainted_authorities.contains(&own))
            {
                self.renew_now.notify_one();
            }
            self.cache.set_tainted(message.tainted_authorities);
            self.cache.drop_jwts_of(&message.tainted_jwt_authorities);
            match message.update {
                Some(SyncUpdate::Bundle { bundle, sequence }) => {
                    debug!(sequence, "bundle update");
                    self.apply_bundle(bundle);
                }
                Some(SyncUpdate::FederatedBundles(federated)) => {
                    debug!(trust_domains = federated.len(), "federated bundles");
                    self.cache.set_federated_bundles(federated);
                }
                Some(SyncUpdate::Policies(set, refused)) => {
                    for error in &refused {
                        warn!(%error, "an AuthorizationPolicy from the server could not be read (an unreadable DENY denies everything it targets)");
                    }
                    info!(
                        policies = set.bindings.len(),
                        default = set.default_policy.as_str(),
                        "authorization policies received"
                    );
                    self.policies.send_replace(Some(Arc::new(set)));
                }
                Some(SyncUpdate::Snapshot { entries, last }) => {
                    let whole = snapshot
                        .push(entries, last)
                        .map_err(|e| AgentError::invalid_answer("entry snapshot", e))?;
                    if let Some(whole) = whole {
                        let count = whole.len();
                        self.cache.replace_entries(whole);
                        info!(entries = count, "entry snapshot received");
                    }
                }
                Some(SyncUpdate::Delta { upserted, removed }) => {
                    debug!(
                        upserted = upserted.len(),
                        removed = removed.len(),
                        "entry delta"
                    );
                    self.cache.apply_delta(upserted, &removed);
                }
                None => {}
            }
        }
        Ok(())
    }
}
