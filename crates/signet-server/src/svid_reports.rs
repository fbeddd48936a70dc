//! What each agent reports it holds, per signing authority: how `signet ca show` counts the
//! SVIDs still signed by an authority, and why a revoke waits until none is left.
//!
//! Reports expire: an agent that stopped reporting (gone, partitioned) is no longer counted, so
//! a dead node cannot block a revoke forever. An agent reports on every change and at least once a
//! minute.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use signet_ca::{AuthorityKind, Clock};
use signet_spiffe::SpiffeId;

/// A report older than this is ignored: its agent missed two reports in a row.
pub const REPORT_STALE_AFTER: Duration = Duration::from_secs(150);
/// Authorities listed per kind in one report; more is refused (an agent holds SVIDs of at most
/// a handful of authorities at once).
pub const MAX_AUTHORITIES_PER_REPORT: usize = 64;

#[derive(Debug, Clone, Default)]
struct Report {
    x509: HashMap<String, u32>,
    jwt: HashMap<String, u32>,
    received: Option<SystemTime>,
}

/// The SVIDs live with one authority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthorityUse {
    /// SVIDs signed by it.
    pub svids: u64,
    /// Agents holding at least one.
    pub agents: u32,
}

/// The latest report of every agent.
#[derive(Debug)]
pub struct SvidReports {
    reports: Mutex<HashMap<SpiffeId, Report>>,
    clock: Arc<dyn Clock>,
}

impl SvidReports {
    /// No reports yet.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            reports: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// Replaces what `agent` reported before.
    pub fn record(&self, agent: SpiffeId, x509: HashMap<String, u32>, jwt: HashMap<String, u32>) {
        let report = Report {
            x509,
            jwt,
            received: Some(self.clock.now()),
        };
        self.reports.lock().insert(agent, report);
    }

    /// Forgets an evicted or banned agent.
    pub fn forget(&self, agent: &SpiffeId) {
        self.reports.lock().remove(agent);
    }

    fn is_current(&self, report: &Report, now: SystemTime) -> bool {
        report
            .received
            .and_then(|at| now.duration_since(at).ok())
            .is_some_and(|age| age <= REPORT_STALE_AFTER)
    }

    /// Agents whose report is current.
    pub fn reporting_agents(&self) -> u32 {
        let now = self.clock.now();
        let reports = self.reports.lock();
        let current = reports.values().filter(|r| self.is_current(r, now)).count();
        u32::try_from(current).unwrap_or(u32::MAX)
    }

    /// The live SVIDs signed by one authority, over the current reports.
    pub fn usage(&self, kind: AuthorityKind, authority_id: &str) -> AuthorityUse {
        let now = self.clock.now();
        let reports = self.reports.lock();
        let mut usage = AuthorityUse::default();
        for report in reports.values().filter(|r| self.is_current(r, now)) {
            let held = match kind {
                AuthorityKind::X509 => &report.x509,
                AuthorityKind::Jwt => &report.jwt,
            };
            if let Some(&count) = held.get(authority_id)
                && count > 0
            {
                usage.svids += u64::from(count);
                usage.agents += 1;
            }
        }
        usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signet_ca::ManualClock;

    fn agent(name: &str) -> SpiffeId {
        SpiffeId::new(&format!("spiffe://example.org/signet/agent/join/{name}")).unwrap()
    }

    fn held(pairs: &[(&str, u32)]) -> HashMap<String, u32> {
        pairs.iter().map(|(id, n)| ((*id).to_owned(), *n)).collect()
    }

    #[test]
    fn sums_the_current_reports_per_authority_and_kind() {
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000),
        ));
        let reports = SvidReports::new(clock.clone());
        reports.record(
            agent("a"),
            held(&[("old", 3), ("new", 2)]),
            held(&[("k1", 1)]),
        );
        reports.record(agent("b"), held(&[("old", 0), ("new", 5)]), HashMap::new());
        assert_eq!(
            reports.usage(AuthorityKind::X509, "old"),
            AuthorityUse {
                svids: 3,
                agents: 1
            }
        );
        assert_eq!(
            reports.usage(AuthorityKind::X509, "new"),
            AuthorityUse {
                svids: 7,
                agents: 2
            }
        );
        assert_eq!(
            reports.usage(AuthorityKind::Jwt, "k1"),
            AuthorityUse {
                svids: 1,
                agents: 1
            }
        );
        assert_eq!(
            reports.usage(AuthorityKind::Jwt, "old"),
            AuthorityUse::default()
        );
        assert_eq!(reports.reporting_agents(), 2);

        // A newer report replaces the older one.
        reports.record(agent("a"), held(&[("new", 4)]), HashMap::new());
        assert_eq!(
            reports.usage(AuthorityKind::X509, "old"),
            AuthorityUse::default()
        );
        assert_eq!(
            reports.usage(AuthorityKind::Jwt, "k1"),
            AuthorityUse::default()
        );
    }

    #[test]
    fn silent_and_forgotten_agents_stop_counting() {
        let clock = Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000),
        ));
        let reports = SvidReports::new(clock.clone());
        reports.record(agent("a"), held(&[("old", 3)]), HashMap::new());
        reports.record(agent("b"), held(&[("old", 1)]), HashMap::new());
        reports.forget(&agent("b"));
        assert_eq!(reports.usage(AuthorityKind::X509, "old").svids, 3);
        clock.advance(REPORT_STALE_AFTER);
        assert_eq!(reports.usage(AuthorityKind::X509, "old").svids, 3);
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            reports.usage(AuthorityKind::X509, "old"),
            AuthorityUse::default()
        );
        assert_eq!(reports.reporting_agents(), 0);
    }
}
