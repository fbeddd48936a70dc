//! The proxy's counters and its `/metrics`, `/livez` and `/readyz` endpoints.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use signet_tls::authz::AuthzMetrics;
use signet_tls::source::WorkloadSource;

/// Labels of `signet_proxy_connections_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// `mtls`, `plaintext` and `tls_unauthenticated` (PERMISSIVE: no client SVID),
    /// `refused_plaintext` (STRICT), `handshake_failed`, `overloaded` (connection limit),
    /// `denied`, `upstream_failed`.
    pub result: &'static str,
}

/// Every counter of the proxy.
#[derive(Debug, Clone, Default)]
pub struct ProxyMetrics {
    pub connections: Family<ConnectionLabels, Counter>,
    pub authz: AuthzMetrics,
}

impl ProxyMetrics {
    pub(crate) fn connection(&self, direction: &'static str, result: &'static str) {
        self.connections
            .get_or_create(&ConnectionLabels { direction, result })
            .inc();
    }
}

/// Ready once it holds an SVID and, on the inbound side (which enforces policy), a policy.
struct ProxyProbes {
    registry: Registry,
    source: Arc<WorkloadSource>,
    needs_policy: bool,
}

impl signet_unix::Probes for ProxyProbes {
    fn readiness(&self) -> Result<(), &'static str> {
        if self.source.identity().is_none() {
            Err("no SVID")
        } else if self.needs_policy && !self.source.authorizer().has_received_policy() {
            Err("no authorization policy yet")
        } else {
            Ok(())
        }
    }

    fn metrics(&self) -> Option<Result<String, std::fmt::Error>> {
        let mut body = String::new();
        Some(prometheus_client::encoding::text::encode(&mut body, &self.registry).map(|()| body))
    }
}

pub(crate) fn serve(
    listener: tokio::net::TcpListener,
    metrics: ProxyMetrics,
    source: Arc<WorkloadSource>,
    needs_policy: bool,
) -> tokio::task::JoinHandle<()> {
    let mut registry = Registry::default();
    registry.register(
        "signet_proxy_connections",
        "Connections accepted by the proxy, by direction and outcome",
        metrics.connections.clone(),
    );
    metrics.authz.register(&mut registry);
    let probes = Arc::new(ProxyProbes {
        registry,
        source,
        needs_policy,
    });
    signet_unix::serve_probes_on(listener, probes, "proxy-metrics")
}
