//! The signer: pre-signs new entries and rotates due SVIDs in batches of CSRs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use signet_core::RegistrationEntry;
use signet_proto::agent::{SignX509SvidsRequest, SvidRequest};
use signet_spiffe::X509Svid;
use tracing::{debug, warn};

use super::{AgentContext, server_backoff};
use crate::agent_svid::key_and_csr;
use crate::cache::{CachedSvid, SvidCache, meets_availability_target, refresh_time};
use crate::error::AgentError;

/// Set once the agent has warned that SVID lifetimes cannot meet the availability target.
static TARGET_WARNED: AtomicBool = AtomicBool::new(false);

/// Warns once when an SVID lives shorter than the availability target (the entry's or the
/// server's TTL must be raised for the target to hold).
pub(crate) fn warn_if_target_unreachable(
    issued: SystemTime,
    not_after: SystemTime,
    cache: &SvidCache,
) {
    let target = cache.availability_target();
    let life = not_after.duration_since(issued).unwrap_or_default();
    if !meets_availability_target(life, target) && !TARGET_WARNED.swap(true, Ordering::Relaxed) {
        warn!(
            ttl_seconds = life.as_secs(),
            availability_target_seconds = target.as_secs(),
            "an SVID lives shorter than the availability target: an outage that long would expire it; raise the TTL or lower --availability-target"
        );
    }
}

/// Less life than this left on arrival and an SVID is refused as useless.
const MIN_USEFUL_LIFE: Duration = Duration::from_secs(2);

/// Largest CSR batch sent to the server.
const SIGN_BATCH: usize = 500;

impl AgentContext {
    /// Pre-signs new entries and rotates due SVIDs, forever.
    pub(crate) async fn run_signer(self: Arc<Self>) {
        let mut backoff = server_backoff();
        loop {
            let now = SystemTime::now();
            let due = self.cache.due(now);
            if due.is_empty() {
                let wait = self
                    .cache
                    .next_refresh()
                    .and_then(|at| at.duration_since(now).ok())
                    .unwrap_or(Duration::from_secs(3600));
                tokio::select! {
                    () = self.cache.signer_wakeup().notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            match self.sign(due).await {
                Ok(()) => backoff.reset(),
                Err(error) => {
                    let delay = error.retry_after().unwrap_or_else(|| backoff.next_delay());
                    warn!(%error, retry_in = ?delay, "signing failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn sign(&self, due: Vec<Arc<RegistrationEntry>>) -> Result<(), AgentError> {
        for batch in due.chunks(SIGN_BATCH) {
            // Keys and CSRs are made off the async threads: P-256 keygen is CPU work.
            let batch = batch.to_vec();
            let prepared = tokio::task::spawn_blocking(move || {
                batch
                    .into_iter()
                    .map(|entry| {
                        key_and_csr(Some(&entry.spiffe_id)).map(|(key, csr)| (entry, key, csr))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .await??;
            let requests = prepared
                .iter()
                .map(|(entry, _, csr)| SvidRequest {
                    entry_id: entry.id.to_string(),
                    csr: csr.clone(),
                })
                .collect();
            let started = std::time::Instant::now();
            let response = self
                .client()
                .sign_x509_svids(SignX509SvidsRequest { requests })
                .await
                .map_err(AgentError::from_status)?
                .into_inner();
            debug!(
                count = prepared.len(),
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                "signed a batch"
            );
            let now = SystemTime::now();
            let mut arrived_expired = 0usize;
            for ((entry, key, _), result) in prepared.iter().zip(response.results) {
                if !result.error.is_empty() || result.entry_id != entry.id.as_str() {
                    warn!(entry = %entry.id, error = %result.error, "server refused to sign");
                    continue;
                }
                match X509Svid::parse(&result.svid_chain, &key.serialize_der()) {
                    // The server's clock is behind ours by more than the TTL: storing it would
                    // serve nothing and make the entry due again at once (a hot loop).
                    Ok(svid) if svid.not_after() <= now + MIN_USEFUL_LIFE => {
                        arrived_expired += 1;
                    }
                    Ok(svid) if svid.spiffe_id() == &entry.spiffe_id => {
                        warn_if_target_unreachable(now, svid.not_after(), &self.cache);
                        let refresh_at =
                            refresh_time(now, svid.not_after(), self.cache.availability_target());
                        self.cache.store_svid(
                            &entry.id,
                            CachedSvid {
                                svid,
                                authority_id: result.authority_id,
                                refresh_at,
                                revision: entry.revision,
                            },
                        );
                    }
                    Ok(svid) => {
                        warn!(entry = %entry.id, got = %svid.spiffe_id(), "server signed the wrong ID; discarded")
                    }
                    Err(error) => {
                        warn!(entry = %entry.id, %error, "server returned an invalid SVID; discarded")
                    }
                }
            }
            if arrived_expired > 0 {
                return Err(AgentError::invalid_answer(
                    "X509-SVID batch",
                    format!(
                        "{arrived_expired} SVIDs arrived expired or about to expire: is the server's clock behind?"
                    ),
                ));
            }
        }
        Ok(())
    }
}
