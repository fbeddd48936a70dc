//! Renewal of the agent's own SVID at half its remaining lifetime, or at once when the
//! authority that signed it is tainted.

use std::sync::Arc;
use std::time::SystemTime;

use tracing::{info, warn};

use super::{AgentContext, server_backoff};
use crate::agent_svid::renew;
use crate::error::AgentError;

impl AgentContext {
    /// Renews the agent SVID at half its lifetime, forever.
    pub(crate) async fn run_renewal(self: Arc<Self>) {
        let mut backoff = server_backoff();
        loop {
            let (id, not_after) = {
                let svid = self.agent_svid.read();
                (svid.spiffe_id().clone(), svid.not_after())
            };
            // Renew when half of the remaining lifetime is left (at half-life for a fresh SVID),
            // or earlier to keep the availability target.
            let left = not_after
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            let target = self.cache.availability_target();
            let half_left = if target.is_zero() || target >= left {
                left / 2
            } else {
                (left / 2).min(left - target)
            };
            tokio::select! {
                () = tokio::time::sleep(half_left) => {}
                () = self.renew_now.notified() => info!("the agent SVID's authority was tainted; renewing now"),
            }
            let mut client = self.client();
            match renew(&mut client, &id).await {
                Ok(svid) => {
                    super::signer::warn_if_target_unreachable(
                        SystemTime::now(),
                        svid.not_after(),
                        &self.cache,
                    );
                    if let Err(error) = self.install_agent_svid(svid) {
                        warn!(%error, "could not install the renewed agent SVID");
                    } else {
                        info!(agent = %id, "agent SVID renewed");
                        backoff.reset();
                    }
                }
                Err(error) if self.agent_svid_expired() => {
                    warn!(%error, "agent SVID renewal failed and the SVID expired; attesting again");
                    if let Err(error) = self.attest_again().await {
                        warn!(%error, "re-attestation failed; retrying");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
                Err(AgentError::Refused(reason)) if self.reattest.is_some() => {
                    warn!(%reason, "agent SVID renewal refused; attesting again");
                    if let Err(error) = self.attest_again().await {
                        warn!(%error, "re-attestation failed; retrying");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
                Err(error) => {
                    let delay = error.retry_after().unwrap_or_else(|| backoff.next_delay());
                    warn!(%error, retry_in = ?delay, "agent SVID renewal failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}
