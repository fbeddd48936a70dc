//! The proxy's counters and its `/metrics`, `/livez` and `/readyz` endpoints.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
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

struct Endpoints {
    registry: Registry,
    source: Arc<WorkloadSource>,
    /// The inbound side enforces policy: not ready until the first one arrived.
    needs_policy: bool,
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
    let app = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render))
        .with_state(Arc::new(Endpoints {
            registry,
            source,
            needs_policy,
        }));
    signet_unix::spawn_named("proxy-metrics", async move {
        signet_unix::serve_http(
            listener,
            app,
            signet_unix::EndpointBounds::PROBES,
            "metrics",
        )
        .await;
    })
}

async fn readyz(State(state): State<Arc<Endpoints>>) -> impl IntoResponse {
    if state.source.identity().is_none() {
        (StatusCode::SERVICE_UNAVAILABLE, "no SVID")
    } else if state.needs_policy && !state.source.authorizer().has_received_policy() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no authorization policy yet",
        )
    } else {
        (StatusCode::OK, "ready")
    }
}

async fn render(State(state): State<Arc<Endpoints>>) -> impl IntoResponse {
    let mut body = String::new();
    if prometheus_client::encoding::text::encode(&mut body, &state.registry).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, String::new()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
