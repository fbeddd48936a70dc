//! The agent's `/livez`, `/readyz` (ready once the first entry snapshot arrived) and `/metrics`
//! (`signet_agent_*`).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::cache::SvidCache;

/// Labels of Workload API counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// RPC name.
    pub method: &'static str,
    /// `ok` or the gRPC code name.
    pub result: &'static str,
}

/// Labels of refused Workload API connections.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `total` or `per_uid`: the limit that was reached.
    pub limit: &'static str,
}

/// The agent's metric families.
#[derive(Debug, Default)]
pub struct AgentMetrics {
    /// Workload API calls.
    pub workload_calls: Family<CallLabels, Counter>,
    /// Workload attestation failures (including PID-reuse refusals).
    pub attestation_failures: Counter,
    /// Entries of this node.
    pub entries: Gauge,
    /// Entries whose SVID is ready.
    pub svids: Gauge,
    /// SVIDs held past their expiry (never served; the server could not re-sign them).
    pub svids_expired: Gauge,
    /// Seconds until the first SVID held expires (sampled at scrape).
    pub outage_tolerance: Gauge,
    /// Failed writes of the SVID cache to the data directory.
    pub cache_write_failures: Counter,
    /// Decisions of the `signet.authz.v1.Authorization/Check` service.
    pub authz: signet_tls::authz::AuthzMetrics,
    /// Workload API connections open now (sampled at scrape).
    pub workload_connections: Gauge,
    /// Workload API connections closed at accept by the connection limits.
    pub workload_connections_refused: Family<RefusalLabels, Counter>,
    /// Failed accepts on the Workload API socket (e.g. out of file descriptors).
    pub workload_accept_errors: Counter,
    limiter: OnceLock<Arc<signet_unix::ConnectionLimiter>>,
}

impl AgentMetrics {
    /// Samples open connections from `limiter` at every scrape.
    pub fn watch_connections(&self, limiter: Arc<signet_unix::ConnectionLimiter>) {
        let _ = self.limiter.set(limiter);
    }

    /// Counts one Workload API call.
    pub fn call(&self, method: &'static str, result: Result<(), tonic::Code>) {
        let result = match result {
            Ok(()) => "ok",
            Err(tonic::Code::InvalidArgument) => "invalid_argument",
            Err(tonic::Code::PermissionDenied) => "permission_denied",
            Err(tonic::Code::Unauthenticated) => "unauthenticated",
            Err(tonic::Code::Unavailable) => "unavailable",
            Err(_) => "error",
        };
        self.workload_calls
            .get_or_create(&CallLabels { method, result })
            .inc();
    }
}

/// Ready once the first entry snapshot arrived.
struct AgentProbes {
    cache: Arc<SvidCache>,
    metrics: Arc<AgentMetrics>,
    registry: Registry,
}

impl signet_unix::Probes for AgentProbes {
    fn readiness(&self) -> Result<(), &'static str> {
        if self.cache.is_synced() {
            Ok(())
        } else {
            Err("waiting for the first entry snapshot")
        }
    }

    fn metrics(&self) -> Option<Result<String, std::fmt::Error>> {
        let saturate = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        if let Some(limiter) = self.metrics.limiter.get() {
            self.metrics
                .workload_connections
                .set(saturate(limiter.open()));
        }
        let (entries, svids) = self.cache.counts();
        self.metrics.entries.set(saturate(entries));
        self.metrics.svids.set(saturate(svids));
        self.metrics.svids_expired.set(saturate(
            self.cache.expired_count(std::time::SystemTime::now()),
        ));
        self.metrics.outage_tolerance.set(
            self.cache
                .outage_tolerance(std::time::SystemTime::now())
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        );
        let mut body = String::new();
        Some(prometheus_client::encoding::text::encode(&mut body, &self.registry).map(|()| body))
    }
}

/// Binds the health endpoints.
pub async fn serve(
    address: SocketAddr,
    cache: Arc<SvidCache>,
    metrics: Arc<AgentMetrics>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let mut registry = Registry::default();
    let sub = registry.sub_registry_with_prefix("signet_agent");
    sub.register(
        "workload_calls",
        "Workload API calls",
        metrics.workload_calls.clone(),
    );
    sub.register(
        "attestation_failures",
        "Workload attestation failures",
        metrics.attestation_failures.clone(),
    );
    sub.register("entries", "Entries of this node", metrics.entries.clone());
    sub.register(
        "svids",
        "Entries with a ready X509-SVID",
        metrics.svids.clone(),
    );
    sub.register(
        "svids_expired",
        "X509-SVIDs past their expiry, withheld from workloads until re-signed (is the server reachable?)",
        metrics.svids_expired.clone(),
    );
    sub.register(
        "outage_tolerance_seconds",
        "Seconds until the first X509-SVID held expires: how long a server outage starting now can last before a workload is left without one",
        metrics.outage_tolerance.clone(),
    );
    sub.register(
        "svid_cache_write_failures",
        "Failed writes of the SVID cache to the data directory (disk full?)",
        metrics.cache_write_failures.clone(),
    );
    sub.register(
        "workload_connections",
        "Workload API connections open",
        metrics.workload_connections.clone(),
    );
    sub.register(
        "workload_connections_refused",
        "Workload API connections refused by the connection limits",
        metrics.workload_connections_refused.clone(),
    );
    sub.register(
        "workload_accept_errors",
        "Failed accepts on the Workload API socket",
        metrics.workload_accept_errors.clone(),
    );
    // `signet_authz_*` keeps one name at every enforcement point (agent, proxy, workloads).
    metrics.authz.register(&mut registry);
    let probes = Arc::new(AgentProbes {
        cache,
        metrics,
        registry,
    });
    signet_unix::serve_probes(address, probes, "health-endpoint").await
}
