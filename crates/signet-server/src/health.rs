//! What the server reports on `/livez`, `/readyz` and `/metrics` (served by
//! `signet_unix::serve_probes`, the endpoint every daemon shares).

use std::sync::Arc;

use prometheus_client::registry::Registry;

use crate::index::EntryIndex;
use crate::metrics::ServerMetrics;

/// Ready once the entry set is complete (at once in standalone mode; after the first full list
/// of the cluster in Kubernetes mode).
pub(crate) struct ServerProbes {
    index: Arc<EntryIndex>,
    metrics: Arc<ServerMetrics>,
    registry: Registry,
}

impl ServerProbes {
    pub(crate) fn new(index: Arc<EntryIndex>, metrics: Arc<ServerMetrics>) -> Self {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        Self {
            index,
            metrics,
            registry,
        }
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
        let mut body = String::new();
        Some(prometheus_client::encoding::text::encode(&mut body, &self.registry).map(|()| body))
    }
}
