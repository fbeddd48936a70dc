//! What the server reports on `/livez`, `/readyz` and `/metrics` (served by
//! `signet_unix::serve_probes`, the endpoint every daemon shares).

use std::sync::Arc;

use prometheus_client::registry::Registry;

use crate::authority::AuthorityService;
use crate::index::EntryIndex;
use crate::metrics::{AuthorityLabels, ServerMetrics};
use crate::svid_reports::SvidReports;

/// Ready once the entry set is complete (at once in standalone mode; after the first full list
/// of the cluster in Kubernetes mode).
pub(crate) struct ServerProbes {
    index: Arc<EntryIndex>,
    metrics: Arc<ServerMetrics>,
    authority: Arc<AuthorityService>,
    reports: Arc<SvidReports>,
    registry: Registry,
}

impl ServerProbes {
    pub(crate) fn new(
        index: Arc<EntryIndex>,
        metrics: Arc<ServerMetrics>,
        authority: Arc<AuthorityService>,
        reports: Arc<SvidReports>,
    ) -> Self {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        registry.sub_registry_with_prefix("signet_server").register(
            "ca_events",
            "CA rotation events applied by this replica (prepared, activated, expired, tainted, revoked)",
            authority.events(),
        );
        Self {
            index,
            metrics,
            authority,
            reports,
            registry,
        }
    }

    /// Rewrites the per-authority gauges: authorities come and go, their series with them.
    fn sample_authorities(&self) {
        self.metrics.authority_expiry.clear();
        self.metrics.authority_svids.clear();
        for info in self.authority.authorities() {
            let labels = AuthorityLabels {
                kind: crate::ca_admin::kind_name(info.kind),
                id: info.id.clone(),
                status: crate::ca_admin::status_name(info.status),
                tainted: if info.tainted { "true" } else { "false" },
            };
            let expiry = crate::unix_seconds(info.not_after);
            self.metrics
                .authority_expiry
                .get_or_create(&labels)
                .set(expiry);
            let svids = self.reports.usage(info.kind, &info.id).svids;
            self.metrics
                .authority_svids
                .get_or_create(&labels)
                .set(i64::try_from(svids).unwrap_or(i64::MAX));
        }
        self.metrics
            .reporting_agents
            .set(i64::from(self.reports.reporting_agents()));
    }
}

impl signet_unix::Probes for ServerProbes {
    fn readiness(&self) -> Result<(), &'static str> {
        if self.index.is_synced() {
            Ok(())
        } else {
            Err("starting")
        }
    }

    fn metrics(&self) -> Option<Result<String, std::fmt::Error>> {
        // Gauges of state are read at scrape time rather than kept up to date on every change.
        let saturate = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics.entries.set(saturate(self.index.len()));
        self.metrics
            .agent_connections
            .set(self.metrics.open_agent_connections());
        self.sample_authorities();
        let mut body = String::new();
        Some(prometheus_client::encoding::text::encode(&mut body, &self.registry).map(|()| body))
    }
}
