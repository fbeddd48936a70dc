//! Reports to the server what the agent holds per signing authority: the counts of
//! `signet ca show`, and what keeps a revoke from breaking live SVIDs.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use signet_proto::agent::{AuthorityUse, ReportSvidsRequest};
use tracing::{debug, info};

use super::{AgentContext, server_backoff};

/// An unchanged report is re-sent this often; the server stops counting an agent whose report
/// is older than 150 s.
const REPORT_EVERY: Duration = Duration::from_secs(60);
/// Bursts of changes (a taint re-signs every SVID) are reported once per this interval.
const COALESCE: Duration = Duration::from_secs(1);

fn uses(counts: std::collections::BTreeMap<String, u32>) -> Vec<AuthorityUse> {
    counts
        .into_iter()
        .map(|(authority_id, svids)| AuthorityUse {
            authority_id,
            svids,
        })
        .collect()
}

impl AgentContext {
    fn svid_report(&self) -> ReportSvidsRequest {
        let held = self.cache.authority_use(SystemTime::now());
        let mut x509 = held.x509;
        if let Some(own) = self.agent_svid_authority() {
            *x509.entry(own).or_default() += 1;
        }
        ReportSvidsRequest {
            x509: uses(x509),
            jwt: uses(held.jwt),
        }
    }

    /// Sends a report on every change (coalesced) and every minute, forever.
    pub(crate) async fn run_reporter(self: Arc<Self>) {
        let mut changes = self.cache.subscribe();
        let mut backoff = server_backoff();
        let mut sent: Option<(ReportSvidsRequest, Instant)> = None;
        loop {
            let report = self.svid_report();
            let due = sent
                .as_ref()
                .is_none_or(|(last, at)| *last != report || at.elapsed() >= REPORT_EVERY);
            if due {
                match self.client().report_svids(report.clone()).await {
                    Ok(_) => {
                        backoff.reset();
                        sent = Some((report, Instant::now()));
                    }
                    Err(status) if status.code() == tonic::Code::Unimplemented => {
                        info!("the server takes no SVID reports (older version); not reporting");
                        return;
                    }
                    Err(status) => {
                        debug!(%status, "SVID report not delivered; retrying");
                        sent = None;
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                }
            }
            tokio::time::sleep(COALESCE).await;
            tokio::select! {
                _ = changes.changed() => {}
                () = self.report_now.notified() => {}
                () = tokio::time::sleep(REPORT_EVERY) => {}
            }
        }
    }
}
